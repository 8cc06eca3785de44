"""The mesh core: everything a node decides about its peers, as pure code.

:class:`MeshCore` joins the pure pieces of the mesh into the one object that
the daemon's pump and the simulation both drive:

* one :class:`~lattice.hpcp.Syncer` per followed object, all fetching through
  ONE :class:`~lattice.fetcher.Fetcher` (one in-flight limit and one backoff
  table per node; a syncer's owner in it is its genesis);
* *linked blocks*: blocks that records link to but HPCP does not walk (task
  bodies named in the queue, result outputs, engine signatures).  Every CID
  found in a newly applied op is wanted from the fetcher, first from the peer
  the record names (``runner``/``by``) or else the peer that sent the delta,
  and given up after ``prefetch_retries`` asks ended without it
  (:mod:`lattice.linkedblocks`); callers add their own wants with
  :meth:`MeshCore.want`;
* the :class:`~lattice.peers.PeerTable` (signed presence, liveness, dials);
* when to announce: a change after a quiet ``announce_coalesce_s`` is
  announced at once, and changes within that window of an announcement
  share the next one, every object is re-announced every ``announce_interval_s``
  (anti-entropy), and all objects are queried at start and when a new peer
  appears; merged heads are announced only when they differ from the heads
  of the peer they came from (no echoes);
* admission: the allow-list and per-peer token buckets for gossip and block
  requests, and every rejection counter.

Nothing here does network I/O or reads a clock.  Inputs are method calls
that take ``now`` (wall-clock seconds: HPCP and presence sequence numbers are
derived from it); each returns the outputs to carry out, typed records
(:class:`Broadcast`, :class:`Request`, :class:`Dial`, :class:`Follow`,
:class:`Changed`, :class:`Fetched`).  The one resource the core touches is
the node's synchronous block store (:class:`lattice.blockstore.BlockStore`),
which may be slow (IPFS over HTTP): a driver calls the core from a worker
thread, one call at a time.  :meth:`MeshCore.deadline` says when the core
next wants :meth:`MeshCore.tick`.

What the driver must do with the outputs:

* ``Broadcast(data)``: gossip ``data`` to every peer (best effort);
* ``Request(ask_id, peer, data)``: send ``data`` to ``peer`` as a request and
  hand the answer to :meth:`MeshCore.on_response` (``None`` when it failed or
  timed out: every request must be answered exactly once);
* ``Dial(peer, addrs)``: connect to ``peer`` unless connected already;
* ``Follow(genesis)``: a peer announced an object we do not follow; follow it
  (or not) and hand its replica to :meth:`MeshCore.follow`, which replays the
  announcement;
* ``Changed(genesis)``: peers' deltas advanced that replica (persist its
  heads, wake whoever waits on it);
* ``Fetched(done, abandoned)``: linked-block wants that ended.

A two-node loop, runnable as is::

    from lattice import codec, goho, queue, records
    from lattice.blockstore import MemoryBlockStore
    from lattice.meshcore import Broadcast, MeshCore, Request
    from lattice.signing import Signer, peer_id_of
    g = records.make_genesis("queue", "demo")[0]
    nodes = {}
    for seed in (b"a", b"b"):
        s = Signer.from_seed(seed * 32)
        core = MeshCore(peer_id_of(s.public), s, MemoryBlockStore())
        core.follow(goho.Replica.empty(g, core.store), 0.0)
        nodes[core.me] = core
    a, b = nodes.values()
    body, data = codec.encode_block({"task": 1})
    a.store.put(body, data)
    a.syncers[g].replica.update(queue.enqueue_ops([body]), a.signer)
    def deliver(inbox, now):
        while inbox:
            src, o = inbox.pop(0)
            for dst in nodes.values():
                if isinstance(o, Broadcast) and dst.me != src:
                    inbox += [(dst.me, x) for x in dst.receive(src, o.data, now)]
            if isinstance(o, Request):
                answer = nodes[o.peer].serve(src, o.data, now)
                inbox += [(src, x) for x in nodes[src].on_response(o.ask_id, answer, now)]
    deliver([(a.me, o) for o in a.local_change(g, 0.0) + a.tick(1.0)], 1.0)
    assert b.syncers[g].replica.heads == a.syncers[g].replica.heads
    # The body was not inline: b wants it once link_grace_s passed (its deadline).
    later = b.deadline()
    deliver([(b.me, o) for o in b.tick(later)], later)
    assert b.store.has(body)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import codec, hpcp
from .admission import FollowQuota, TokenBucket
from .cid import CID
from .errors import BadInput
from .fetcher import Fetcher, FetchOptions
from .goho import Change, Cursor, Replica
from .linkedblocks import LINK_PROVIDERS, LINKED, MAX_LINK_DEPTH, MAX_LINKS_PER_DELTA, LinkedBlocks
from .meshoptions import MeshCoreOptions, MeshStatistics
from .meshout import Broadcast, Changed, Dial, Fetched, Follow, Output, Request
from .newcomers import Newcomers
from .peers import PRESENCE_TYPE, PeerTable, PeerTableOptions, Received
from .signing import Signer, peer_id_of

__all__ = ["Broadcast", "Changed", "Dial", "Fetched", "Follow", "LINKED", "LINK_PROVIDERS", "MAX_LINKS_PER_DELTA",
           "MAX_LINK_DEPTH", "MeshCore", "MeshCoreOptions", "MeshStatistics", "Output", "Request", "TokenBucket"]

#: Announcements of objects we do not follow (yet) kept for :meth:`MeshCore.follow`.
MAX_STASHED = 256
#: Most block CIDs served for one request.
MAX_SERVED_CIDS = 1024
#: Most block bytes in one answer.
MAX_SERVED_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Pending:
    """An outstanding :class:`Request`: an object's want, or a linked-block ask."""

    peer: str
    genesis: CID | None  # None: a linked-block ask
    fetch_id: int = 0
    cids: frozenset[CID] = frozenset()


class MeshCore:
    """HPCP, presence, linked blocks and admission for one node (sans-I/O).

    Args:
        me: This node's peer id.
        signer: This node's key (signs announcements and presence).
        store: The node's block store; read to serve wants and to skip
            blocks we hold, written with fetched linked blocks.
        roles: This node's roles (announced; counted by :meth:`live`).
        inventory: What this node announces it can run.
        api_url: This node's API URL at presence time (or None).
        addrs: This node's listen multiaddrs at presence time.
        ipfs_addrs: This node's IPFS swarm multiaddrs to offer at presence
            time (the presence ``"ipfs"`` key; none by default).
        options: See :class:`MeshCoreOptions`.
    """

    def __init__(self, me: str, signer: Signer, store: Any, *, roles: Iterable[str] = (),
                 inventory: Mapping[str, Any] | None = None, api_url: Callable[[], str | None] = lambda: None,
                 addrs: Callable[[], Iterable[str]] = lambda: (), options: MeshCoreOptions | None = None,
                 ipfs_addrs: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.me = me
        self.signer = signer
        self.store = store
        self.options = o = options or MeshCoreOptions()
        self.roles = list(roles)
        self.inventory = inventory if inventory is not None else {}
        self._api_url = api_url
        self._addrs = addrs
        self._ipfs_addrs = ipfs_addrs
        self.fetcher = Fetcher(self._has, FetchOptions(
            batch=o.prefetch_batch, max_inflight=o.max_requests, want_timeout_s=o.want_timeout_s,
            backoff_base_s=min(0.5, o.backoff_cap_s), backoff_cap_s=o.backoff_cap_s))
        self.peers = PeerTable(me, roles=self.roles, options=PeerTableOptions(presence_interval_s=o.presence_interval_s))
        self.syncers: dict[CID, hpcp.Syncer] = {}
        self.rejected: dict[str, int] = {}
        self._counts = dict.fromkeys(("announces_out", "gossip_in", "requests_out", "requests_in", "prefetched"), 0)
        self._gossip_bucket = TokenBucket(o.gossip_per_s)
        self._newcomers = Newcomers(o.new_peers_per_s, o.dials_per_s, self.reject)
        #: Peers with a connection now, as the driver last saw them (None:
        #: unknown, e.g. a simulation); a connected peer is never dialled, and
        #: our presence lists them as our ``links`` (lattice.vouching).
        self.connected: frozenset[str] | None = None
        self._request_bucket = TokenBucket(o.requests_per_s)
        # One change-feed cursor per followed replica: a replica may change on
        # another thread (a local commit); the next call into the core pulls
        # what it applied since (nothing calls into the core).
        self._cursors: dict[CID, Cursor] = {}
        self._requests: dict[int, _Pending] = {}
        self._next_ask = 1
        self._last_sender: dict[CID, str] = {}
        self._stash: dict[CID, tuple[str, bytes]] = {}  # announce of an object not followed yet
        self._follows = FollowQuota(o.follow_per_author, o.max_auto_follow,
                                    hpcp.signed_announce_untrusted)
        #: Blocks that records link to, wanted and stored (lattice.linkedblocks).
        self.linked_blocks = LinkedBlocks(me, store, self.fetcher, self.peers, self.reject, o)
        self._dirty: set[CID] = set()
        self._pushable: set[CID] = set()  # dirty by a local change: its announcement pushes the heads
        self._announce_at: float | None = None
        self._last_announce = float("-inf")
        self._started = False
        self._next_presence = self._next_anti_entropy = self._next_tick = 0.0

    # -- objects ---------------------------------------------------------------------

    @property
    def followed(self) -> frozenset[CID]:
        return frozenset(self.syncers)

    def follow(self, replica: Replica, now: float) -> list[Output]:
        """Sync ``replica`` with the mesh from now on (no-op when followed already).

        A stashed announcement of it (see :class:`Follow`) is replayed; once
        started, the object is also queried.
        """
        g = replica.genesis
        out: list[Output] = []
        if g in self.syncers:
            return out
        self.syncers[g] = hpcp.Syncer(replica, self.signer, hpcp.SyncOptions(
            batch=self.options.prefetch_batch, want_timeout_s=self.options.want_timeout_s,
            snapshot_signers=self.options.snapshot_signers), fetcher=self.fetcher)
        self._cursors[g] = replica.cursor()
        stashed = self._stash.pop(g, None)
        if self._started:
            out.append(Broadcast(hpcp.encode_query(g)))
        if stashed is not None:
            out += self.receive(stashed[0], stashed[1], now, admitted=True)
        return self._end(out, now)

    def syncing(self, genesis: CID) -> bool:
        """Whether blocks of ``genesis`` are being fetched (a catch-up is under way)."""
        s = self.syncers.get(genesis)
        return s is not None and s.syncing

    # -- inputs ----------------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        """Begin: our presence, and a query for every object."""
        self._started = True
        o = self.options
        self._next_anti_entropy = now + o.announce_interval_s
        self._next_tick = now + o.tick_s
        self._next_presence = now + o.presence_interval_s
        out: list[Output] = [Broadcast(self._presence(now))]
        out += [Broadcast(s.query()) for s in self.syncers.values()]
        return self._end(out, now)

    def receive(self, peer: str, data: bytes, now: float, *, admitted: bool = False) -> list[Output]:
        """One gossip message from ``peer`` (an announce, a query or a presence)."""
        out: list[Output] = []
        if not admitted:
            self._counts["gossip_in"] += 1
            if not self._admit(peer, self._gossip_bucket, now):
                return out
        try:
            obj = codec.decode_untrusted(data, max_size=hpcp.MAX_MESSAGE)
        except BadInput:
            self.reject("bad_gossip")
            return out
        t = obj.get("t") if type(obj) is dict else None
        if t == PRESENCE_TYPE:
            self._on_presence(peer, obj, now, out)
            return self._end(out, now)
        g = obj.get("g") if type(obj) is dict else None
        if t not in ("hpcp/announce", "hpcp/query") or type(g) is not CID:
            self.reject("bad_gossip")
            return out
        syncer = self.syncers.get(g)
        if syncer is None:
            if t == "hpcp/announce":
                # Follow what the mesh shares (datasets of jobs, other nodes' objects).
                if g not in self._stash:
                    why = "stash_full" if len(self._stash) >= MAX_STASHED else self._follows.admit_untrusted(data)
                    if why is not None:
                        self.reject(why)
                        return out
                    out.append(Follow(g))
                self._stash[g] = (peer, data)
            return out
        self.peers.note_peer(peer)
        if t == "hpcp/announce":
            self._last_sender[g] = peer
        before = syncer.replica.version
        self._dispatch(g, syncer.receive_untrusted(peer, data, now), out)
        if syncer.replica.version != before:  # it pushed blocks we applied
            out.append(Changed(g))
            self._merged(syncer, g, peer, now)
        return self._end(out, now)

    def serve(self, peer: str, data: bytes, now: float) -> bytes:
        """Answer ``peer``'s block request (an ``hpcp/want``) from the store."""
        self._counts["requests_in"] += 1
        if not self._admit(peer, self._request_bucket, now):
            return hpcp.encode_blocks([], [])
        try:
            msg = hpcp.decode_message_untrusted(data, verify=False)
        except BadInput:
            msg = None
        if msg is None or msg["t"] != "hpcp/want":
            self.reject("bad_request")
            return hpcp.encode_blocks([], [])
        return hpcp.serve_want(self.store, msg["cids"][:MAX_SERVED_CIDS], MAX_SERVED_BYTES, have=msg.get("have", ()))

    def on_response(self, ask_id: int, data: bytes | None, now: float) -> list[Output]:
        """The answer to ``Request(ask_id)``; None when it failed or timed out."""
        out: list[Output] = []
        p = self._requests.pop(ask_id, None)
        if p is None:
            return out
        if p.genesis is not None:
            syncer = self.syncers[p.genesis]
            if data is None:
                self._dispatch(p.genesis, syncer.request_failed(p.peer, now), out)
                self._dial(p.peer, now, out)
                return self._end(out, now)
            self._last_sender[p.genesis] = p.peer
            before = syncer.replica.version
            self._dispatch(p.genesis, syncer.receive_untrusted(p.peer, data, now), out)
            if syncer.replica.version != before:
                out.append(Changed(p.genesis))
                self._merged(syncer, p.genesis, p.peer, now)
        elif data is None:
            self.fetcher.on_failure(p.fetch_id, now)
            self._dial(p.peer, now, out)
        else:
            self._counts["prefetched"] += self.linked_blocks.on_blocks(p.fetch_id, p.cids, data, now)
        return self._end(out, now)

    def presence_now(self) -> None:
        """Make this node's presence due at the next tick (its inventory changed,
        e.g. it began draining, and peers should hear so without waiting a period)."""
        self._next_presence = 0.0

    def peer_joined(self, peer: str, now: float) -> list[Output]:
        """Our gossip reaches ``peer`` directly now (it connected and subscribed).

        It may be new, or a node that restarted and lost what it had: our
        presence and every object's heads go out at the next tick instead of
        within a period, so its view (and its peers', through it) is current
        at once.  Joins close together share one presence and announcement.
        """
        self.presence_now()
        for g, s in self.syncers.items():
            if s.replica.heads:
                self._mark_dirty(g, now)
        return self._end([], now)

    def suspect(self, peer: str) -> None:
        """The driver lost ``peer`` and could not reach it again: count it dead until it is heard again."""
        self.peers.suspect(peer)

    def local_change(self, genesis: CID, now: float) -> list[Output]:
        """This node changed ``genesis``: announce it within ``announce_coalesce_s``."""
        out: list[Output] = []
        if genesis in self.syncers:
            self._mark_dirty(genesis, now)
            self._pushable.add(genesis)
        return self._end(out, now)

    def _merged(self, syncer: hpcp.Syncer, genesis: CID, peer: str, now: float) -> None:
        """``peer``'s blocks were applied: announce the merged heads once the
        fetch is complete, unless they are just what ``peer`` announced (gossip
        took that to every member; an echo costs each a message or two and
        tells nothing; a member that missed it hears at anti-entropy)."""
        if not syncer.syncing and not syncer.echoes(peer):
            self._mark_dirty(genesis, now)

    def _mark_dirty(self, genesis: CID, now: float) -> None:
        self._dirty.add(genesis)
        if self._announce_at is None:
            # Leading edge: the first change after a quiet window goes out at
            # once (a lone task reaches peers without waiting); changes that
            # follow within the window share the next announcement, so an
            # object is announced at most once per window under load.
            self._announce_at = max(now, self._last_announce + self.options.announce_coalesce_s)

    def want(self, cids: Iterable[CID], hint: str | None, now: float, *,
             providers: Iterable[str] = ()) -> list[Output]:
        """Fetch linked blocks into the store.

        Args:
            cids: The blocks; those already stored end at once (in the
                returned :class:`Fetched`).
            hint: A peer that surely holds them, asked first.
            now: The current time.
            providers: Further peers that may hold them (e.g. connected
                peers); live peers are added too.
        """
        out: list[Output] = []
        here: list[CID] = []
        new: list[CID] = []
        for c in dict.fromkeys(cids):
            if self.fetcher.is_wanted(c):
                new.append(c)
            elif self.store.has(c):
                here.append(c)
            else:
                new.append(c)
        if here:
            out.append(Fetched(done=tuple(here)))
        self.linked_blocks.want(new, hint, now, extra=list(providers))
        return self._end(out, now)

    def tick(self, now: float) -> list[Output]:
        """Run what is due: announcements, anti-entropy, presence, retries."""
        out: list[Output] = []
        o = self.options
        if self._announce_at is not None and now >= self._announce_at:
            dirty, self._dirty, self._announce_at = self._dirty, set(), None
            pushable, self._pushable = self._pushable, set()
            self._last_announce = now
            out += [self._announce(g, now, push=g in pushable)
                    for g in sorted(dirty, key=lambda c: c.raw) if g in self.syncers]
        if not self._started:
            return self._end(out, now)
        if now >= self._next_anti_entropy:
            self._next_anti_entropy = now + o.announce_interval_s
            out += [self._announce(g, now) for g, s in self.syncers.items() if s.replica.heads]
            self.linked_blocks.retry_stuck(now)
        if now >= self._next_presence:
            self._next_presence = now + o.presence_interval_s
            out.append(Broadcast(self._presence(now)))
        if now >= self._next_tick:
            self._next_tick = now + o.tick_s
            for g, s in list(self.syncers.items()):
                if s.syncing:
                    self._dispatch(g, s.tick(now), out)
            self._requests_for(self.fetcher.tick(now, owner=LINKED), out)
        return self._end(out, now)

    def deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None: not before an input).

        The ``tick_s`` retry round counts only while something is being
        fetched: an idle node then wakes for presence and anti-entropy alone,
        which is most of what an idle daemon's CPU was (issue 16).  An input
        that starts a fetch makes the retry round due again; whoever sleeps
        until the deadline re-reads it after each input.
        """
        times = [t for t in (self._announce_at, self.linked_blocks.due()) if t is not None]
        if self._started:
            times += [self._next_anti_entropy, self._next_presence]
            if self.fetching():
                times.append(self._next_tick)
        return min(times, default=None)

    def fetching(self) -> bool:
        """True while any block is wanted: by a syncer (its own or a snapshot) or as a linked block."""
        return self.fetcher.count_wanted() > 0 or any(s.syncing for s in list(self.syncers.values()))

    def reject(self, why: str, n: int = 1) -> None:
        """Count ``n`` refused inputs (also the transport's, e.g. ``bad_mesh_secret``)."""
        self.rejected[why] = self.rejected.get(why, 0) + n

    # -- views -----------------------------------------------------------------------
    #
    # The views below may be called from another thread while a core call
    # runs (the daemon's event loop must not wait for a slow store): they
    # copy dicts before iterating, and every value they read is replaced,
    # never changed in place, so they see a recent state, never a torn one.

    def live(self, now: float, role: str | None = None) -> list[str]:
        """Live peers (ours included) with ``role``; see :meth:`PeerTable.live`."""
        return self.peers.live(now, role)

    def live_inventories(self, now: float, role: str, within_s: float | None = None) -> dict[str, Mapping[str, Any]]:
        """Live peers with ``role`` (ours included when we have it) and their
        announced inventories: what the claim planner weighs and matches.
        ``within_s``: heard from within this long, instead of the horizon."""
        return {p: (self.inventory if p == self.me else self.peers.inventory(p))
                for p in self.peers.live(now, role, within_s=within_s)}

    def peer_list(self, now: float, connected: Mapping[str, Iterable[str]] | None = None) -> list[dict[str, Any]]:
        """``GET /v1/peers``: every known or connected peer, with the heads it announced."""
        heads: dict[str, dict[str, list[str]]] = {}
        for g, s in list(self.syncers.items()):
            for pid, h in s.peer_heads().items():
                heads.setdefault(pid, {})[str(g)] = [str(c) for c in h]
        return self.peers.peer_list(now, connected=connected, heads=heads)

    def all_rejected(self) -> dict[str, int]:
        """Every rejection count: ours, the peer table's, and HPCP's summed over objects."""
        rejected = dict(self.rejected)
        for k, v in list(self.peers.rejected.items()):
            rejected[k] = rejected.get(k, 0) + v
        for syncer in list(self.syncers.values()):
            for k, v in list(syncer.stats.rejected.items()):
                rejected[f"hpcp_{k}"] = rejected.get(f"hpcp_{k}", 0) + v
        return rejected

    def statistics(self, now: float) -> MeshStatistics:
        return MeshStatistics(len(self.peers), len(self.live(now, "runner")), rejected=self.all_rejected(),
                              revived=self.peers.revived, **self._counts)

    # -- internals -------------------------------------------------------------------

    @property
    def _linked(self) -> set[CID]:
        """The linked CIDs wanted (:attr:`LinkedBlocks.wanted`)."""
        return self.linked_blocks.wanted

    def _has(self, cid: CID) -> bool:
        """The shared fetcher's test: is ``cid`` here for whoever wants it."""
        owner = self.fetcher.owner_of(cid)
        if owner == LINKED or (owner is None and cid in self.linked_blocks.wanted):
            # Only blocks the core stored count (the store was asked when
            # the want began): a slow store is not asked on every plan.
            return cid in self.linked_blocks.arrived
        s = self.syncers.get(owner) if owner is not None else None
        if s is not None:
            return s.has(cid)
        return any(s.has(cid) for s in self.syncers.values())

    def _admit(self, peer: str, bucket: TokenBucket, now: float) -> bool:
        allow = self.options.allow_peers
        if allow is not None and peer not in allow:
            self.reject("not_member")
            return False
        if not bucket.allow(peer, now):
            self.reject("rate_limited")
            return False
        return True

    def _presence(self, now: float) -> bytes:
        # The peers we hold a connection to: our connected peers count them as live on our word.
        return self.peers.encode_presence(self.signer, roles=self.roles, inventory=self.inventory,
                                          api=self._api_url(), addrs=list(self._addrs()), now=now,
                                          links=sorted(self.connected or ()),
                                          ipfs=list(self._ipfs_addrs()))

    def leave(self, now: float) -> bytes:
        """Our last presence, saying we are leaving (``now``: the wall clock); broadcast it as we stop."""
        return self.peers.encode_presence(self.signer, roles=self.roles, inventory=self.inventory,
                                          api=self._api_url(), addrs=list(self._addrs()), now=now, leaving=True,
                                          ipfs=list(self._ipfs_addrs()))

    def _on_presence(self, peer: str, obj: dict[str, Any], now: float, out: list[Output]) -> None:
        got = self.peers.receive_presence_untrusted(peer, obj, now)
        if got.accepted and obj.get("leaving") is True:
            self.peers.mark_left(peer)  # stopping: not live from now on, no dial
            self._newcomers.forget(peer)  # welcomed again when it comes back
            return
        if got is Received.NEW_PEER:
            self._newcomers.forget(peer)
        if got.accepted and self._newcomers.welcome(peer, now):
            # A new peer: ask it (and everyone) for the newest heads of our
            # objects, and offer it for linked blocks nobody else could serve
            # (within the welcome budget: made-up ids are free, lattice.newcomers).
            out += [Broadcast(s.query()) for s in self.syncers.values()]
            self.fetcher.add_peers([peer], owner=LINKED)
        if got.accepted:
            self._dial(peer, now, out)

    def _dial(self, peer: str, now: float, out: list[Output]) -> None:
        # The table allows one dial per peer per dial_interval_s; a connected
        # peer is not dialled (the driver also checks), and dials are budgeted.
        connected = self.connected is not None and peer in self.connected
        addrs = self.peers.dial_addrs(peer, now, connected=connected)
        allow = self.options.allow_peers
        if addrs and self._newcomers.may_dial(peer, now, connected=connected,
                                               member=allow is None or peer in allow):
            out.append(Dial(peer, tuple(addrs)))

    def _announce(self, g: CID, now: float, *, push: bool = False) -> Broadcast:
        self._counts["announces_out"] += 1
        return Broadcast(self.syncers[g].announce(now, push=push))

    def _dispatch(self, genesis: CID, outs: list[hpcp.Outgoing], out: list[Output]) -> None:
        for o in outs:
            if o.to is not None and codec.decode_trusted(o.data).get("t") == "hpcp/want":
                ask_id = self._new_ask(_Pending(o.to, genesis))
                out.append(Request(ask_id, o.to, o.data, genesis))
            else:  # an announcement (one answering a query too: gossip it, everyone benefits)
                out.append(Broadcast(o.data))

    def _new_ask(self, pending: _Pending) -> int:
        ask_id = self._next_ask
        self._next_ask += 1
        self._requests[ask_id] = pending
        self._counts["requests_out"] += 1
        return ask_id

    def _requests_for(self, asks: list[Any], out: list[Output]) -> None:
        for a in asks:
            ask_id = self._new_ask(_Pending(a.peer, None, a.id, frozenset(a.cids)))
            out.append(Request(ask_id, a.peer, hpcp.encode_want(a.cids)))

    def _pull_changes(self) -> list[tuple[CID, Change]]:
        """What every followed replica applied since the last pull, per replica oldest first."""
        return [(g, change) for g, cursor in list(self._cursors.items()) for change in cursor.pull()]

    def _discover_links(self, now: float) -> None:
        """Want every block that newly applied ops link to and we lack."""
        for g, change in self._pull_changes():
            syncer = self.syncers.get(g)
            if syncer is None:
                continue
            # The delta's author wrote the op, so it held what the op links;
            # the peer that sent the delta may hold it too.
            author = peer_id_of(change.delta.author)
            sender = author if author is not None and author != self.me else self._last_sender.get(g)
            self.linked_blocks.discover(change, syncer.replica, sender, self.syncers, now)

    def _end(self, out: list[Output], now: float) -> list[Output]:
        """Finish an input: links of applied ops, linked-block asks and endings."""
        self._discover_links(now)
        self.linked_blocks.want_due(now)
        self._requests_for(self.fetcher.plan(now, owner=LINKED), out)
        if (fin := self.linked_blocks.finished()) is not None:
            out.append(fin)
        return out
