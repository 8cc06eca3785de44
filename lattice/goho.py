"""A Grow-Only Hash Object replica: a Merkle-CRDT over a block store.

The model is go-ds-crdt and the Merkle-CRDTs paper: every update is a signed
delta block naming its parents (the heads its author had), so the object's
history is a DAG of content-addressed blocks.  The state is the union of the
ops of all deltas (see :mod:`lattice.state`); merging two replicas is the union
of their DAGs, which is commutative, associative and idempotent by
construction.

Invariants kept by :class:`Replica`:

* The applied set is downward closed: a delta is applied only after all its
  parents, so ``heads`` always names a complete history that peers can fetch
  from us.  Deltas that arrive before their parents wait in ``pending``; they
  may arrive in any order (Kahn's algorithm).
* Every applied delta's height is exactly one more than its highest
  parent's (1 with no parents), checked when its parents are known, so no
  author can make a ``put`` win by claiming a height it does not have.  A
  delta that breaks the rule is refused, and so is every delta built on it.
* Blocks are written to the store *before* they are applied, and the caller
  persists ``heads`` *after* (go-ds-crdt writes heads last).  A crash between
  the two leaves extra blocks in the store, which the next replay or fetch
  re-applies idempotently; it never leaves heads naming a missing block.

This module does no I/O beyond the synchronous block store it is given.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import records
from .cid import CID
from .errors import BadHeight, BadRecord, BlockNotFound, TooManyPending
from .records import OP_ADD, Delta, Snapshot
from .signing import Signer
from .snapshots import cover_heights, snapshot_blocks
from .state import Put, State, encode_value


class BlockSource(Protocol):
    """What a replica needs of a block store."""

    def put(self, cid: CID, data: bytes) -> None: ...
    def get(self, cid: CID) -> bytes: ...
    def has(self, cid: CID) -> bool: ...


@dataclass(frozen=True)
class ReplicaOptions:
    """Options of one replica.

    Attributes:
        verify_signatures: Check every received delta's Ed25519 signature
            (default True; only benchmarks of trusted replay turn it off).
        max_pending: Most deltas held while waiting for parents (default
            1,000,000); beyond it new out-of-order deltas are refused, so a peer
            cannot grow our memory without bound.
        max_pending_per_author: Most of those by one author (default
            100,000), so one member cannot take the whole allowance.  A
            fresh replica walking a longer history of one author needs a
            snapshot (or a larger cap).
        accept_author: Membership hook: called with a delta author's public
            key, returns False to refuse the delta (default: accept everyone).
        check_delta: The object's writing rules: called with every received
            delta before it is stored, raises ``BadRecord`` to refuse it
            (e.g. ``lattice.queue.check_delta``; default: none).  It must
            read only the delta, so every peer refuses the same deltas.
    """

    verify_signatures: bool = True
    max_pending: int = 1_000_000
    max_pending_per_author: int = 100_000
    accept_author: Callable[[bytes], bool] | None = None
    check_delta: Callable[[Delta], None] | None = None

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_pending_per_author < 1:
            raise ValueError("max_pending and max_pending_per_author must be >= 1")


@dataclass(frozen=True, slots=True)
class Change:
    """What one applied delta changed: new set elements and register winners."""

    delta: Delta
    adds: list[tuple[str, bytes]]
    puts: list[str]


@dataclass(slots=True)
class Receipt:
    """The outcome of offering one block to a replica."""

    applied: list[Delta] = field(default_factory=list)
    missing: list[CID] = field(default_factory=list)
    duplicate: bool = False
    #: Deltas refused for a wrong height once their parents applied (with the
    #: pending deltas built on them): a peer's fault, for the caller to count.
    refused: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaStatistics:
    applied: int
    pending: int
    heads: int
    height: int
    elements: int
    rejected: int = 0  # deltas refused for a wrong height, or built on one


Observer = Callable[[Change], None]


class Cursor:
    """A reader's position in a replica's change feed (see :meth:`Replica.cursor`).

    Views pull the changes they have not seen yet with :meth:`pull`, when they
    are read; nothing calls into them.  The replica keeps a change only while
    some open cursor has not pulled it; a cursor that is closed or garbage
    collected stops holding anything.
    """

    __slots__ = ("_replica", "_seq", "__weakref__")

    def __init__(self, replica: "Replica", seq: int) -> None:
        self._replica: Replica | None = replica
        self._seq = seq

    @property
    def seq(self) -> int:
        """Changes this cursor has consumed (its position in the feed)."""
        return self._seq

    def pending(self) -> bool:
        """Whether :meth:`pull` would return something."""
        rep = self._replica
        return rep is not None and rep._feed_end() != self._seq

    def pull(self) -> list[Change]:
        """The changes applied since the last pull, oldest first (empty when closed)."""
        rep = self._replica
        if rep is None:
            return []
        with rep._feed_lock:
            start, feed = rep._feed
            out = feed[self._seq - start:]
            self._seq = start + len(feed)
        if out:
            rep._trim()
        return out

    def close(self) -> None:
        """Stop reading: the replica no longer keeps changes for this cursor."""
        rep, self._replica = self._replica, None
        if rep is not None:
            rep._cursors.discard(self)
            rep._trim()


class Replica:
    """One replica of one GOHO, named by its genesis CID.

    Build it with :meth:`empty` (a new or fresh replica) or :meth:`open` (replay
    from persisted heads).
    """

    def __init__(self, genesis: CID, store: BlockSource, options: ReplicaOptions | None = None) -> None:
        self.genesis = genesis
        self.store = store
        self.options = options or ReplicaOptions()
        self.state = State()
        self._applied: set[bytes] = set()
        self._heights: dict[bytes, int] = {}
        # Deltas refused for a wrong height (or built on one): known, so that
        # a re-announce does not fetch them again.  Each cost its author a
        # signed block, and only members' deltas get this far.
        self._refused: set[bytes] = set()
        self._heads: set[CID] = set()
        self._pending: dict[CID, tuple[Delta, int]] = {}
        self._pending_by: dict[bytes, int] = {}  # pending deltas per author
        self._waiting: dict[CID, list[CID]] = {}
        self._observers: list[Observer] = []
        # The change feed: (sequence number of feed[0], feed), holding only
        # what some open cursor has not pulled yet.  The lock makes appends
        # and pulls safe when a replica is mutated off the reader's thread
        # (a driver applying deltas in a worker thread).
        self._feed: tuple[int, list[Change]] = (0, [])
        self._feed_lock = threading.Lock()
        self._cursors: weakref.WeakSet[Cursor] = weakref.WeakSet()
        self.base: CID | None = None  # snapshot this replica was bootstrapped from
        self._version = 0

    # -- construction ---------------------------------------------------------

    @classmethod
    def empty(cls, genesis: CID, store: BlockSource, options: ReplicaOptions | None = None) -> "Replica":
        return cls(genesis, store, options)

    @classmethod
    def open(
        cls,
        genesis: CID,
        store: BlockSource,
        heads: Iterable[CID],
        options: ReplicaOptions | None = None,
        *,
        base: CID | None = None,
    ) -> "Replica":
        """Rebuild a replica from blocks in ``store`` reachable from ``heads``.

        ``base`` is the snapshot the replica was bootstrapped from, if any; its
        covered history need not be in the store.  Blocks that turn out to be
        missing leave their descendants pending (see :meth:`missing`).
        """
        rep = cls(genesis, store, options)
        if base is not None:
            snap = records.snapshot_from_untrusted(base, store.get(base))
            parts = [records.part_from_untrusted(c, store.get(c)) for c in snap.parts]
            rep.install_snapshot(snap, parts)
        rep.replay(heads)
        return rep

    def replay(self, heads: Iterable[CID]) -> list[CID]:
        """Apply every stored delta reachable from ``heads``; return missing CIDs."""
        stack = [h for h in heads]
        seen: set[CID] = set()
        found: list[Delta] = []
        missing: list[CID] = []
        while stack:
            cid = stack.pop()
            if cid in seen or cid.raw in self._applied:
                continue
            seen.add(cid)
            try:
                data = self.store.get(cid)
            except BlockNotFound:
                missing.append(cid)
                continue
            d = records.delta_from_trusted(cid, data)
            found.append(Delta(d.cid, d.genesis, d.parents, d.height, [], d.author))
            stack.extend(d.parents)
        for d in found:
            self._offer(d)
        return missing

    # -- the change feed -----------------------------------------------------------

    def cursor(self) -> Cursor:
        """A reader positioned at the current end of the change feed.

        This is how views follow a replica: they hold a cursor and pull the
        changes when they are read, so building a view registers nothing and
        dropping it (or :meth:`Cursor.close`) frees what the feed kept for it.
        """
        with self._feed_lock:
            cur = Cursor(self, self._feed_end())
            self._cursors.add(cur)
        return cur

    def _feed_end(self) -> int:
        start, feed = self._feed
        return start + len(feed)

    def _trim(self) -> None:
        with self._feed_lock:
            start, feed = self._feed
            if not feed:
                return
            low = min((c._seq for c in self._cursors), default=start + len(feed))
            if low > start:
                self._feed = (low, feed[low - start:])

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(change)`` after every applied delta (synchronously).

        For observers outside the components (tests, tools): components
        pull changes with :meth:`cursor` (views, the mesh core) or wait
        through ``meshd.store.objects.ObjectHost`` (tasks).  Returns a
        function that removes the observer.
        """
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    # -- queries ---------------------------------------------------------------

    @property
    def heads(self) -> list[CID]:
        return sorted(self._heads)

    @property
    def height(self) -> int:
        return max((self._heights.get(h.raw, 0) for h in self._heads), default=0)

    @property
    def version(self) -> int:
        """Count of applied deltas; changes whenever the state may have changed."""
        return self._version

    def is_known(self, cid: CID) -> bool:
        return cid.raw in self._applied or cid in self._pending or cid.raw in self._refused

    def is_awaited(self, cid: CID) -> bool:
        """True when a pending delta waits for ``cid`` and nobody offered it yet."""
        return cid in self._waiting and cid not in self._pending and cid.raw not in self._applied

    def missing(self) -> list[CID]:
        """Parents that pending deltas wait for and that nobody has offered yet."""
        return sorted(c for c in self._waiting if c not in self._pending and c.raw not in self._applied)

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            len(self._applied), len(self._pending), len(self._heads), self.height,
            self.state.statistics().elements, len(self._refused),
        )

    # -- receiving ---------------------------------------------------------------

    def receive_untrusted(self, cid: CID, data: bytes) -> Receipt:
        """Offer a delta block from a peer.

        It is verified (hash, encoding, signature, genesis, membership), stored,
        and applied as soon as all its parents are applied.

        Raises:
            BadInput: the block is invalid; nothing was stored.
        """
        if self.is_known(cid):
            return Receipt(duplicate=True)
        delta = records.delta_from_untrusted(cid, data, verify=self.options.verify_signatures)
        self._admit(delta)
        if any(p.raw in self._refused for p in delta.parents):
            self._refuse(cid)
            raise BadHeight("delta is built on a refused delta")
        if all(p.raw in self._applied for p in delta.parents) and not self._height_ok(delta):
            # Refused before anything is stored, with what already waits on it.
            self._refuse(cid)
            raise BadHeight(f"delta height {delta.height} is not 1 + its highest parent's")
        if delta.inline:
            # Its small linked blocks came inline (v2): stored now, so nobody
            # fetches them again, in one transaction where the store has one.
            blocks = delta.inline_blocks()
            put_many = getattr(self.store, "put_many", None)
            if put_many is not None:
                put_many(blocks)
            else:
                for b_cid, b in blocks:
                    self.store.put(b_cid, b)
            delta = Delta(delta.cid, delta.genesis, delta.parents, delta.height, delta.ops, delta.author)
        self.store.put(cid, data)
        return self._offer(delta)

    def _admit(self, delta: Delta) -> None:
        if delta.genesis != self.genesis:
            raise BadRecord(f"delta belongs to {delta.genesis}, not {self.genesis}")
        accept = self.options.accept_author
        if accept is not None and not accept(delta.author):
            raise BadRecord("delta author is not a member of this mesh")
        if self.options.check_delta is not None:
            self.options.check_delta(delta)  # the object's own writing rules (raises BadRecord)
        if all(p.raw in self._applied for p in delta.parents):
            return  # applies at once: holds nothing
        if len(self._pending) >= self.options.max_pending:
            raise TooManyPending("too many pending deltas")
        if self._pending_by.get(delta.author, 0) >= self.options.max_pending_per_author:
            raise TooManyPending("too many pending deltas by this author")

    def _offer(self, delta: Delta) -> Receipt:
        receipt = Receipt()
        missing = [p for p in delta.parents if p.raw not in self._applied]
        if missing:
            # Hold only the DAG links while waiting: the ops are re-read from
            # the store on apply.  A top-down walk keeps the whole fetched
            # history pending until the oldest block arrives, so holding
            # decoded ops here would cost memory proportional to the object.
            light = Delta(delta.cid, delta.genesis, delta.parents, delta.height, [], delta.author)
            self._pending[delta.cid] = (light, len(missing))
            self._pending_by[delta.author] = self._pending_by.get(delta.author, 0) + 1
            for p in missing:
                self._waiting.setdefault(p, []).append(delta.cid)
                if p not in self._pending:
                    receipt.missing.append(p)
            return receipt
        ready = [delta]
        while ready:
            d = ready.pop()
            if not self._height_ok(d):
                receipt.refused += self._refuse(d.cid)
                continue
            self._apply(d)
            receipt.applied.append(d)
            for child in self._waiting.pop(d.cid, ()):
                cd, n = self._pending[child]
                if n == 1:
                    self._unpend(child)
                    ready.append(cd)
                else:
                    self._pending[child] = (cd, n - 1)
        return receipt

    def _height_ok(self, d: Delta) -> bool:
        """Whether ``d.height`` is 1 + its highest parent's (parents applied)."""
        return d.height == 1 + max((self._heights[p.raw] for p in d.parents), default=0)

    def _unpend(self, cid: CID) -> None:
        held = self._pending.pop(cid, None)
        if held is not None:
            a = held[0].author
            n = self._pending_by[a] - 1
            if n:
                self._pending_by[a] = n
            else:
                del self._pending_by[a]

    def _refuse(self, cid: CID) -> int:
        # Drop a delta whose parents are applied but whose height is wrong,
        # with every pending delta that waits on it: none can ever apply.
        stack = [cid]
        n = 0
        while stack:
            c = stack.pop()
            self._refused.add(c.raw)
            self._unpend(c)
            stack.extend(self._waiting.pop(c, ()))
            n += 1
        return n

    def _apply(self, d: Delta) -> None:
        if not d.ops:
            d = records.delta_from_trusted(d.cid, self.store.get(d.cid))
        state = self.state
        adds: list[tuple[str, bytes]] = []
        puts: list[str] = []
        raw = d.cid.raw
        for i, (op, key, value) in enumerate(d.ops):
            enc = encode_value(value)
            if op == OP_ADD:
                if state.add_encoded(key, enc):
                    adds.append((key, enc))
            elif state.put_encoded(key, Put(d.height, raw, i, enc)):
                puts.append(key)
        self._applied.add(raw)
        self._heights[raw] = d.height
        for p in d.parents:
            self._heads.discard(p)
        self._heads.add(d.cid)
        self._version += 1
        change = Change(d, adds, puts)
        with self._feed_lock:
            start, feed = self._feed
            if self._cursors:
                feed.append(change)
            else:  # nobody reads: only the sequence number advances
                self._feed = (start + len(feed) + 1, [])
        for obs in list(self._observers):
            obs(change)

    # -- local updates -------------------------------------------------------------

    def update(self, ops: list[list[Any]], signer: Signer,
               blocks: Iterable[tuple[CID, bytes]] = ()) -> tuple[CID, bytes]:
        """Create, store and apply a delta with ``ops`` on top of the current heads.

        Returns the delta block, which the caller announces.  Ops are
        ``[["add", key, value], ["put", key, value], ...]``.  A driver that
        keeps store I/O off its event loop does the same in three steps:
        :meth:`tip` and :func:`lattice.records.sign_delta` (pure), the store
        write (anywhere), then :meth:`apply_local`.
        """
        parents, height = self.tip()
        linked = dict(blocks)
        for b_cid, b in linked.items():
            self.store.put(b_cid, b)
        delta, data = records.signed_delta(signer, self.genesis, parents, height, ops,
                                           records.choose_inline(ops, linked, rest=True))
        self.store.put(delta.cid, data)
        self.apply_local(delta.cid, data, delta)
        return delta.cid, data

    def tip(self) -> tuple[list[CID], int]:
        """The parents and height of the next local delta: the heads, one above the highest."""
        parents = sorted(self._heads)
        return parents, 1 + max((self._heights.get(p.raw, 0) for p in parents), default=0)

    def apply_local(self, cid: CID, data: bytes, delta: Delta | None = None) -> None:
        """Apply a delta this node signed, whose block is already in the store.

        Its parents are applied (they were heads when it was made), so it is
        applied at once even if other deltas were applied meanwhile: the DAG
        then simply forks, and the next update joins it.  ``delta`` is the
        block decoded, when the writer has it (:func:`lattice.records.signed_delta`).
        """
        self._offer(delta if delta is not None else records.delta_from_trusted(cid, data))

    # -- snapshots -------------------------------------------------------------------

    def make_snapshot(self, signer: Signer, *, part_entries: int = 20_000) -> list[tuple[CID, bytes]]:
        """Blocks of a signed snapshot of the current state; the last is the root.

        The blocks are also written to the store.
        """
        blocks = snapshot_blocks(self.state, signer, self.genesis, self.heads, self.height,
                                 part_entries=part_entries)
        for c, d in blocks:
            self.store.put(c, d)
        return blocks

    def install_snapshot(self, snap: Snapshot, parts: list[dict[str, Any]],
                         covers: Iterable[Delta] | None = None) -> None:
        """Adopt a verified snapshot as the base of this replica's history.

        Ops are unions, so installing a snapshot into a non-empty replica is
        safe: the state only grows.  The history under ``snap.covers`` is
        marked applied without being fetched: whoever calls this trusts the
        snapshot's signer (HPCP takes only configured signers).

        Args:
            covers: The verified head deltas the snapshot claims to cover
                (one per ``snap.covers``).  Their heights become the heights
                later deltas are checked against.  Without them (a replica
                reopened from its own store), covered heads are read from the
                store, or take the snapshot's height.

        Raises:
            BadRecord: the snapshot is of another object, ``covers`` do not
                match ``snap.covers`` or ``snap.height``, or a part holds a
                write above the snapshot's height.
        """
        if snap.genesis != self.genesis:
            raise BadRecord("snapshot belongs to another object")
        heights = cover_heights(snap, covers, self.genesis, self.store)
        for part in parts:
            if any(h > snap.height for _, h, _, _, _ in part["puts"]):
                raise BadRecord("snapshot part holds a write above the snapshot's height")
        for part in parts:
            for key, values in part["adds"]:
                for v in values:
                    self.state.add_encoded(key, encode_value(v))
            for key, h, delta, i, value in part["puts"]:
                self.state.put_encoded(key, Put(h, delta.raw, i, encode_value(value)))
        for c in snap.covers:
            if c.raw not in self._applied:
                self._applied.add(c.raw)
                self._heights[c.raw] = heights[c]
                self._heads.add(c)
        # A covered delta may be a parent of a current head: drop it from heads.
        self._heads = {h for h in self._heads if not self._is_parent_of_head(h)}
        self.base = snap.cid
        self._version += 1
        for c in snap.covers:
            for child in self._waiting.pop(c, ()):
                cd, n = self._pending[child]
                if n == 1:
                    self._unpend(child)
                    self._offer(cd)
                else:
                    self._pending[child] = (cd, n - 1)

    def _is_parent_of_head(self, cid: CID) -> bool:
        for h in self._heads:
            if h == cid:
                continue
            try:
                d = records.delta_from_trusted(h, self.store.get(h))
            except BlockNotFound:
                continue
            if cid in d.parents:
                return True
        return False
