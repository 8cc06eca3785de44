"""Linked blocks: what records link to but HPCP does not walk, fetched ahead.

A record in a followed object may name blocks that HPCP never fetches with
the object's deltas: task bodies named in the queue, result outputs, engine
signatures.  :class:`LinkedBlocks` finds the CIDs in every newly applied op,
wants each one we lack from the node's one :class:`~lattice.fetcher.Fetcher`
(owner :data:`LINKED`), first from the peer the record names
(``runner``/``by``) or else the delta's author or sender, checks and stores
what arrives, and gives a block up after ``prefetch_retries`` rounds in
which every provider lacked it.

Kept apart from :mod:`lattice.meshcore`, which owns the requests (ask ids,
the ``Request``/``Fetched`` outputs) and calls in here: the wants, the
bounds on them (hostile gossip must not grow a node without bound), and the
answers.  Pure like the core: no I/O besides the node's block store, no
clock (``now`` comes in).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any

from . import hpcp
from .blockstore import held_of
from .cid import CID
from .errors import BadInput, StoreError
from .fetcher import Fetcher
from .goho import Change, Replica
from .meshoptions import MeshCoreOptions
from .meshout import Fetched
from .peers import PeerTable
from .state import decode_value

__all__ = ["LINKED", "LINK_PROVIDERS", "LinkedBlocks", "MAX_LINK_DEPTH", "MAX_LINKS_PER_DELTA"]

#: The fetcher owner of linked-block wants (syncers own theirs by genesis).
LINKED: Hashable = ("meshcore", "linked")
#: Peers besides the hint offered as providers of one linked block.
LINK_PROVIDERS = 6
#: Levels of maps and lists searched for links in one op value.
MAX_LINK_DEPTH = 4
#: Most linked blocks wanted for one delta (an honest delta has at most 5,000 ops).
MAX_LINKS_PER_DELTA = 10_000


def _links(value: Any, out: list[CID], depth: int = 0) -> int:
    """Append the links in ``value`` to ``out``; return how many containers were too deep."""
    t = type(value)
    if t is CID:
        out.append(value)
    elif t is dict or t is list:
        if depth >= MAX_LINK_DEPTH:
            return 1
        return sum(_links(v, out, depth + 1) for v in (value.values() if t is dict else value))
    return 0


class LinkedBlocks:
    """The linked blocks one node wants, and those the core stored.

    Args:
        me: This node's peer id (never offered as a provider).
        store: The node's block store: asked once when a want begins,
            written with the blocks that arrive.
        fetcher: The node's one fetcher; linked wants are owned by :data:`LINKED`.
        peers: The peer table (live peers are offered as providers).
        reject: Counts a refused input (the core's ``reject``).
        options: ``prefetch_retries`` and ``max_linked_wanted`` are read.
    """

    def __init__(self, me: str, store: Any, fetcher: Fetcher, peers: PeerTable,
                 reject: Callable[..., None], options: MeshCoreOptions) -> None:
        self.me = me
        self.store = store
        self.fetcher = fetcher
        self.peers = peers
        self.reject = reject
        self.options = options
        self.wanted: set[CID] = set()  # linked CIDs wanted
        #: Linked CIDs found and not yet wanted: CID -> (hint, when to want it), oldest first.
        self._later: dict[CID, tuple[str | None, float]] = {}
        #: When the oldest of them is due: one attribute, so :meth:`due` is
        #: safe to read from another thread than the one that changes them.
        self._next_due: float | None = None
        self.arrived: set[CID] = set()  # ... of which the core stored the block
        self._rounds: dict[CID, int] = {}  # ... stuck ones: times offered to the live peers again

    def want(self, cids: list[CID], hint: str | None, now: float, *, extra: Iterable[str] = ()) -> None:
        """Want ``cids`` from ``hint`` first, then ``extra`` and the live peers."""
        if not cids:
            return
        for c in cids:
            self._later.pop(c, None)
        self.wanted.update(cids)
        self.fetcher.want(cids, hint, now, owner=LINKED)
        others = [p for p in dict.fromkeys([*extra, *self.peers.live(now)]) if p not in (self.me, hint)]
        for c in cids:
            for p in others[:LINK_PROVIDERS]:
                self.fetcher.add_provider(c, p)

    def retry_stuck(self, now: float) -> None:
        """Offer linked blocks that every provider lacked to the live peers again.

        A peer that said it lacks a block may have fetched it since (it
        relayed the record before the block): ask again a few rounds, then
        give up, so a block nobody holds is not wanted forever.
        """
        stuck = self.fetcher.stuck(owner=LINKED)
        give_up = []
        for c in stuck:
            n = self._rounds[c] = self._rounds.get(c, 0) + 1
            if n > self.options.prefetch_retries:
                give_up.append(c)
        self.fetcher.abandon(give_up)
        peers = [p for p in self.peers.live(now) if p != self.me]
        if peers and len(stuck) > len(give_up):
            self.fetcher.add_peers(peers, owner=LINKED)

    def on_blocks(self, fetch_id: int, asked: frozenset[CID], data: bytes, now: float) -> int:
        """A peer's answer to the fetcher's ask ``fetch_id`` for ``asked``; returns the blocks stored."""
        try:
            msg = hpcp.decode_message_untrusted(data, verify=False)
        except BadInput:
            msg = None
        if msg is None or msg["t"] != "hpcp/blocks":
            self.reject("bad_blocks")
            self.fetcher.on_failure(fetch_id, now)
            return 0
        got: dict[CID, None] = {}
        good: list[tuple[CID, bytes]] = []
        for c, d in msg["blocks"]:
            if c in asked and c not in got:
                got[c] = None
                if c.verify(d):
                    good.append((c, d))
        if len(good) != len(got):
            self.reject("block_hash_mismatch")  # the fetcher stops asking this peer for them
        if good:
            try:
                self.store.put_many(good)
            except StoreError:
                self.reject("store_error")
                self.fetcher.on_failure(fetch_id, now)
                return 0
            self.arrived.update(c for c, _ in good)
        self.fetcher.on_answer(fetch_id, list(got), [c for c in msg["missing"] if c in asked], now)
        return len(good)

    def discover(self, change: Change, replica: Replica, sender: str | None, followed: Collection[CID],
                 now: float) -> None:
        """Want every block that the ops of ``change`` link to and we lack.

        Args:
            change: What a followed replica applied.
            replica: The replica that applied it (its registers are read for ``puts``).
            sender: The delta's author, or else the peer that sent it.
            followed: The followed objects' geneses (never wanted as blocks).
            now: The current time.
        """
        found: dict[CID, str | None] = {}

        def collect(value: Any) -> None:
            links: list[CID] = []
            if (deep := _links(value, links)):
                self.reject("links_dropped", deep)
            # A record written by a runner names it ("runner"/"by"): it
            # surely holds the blocks it links (its output), so ask it first.
            hint = None
            if type(value) is dict:
                for k in ("runner", "by"):
                    v = value.get(k)
                    if isinstance(v, str) and v in self.peers:
                        hint = v
                        break
            for c in links:
                found.setdefault(c, hint or sender)

        for _, enc in change.adds:
            collect(decode_value(enc))
        for key in change.puts:
            collect(replica.state.register(key))
        by_hint: dict[str | None, list[CID]] = {}
        ask = [c for c in found if c not in followed and c not in self._later and not self.fetcher.is_wanted(c)]
        held = held_of(self.store, ask)
        ask = [c for c in ask if c not in held]
        if len(ask) > MAX_LINKS_PER_DELTA:
            self.reject("links_dropped", len(ask) - MAX_LINKS_PER_DELTA)
            ask = ask[:MAX_LINKS_PER_DELTA]
        room = max(0, self.options.max_linked_wanted - len(self.wanted) - len(self._later))
        if len(ask) > room:
            # Not prefetched: a role that needs one fetches it on demand.
            self.reject("prefetch_full", len(ask) - room)
            ask = ask[:room]
        grace = self.options.link_grace_s
        if grace > 0:
            due = now + grace
            for c in ask:
                self._later[c] = (found[c], due)
            if ask and self._next_due is None:
                self._next_due = due
            return
        for c in ask:
            by_hint.setdefault(found[c], []).append(c)
        for hint, cids in by_hint.items():
            self.want(cids, hint, now)

    def due(self) -> float | None:
        """When the oldest linked block found and not yet wanted is to be wanted (None: none).

        Possibly early (one wanted meanwhile on demand): :meth:`want_due` then
        finds nothing due and moves it on.  A driver may read it from its
        event loop while the core runs in a worker thread.
        """
        return self._next_due

    def want_due(self, now: float) -> None:
        """Want the linked blocks whose grace (``link_grace_s``) has passed
        and that did not arrive meanwhile (inline in another delta)."""
        due: list[CID] = []
        for c, (_, when) in self._later.items():
            if when > now:
                break  # oldest first: the rest are later still
            due.append(c)
        hints = {c: self._later.pop(c)[0] for c in due}
        self._next_due = next(iter(self._later.values()))[1] if self._later else None
        if not due:
            return
        held = held_of(self.store, due)
        by_hint: dict[str | None, list[CID]] = {}
        for c in due:
            if c not in held:
                by_hint.setdefault(hints[c], []).append(c)
        for hint, cids in by_hint.items():
            self.want(cids, hint, now)

    def finished(self) -> Fetched | None:
        """The linked wants that ended since the last call (None: none), forgotten here."""
        fin = self.fetcher.take_finished(owner=LINKED)
        if not (fin.done or fin.abandoned):
            return None
        for c in fin.done + fin.abandoned:
            self.wanted.discard(c)
            self.arrived.discard(c)
            self._rounds.pop(c, None)
        return Fetched(fin.done, fin.abandoned)
