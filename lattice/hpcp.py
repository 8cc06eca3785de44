"""HPCP, the Hash Pointer Collaboration Protocol, as pure sync logic.

Nothing here does I/O.  :class:`Syncer` takes messages (bytes) and the current
time, and returns the messages to send; the daemon moves those bytes over
libp2p, and the tests move them over a simulated lossy network.  This is the
automerge ``sync`` shape: ``receive`` then ``generate``.

Messages (all DAG-CBOR maps with a type tag and version; encoded and decoded
in :mod:`lattice.hpcp_messages`, re-exported here):

* ``hpcp/announce`` ``{t, v, g, heads, snap, seq, a, s}`` — signed: "object
  ``g`` is at ``heads`` for me".  ``seq`` grows strictly per author (a
  millisecond clock, so it survives restarts); an announcement whose ``seq``
  is not above the last one seen from that author is a replay and refused.
  This is Computes' ``<origin>:<root>``.
* ``hpcp/query`` ``{t, v, g}`` — "what are your heads of ``g``?"; answered by
  an announcement.  This is Computes' ``?<origin>``.
* ``hpcp/want`` ``{t, v, cids}`` — ask one peer for blocks.
* ``hpcp/blocks`` ``{t, v, blocks, missing}`` — the answer: ``[[cid, bytes],
  ...]`` plus the CIDs the peer does not have.

What the transport must provide: best-effort delivery.  Messages may be
dropped, duplicated, delayed or reordered; wants that get no answer time out
(:meth:`Syncer.tick`) and are asked again, from another provider if one is
known, and periodic re-announcement (anti-entropy) repairs lost
announcements.  Which peer is asked for which block, in-flight wants, retries
and backoff belong to :class:`lattice.fetcher.Fetcher`, which may be shared
with the node's other block fetches.

A two-peer loop, runnable as is::

    from lattice import hpcp, goho, records, blockstore, signing
    g, _ = records.make_genesis("demo", "x")
    a, b = (goho.Replica.empty(g, blockstore.MemoryBlockStore()) for _ in "ab")
    sa, sb = signing.Signer.generate(), signing.Signer.generate()
    a.update([["add", "k", 1]], sa)
    ya, yb = hpcp.Syncer(a, sa), hpcp.Syncer(b, sb)
    inbox = [("a", None, ya.announce(0.0))]
    while inbox:
        src, dst, data = inbox.pop(0)
        for target, peer in (("a", ya), ("b", yb)):
            if target != src and dst in (None, target):
                inbox += [(target, o.to, o.data) for o in peer.receive_untrusted(src, data, 0.0)]
    assert b.state.count("k") == 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import records
from .cid import CID
from .errors import BadInput, BadMessage, BadRecord, BlockNotFound
from .fetcher import Ask, Fetcher, FetchOptions
from .goho import Replica
from .hpcp_messages import (  # noqa: F401 - re-exported: callers write hpcp.encode_want etc.
    MAX_HAVE,
    MAX_MESSAGE,
    MAX_PUSH_BLOCKS,
    MAX_PUSH_BYTES,
    decode_message_untrusted,
    encode_announce,
    encode_blocks,
    encode_query,
    encode_want,
    peek_genesis_untrusted,
    signed_announce_untrusted,
    verify_announce,
)
from .hpcp_serve import (  # serve_want re-exported: callers write hpcp.serve_want
    _delta_links,
    serve_want,
)
from .records import Delta
from .signing import Signer


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: ``to`` a peer id, or to every peer when None."""

    to: str | None
    data: bytes


@dataclass(frozen=True)
class SyncOptions:
    """Options of the sync logic.

    Attributes:
        batch: Most CIDs in one want (default 256).
        max_inflight: Most wants outstanding at once, over all peers (8).
        want_timeout_s: Seconds before an unanswered want is retried (5.0).
        max_blocks_bytes: Most block bytes served in one answer (4 MiB).
        max_future_s: An announcement ``seq`` more than this far ahead of our
            clock is refused, so one forged message cannot freeze an author out
            (default 600).
        snapshot_signers: Ed25519 public keys whose snapshots a fresh replica
            may install, besides the syncer's own signer (default: none
            other).  A snapshot replaces history with its signer's word, so
            anyone else's is refused (``untrusted_snapshot``) and the replica
            syncs from deltas.
        snapshot_timeout_s: A snapshot whose root, parts and covered heads are
            not all fetched within this is abandoned (``snapshot_timeout``)
            and the replica syncs from deltas (default 30 s).
    """

    batch: int = 256
    max_inflight: int = 8
    want_timeout_s: float = 5.0
    max_blocks_bytes: int = 4 * 1024 * 1024
    max_future_s: float = 600.0
    snapshot_signers: frozenset[bytes] = frozenset()
    snapshot_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_inflight < 1:
            raise ValueError("batch and max_inflight must be >= 1")
        if self.want_timeout_s <= 0 or self.snapshot_timeout_s <= 0:
            raise ValueError("want_timeout_s and snapshot_timeout_s must be > 0")
        if not isinstance(self.snapshot_signers, frozenset) or any(
                type(k) is not bytes or len(k) != 32 for k in self.snapshot_signers):
            raise ValueError("snapshot_signers must be a frozenset of 32-byte Ed25519 public keys")


@dataclass(slots=True)
class SyncStatistics:
    announces_in: int = 0
    announces_out: int = 0
    queries_in: int = 0
    wants_out: int = 0
    wants_in: int = 0
    blocks_in: int = 0
    blocks_out: int = 0
    deltas_applied: int = 0
    pushed_in: int = 0  #: head blocks taken from announcements' ``push``
    rejected: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0


class Syncer:
    """The HPCP state of one local replica towards all peers.

    Which peer to ask for which delta, in-flight wants, timeouts and backoff
    are the :class:`~lattice.fetcher.Fetcher`'s; the syncer decides *what* to
    want (announced heads, missing parents, a snapshot and its parts) and
    applies what arrives.

    Args:
        replica: The local replica.
        signer: Signs our announcements.
        options: See :class:`SyncOptions`.
        fetcher: A fetcher shared with other consumers (one backoff table and
            in-flight limit per node); its ``has`` must be true for this
            replica's known deltas and for stored snapshot blocks (the node's
            block store is: the replica stores every delta it accepts).  By
            default the syncer builds its own from ``options``.
    """

    def __init__(
        self, replica: Replica, signer: Signer, options: SyncOptions | None = None, *, fetcher: Fetcher | None = None
    ) -> None:
        self.replica = replica
        self.signer = signer
        self.options = options or SyncOptions()
        o = self.options
        # The backoff after n unreachable tries is 0.25 * 2**n s, capped at the want timeout.
        self.fetcher = fetcher or Fetcher(self._has, FetchOptions(
            batch=o.batch, max_inflight=o.max_inflight, want_timeout_s=o.want_timeout_s,
            backoff_base_s=min(0.5, o.want_timeout_s), backoff_cap_s=o.want_timeout_s,
        ))
        self._owner = replica.genesis  # our CIDs in a shared fetcher
        self._seq = 0
        self._last_seq: dict[bytes, int] = {}
        self._peer_heads: dict[str, tuple[CID, ...]] = {}
        self._snap: CID | None = None  # snapshot being fetched
        self._snap_obj: records.Snapshot | None = None
        self._snap_parts: dict[CID, dict[str, Any] | None] = {}
        self._snap_covers: dict[CID, Delta | None] = {}  # the heads it claims, verified
        self._snap_deadline = 0.0
        self._snap_peer: str | None = None  # who announced it
        self._snap_refused: set[CID] = set()  # snapshots abandoned or refused: never again
        self._snap_blocks: set[CID] = set()  # snapshot blocks taken (not deltas, so not "known")
        self._deferred_heads: dict[CID, set[str]] = {}
        self._announced: frozenset[CID] = frozenset()  # heads of our last announcement
        self.stats = SyncStatistics()

    def _has(self, cid: CID) -> bool:
        return self.replica.is_known(cid) or cid in self._snap_blocks

    def has(self, cid: CID) -> bool:
        """Whether ``cid`` is a delta this replica knows or a snapshot block it took.

        A shared fetcher's ``has`` must answer this for the syncer's own CIDs.
        """
        return self._has(cid)

    # -- generating ------------------------------------------------------------------

    def announce(self, now: float, *, push: bool = False) -> bytes:
        """A signed announcement of our current heads.

        With ``push``, the head blocks go along when they are small
        (:data:`MAX_PUSH_BYTES`): a peer one change behind then applies the
        change from the gossip message itself, with no want and no answer,
        which on py-libp2p is a stream open and a protocol negotiation (about
        10 ms per hop, measured).  The driver pushes only for local changes;
        anti-entropy and answers to queries carry heads only.
        """
        self._seq = max(self._seq + 1, int(now * 1000))
        self.stats.announces_out += 1
        heads = self.replica.heads
        blocks = self._push_blocks(heads) if push else []
        self._announced = frozenset(heads)
        return encode_announce(self.signer, self.replica.genesis, heads, self._seq, self.replica.base, blocks)

    def _push_blocks(self, heads: list[CID]) -> list[tuple[CID, bytes]]:
        """What an announcement of ``heads`` pushes: every head (or none),
        then this node's own deltas below them since its last announcement.

        Several local commits often fall in one announcement's coalescing
        window (a task's enqueue and its completion 8 ms later): pushing
        only the newest left each peer one want and one answer short per
        announcement (measured: 1.1 wants per task on every peer of a
        quiet 3-node mesh, each a stream open on py-libp2p).  The walk goes
        breadth first from the heads (the order a receiver takes them in:
        each is then a parent a pushed delta awaits), stops at the heads of
        the last announcement (peers that heard it hold them and all below)
        and at other authors' deltas (they pushed those themselves), and
        keeps within :data:`MAX_PUSH_BLOCKS` and :data:`MAX_PUSH_BYTES`.
        """
        if len(heads) > MAX_PUSH_BLOCKS:
            return []
        store = self.replica.store
        blocks: list[tuple[CID, bytes]] = []
        total = 0
        for h in heads:
            try:
                data = store.get(h)
            except BlockNotFound:
                return []
            total += len(data)
            if total > MAX_PUSH_BYTES:
                return []
            blocks.append((h, data))
        me = self.signer.public
        seen = set(heads) | self._announced
        i = 0
        while i < len(blocks) and len(blocks) < MAX_PUSH_BLOCKS:
            cid, data = blocks[i]
            i += 1
            for p in _delta_links(data, cid)[0]:
                if p in seen or len(blocks) >= MAX_PUSH_BLOCKS:
                    continue
                seen.add(p)
                try:
                    pdata = store.get(p)
                except BlockNotFound:
                    continue
                if _delta_links(pdata, p)[1] != me:
                    continue
                if total + len(pdata) > MAX_PUSH_BYTES:
                    return blocks
                blocks.append((p, pdata))
                total += len(pdata)
        return blocks

    def query(self) -> bytes:
        return encode_query(self.replica.genesis)

    @property
    def syncing(self) -> bool:
        """True while blocks are wanted (a fetch is in progress)."""
        return self.fetcher.count_wanted(owner=self._owner) > 0 or self._snap is not None

    def peer_heads(self) -> dict[str, tuple[CID, ...]]:
        return dict(self._peer_heads)

    def echoes(self, peer: str) -> bool:
        """Whether our heads are exactly those ``peer`` last announced.

        Then announcing them would tell nobody anything: every peer that
        heard ``peer``'s announcement knows them (gossip reaches them all),
        and a peer that missed it hears of them at the next anti-entropy round.
        """
        announced = self._peer_heads.get(peer)
        return announced is not None and set(announced) == set(self.replica.heads)

    def statistics(self) -> SyncStatistics:
        return self.stats

    # -- receiving -----------------------------------------------------------------------

    def _reject(self, why: str) -> None:
        self.stats.rejected[why] = self.stats.rejected.get(why, 0) + 1

    def receive_untrusted(self, peer: str, data: bytes, now: float) -> list[Outgoing]:
        """Handle one message from ``peer``; return what to send next.

        Invalid input is counted in ``statistics().rejected`` and dropped; it
        never raises, so one bad peer cannot stop the loop.
        """
        try:
            msg = decode_message_untrusted(data, verify=False)
        except BadInput as exc:
            self._reject(type(exc).__name__)
            return []
        t = msg["t"]
        if t == "hpcp/announce":
            return self._on_announce(peer, msg, now)
        if t == "hpcp/query":
            if msg["g"] != self.replica.genesis:
                return []
            self.stats.queries_in += 1
            return [Outgoing(peer, self.announce(now))]
        if t == "hpcp/want":
            self.stats.wants_in += 1
            return [Outgoing(peer, serve_want(self.replica.store, msg["cids"][: self.options.batch * 4],
                                              self.options.max_blocks_bytes, have=msg.get("have", ())))]
        return self._on_blocks(peer, msg, now)

    def _on_announce(self, peer: str, msg: dict[str, Any], now: float) -> list[Outgoing]:
        if msg["g"] != self.replica.genesis:
            return []
        author, seq = msg["a"], msg["seq"]
        if seq <= self._last_seq.get(author, -1):
            self._reject("replayed")
            return []
        if seq > (now + self.options.max_future_s) * 1000:
            self._reject("future")
            return []
        heads = tuple(msg["heads"])
        unknown = [h for h in heads if not self.replica.is_known(h)]
        if not unknown and self._peer_heads.get(peer) == heads:
            # Nothing new: skip the signature check (the costly part of an
            # announcement) since nothing will change.
            return []
        try:
            verify_announce(msg)
        except BadMessage:
            self._reject("bad_signature")
            return []
        self._last_seq[author] = seq
        self.stats.announces_in += 1
        self._peer_heads[peer] = heads
        if not unknown:
            return []
        snap = msg["snap"]
        if (snap is not None and self.replica.version == 0 and self._snap is None
                and snap not in self._snap_refused and not self.replica.is_known(snap)):
            self._snap = snap
            self._snap_deadline = now + self.options.snapshot_timeout_s
            self._snap_peer = peer
            self._want([snap], peer, now)
        if self._snap is not None:
            # Heads are fetched after the snapshot is installed: most of their
            # history is then covered and need not be walked.
            for h in unknown:
                self._deferred_heads.setdefault(h, set()).add(peer)
        else:
            self._want(unknown, peer, now)
            push = msg.get("push", ())
            # The unknown heads first, then the rest as sent (their
            # ancestors, newest first): each of those is taken only if a
            # delta taken before it awaits it (``_on_blocks``), so a push
            # can never add a block nobody links to.
            pushed = ([b for b in push if b[0] in unknown]
                      + [b for b in push if b[0] not in unknown and not self.replica.is_known(b[0])])
            if pushed:
                # Taken exactly as if the peer had answered a want for them
                # (hash, record and signature checks included); what they
                # still lack (older parents) is wanted from the same peer.
                self.stats.pushed_in += len(pushed)
                self.fetcher.add_peers([peer], owner=self._owner)
                return self._on_blocks(peer, {"blocks": pushed, "missing": []}, now)
        # A peer that claims heads we lack holds their whole history: it can
        # also serve the CIDs that are stuck without a provider.
        self.fetcher.add_peers([peer], owner=self._owner)
        return self._plan(now)

    def _want(self, cids: list[CID], peer: str, now: float) -> None:
        self.fetcher.want(cids, peer, now, owner=self._owner)

    def _on_blocks(self, peer: str, msg: dict[str, Any], now: float) -> list[Outgoing]:
        taken: list[CID] = []
        for cid, data in msg["blocks"]:
            self.stats.blocks_in += 1
            if not self.fetcher.is_wanted(cid, owner=self._owner):
                if not self.replica.is_awaited(cid):
                    continue  # unsolicited or duplicate
                self._want([cid], peer, now)  # an ancestor sent along: a pending delta waits on it
            taken.append(cid)
            try:
                self._take_block(peer, cid, data, now)
            except BadInput as exc:
                # The fetcher sees the block is still absent and stops asking this peer for it.
                self._reject(type(exc).__name__)
        # The fetcher releases what the answer left out (for size), drops this
        # peer as a provider of what it lacks, and ends the wants now present.
        self.fetcher.on_answer(peer, taken, msg["missing"], now)
        return self._plan(now)

    def _take_block(self, peer: str, cid: CID, data: bytes, now: float) -> None:
        if cid == self._snap and self._snap_obj is None:
            try:
                snap = records.snapshot_from_untrusted(cid, data)
                if snap.genesis != self.replica.genesis:
                    raise BadRecord("snapshot of another object")
            except BadInput:
                self._drop_snapshot(now)
                raise
            if snap.author != self.signer.public and snap.author not in self.options.snapshot_signers:
                # Checked before anything is stored: the poison never lands.
                self._reject("untrusted_snapshot")
                self._drop_snapshot(now)
                return
            self.replica.store.put(cid, data)
            self._snap_obj = snap
            self._snap_blocks.add(cid)
            for part in snap.parts:
                self._snap_parts[part] = None
            for c in snap.covers:
                self._snap_covers[c] = None
            self._want(list(snap.parts) + list(snap.covers), peer, now)
            self._maybe_install(now)
            return
        if cid in self._snap_parts and self._snap_parts[cid] is None:
            try:
                self._snap_parts[cid] = records.part_from_untrusted(cid, data)
            except BadInput:
                self._drop_snapshot(now)
                raise
            self.replica.store.put(cid, data)
            self._snap_blocks.add(cid)
            self._maybe_install(now)
            return
        if cid in self._snap_covers and self._snap_covers[cid] is None:
            # A head the snapshot claims: verified like any delta, stored, but
            # not offered to the replica (its history is what the snapshot
            # stands for).
            try:
                d = records.delta_from_untrusted(cid, data, verify=self.replica.options.verify_signatures)
                if d.genesis != self.replica.genesis:
                    raise BadRecord("covered head belongs to another object")
            except BadInput:
                self._drop_snapshot(now)
                raise
            self.replica.store.put(cid, data)
            self._snap_covers[cid] = d
            self._snap_blocks.add(cid)
            self._maybe_install(now)
            return
        receipt = self.replica.receive_untrusted(cid, data)
        self.stats.deltas_applied += len(receipt.applied)
        for _ in range(receipt.refused):
            # A delta whose height was wrong against parents that arrived after
            # it: refused like one that raised BadHeight at once, and counted alike.
            self._reject("BadHeight")
        self._want([p for p in receipt.missing if not self.replica.is_known(p)], peer, now)

    def _maybe_install(self, now: float) -> None:
        snap = self._snap_obj
        if (snap is None or any(v is None for v in self._snap_parts.values())
                or any(v is None for v in self._snap_covers.values())):
            return
        parts = [self._snap_parts[c] for c in snap.parts]
        try:
            self.replica.install_snapshot(snap, parts, [self._snap_covers[c] for c in snap.covers])  # type: ignore[arg-type, misc]
        except BadInput:
            self._drop_snapshot(now)
            raise
        self._snap, self._snap_obj, self._snap_parts, self._snap_covers = None, None, {}, {}
        self._release_deferred(now)

    def _drop_snapshot(self, now: float) -> None:
        # Give up on the snapshot for good and sync from deltas: its blocks
        # are no longer wanted, and the heads deferred for it are.
        if self._snap is None:
            return
        self._snap_refused.add(self._snap)
        self.fetcher.abandon([c for c in [self._snap, *self._snap_parts, *self._snap_covers]
                              if self.fetcher.is_wanted(c, owner=self._owner)])
        self.fetcher.take_finished(owner=self._owner)
        # Its covered heads are deltas like any other now: those verified
        # are offered to the replica (their parents become wants), the rest
        # are fetched as such.
        self._snap_blocks.difference_update(self._snap_covers)
        for c, d in self._snap_covers.items():
            if d is None:
                continue
            try:
                receipt = self.replica.receive_untrusted(c, self.replica.store.get(c))
            except (BadInput, BlockNotFound):
                continue
            self.stats.deltas_applied += len(receipt.applied)
            if self._snap_peer is not None:
                self._want([p for p in receipt.missing if not self.replica.is_known(p)], self._snap_peer, now)
        self._snap, self._snap_obj, self._snap_parts, self._snap_covers = None, None, {}, {}
        self._release_deferred(now)

    def _release_deferred(self, now: float) -> None:
        for h, provs in self._deferred_heads.items():
            for p in sorted(provs):
                self._want([h], p, now)
        self._deferred_heads = {}

    # -- planning -------------------------------------------------------------------------

    def request_failed(self, peer: str, now: float) -> list[Outgoing]:
        """The transport could not reach ``peer``: re-plan its wants elsewhere now.

        ``peer`` stays a provider only where it is the only one (it may come
        back), and is backed off (exponentially, up to ``want_timeout_s``) so
        that an unreachable sole provider is not asked again in a tight loop;
        the timeout path would reach the same state, just later.
        """
        self.fetcher.on_failure(peer, now)
        return self._plan(now)

    def tick(self, now: float) -> list[Outgoing]:
        """Expire unanswered wants and plan new ones; call it periodically."""
        if self._snap is not None and now >= self._snap_deadline:
            self._reject("snapshot_timeout")
            self._drop_snapshot(now)
        before = self.fetcher.statistics().timeouts
        asks = self.fetcher.tick(now, owner=self._owner)
        if self.fetcher.statistics().timeouts != before:
            self.stats.timeouts += 1
        return self._outgoing(asks)

    def _plan(self, now: float) -> list[Outgoing]:
        return self._outgoing(self.fetcher.plan(now, owner=self._owner))

    def _outgoing(self, asks: list[Ask]) -> list[Outgoing]:
        # Nobody reads which wants ended (the replica shows it); drain the list
        # so it does not grow.
        self.fetcher.take_finished(owner=self._owner)
        self.stats.wants_out += len(asks)
        # Our heads go along so the server's ancestor walk stops where we are.
        have = self.replica.heads[:MAX_HAVE] if asks else []
        return [Outgoing(a.peer, encode_want(a.cids, have)) for a in asks]
