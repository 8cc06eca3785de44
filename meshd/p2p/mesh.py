"""The mesh pump: :class:`lattice.meshcore.MeshCore` driven over a transport.

Everything the mesh decides (HPCP, presence, linked-block fetching, when to
announce, admission, rejection counts) is the core's.  :class:`Mesh` only
moves bytes and time between the core and the world (go-ds-crdt's
broadcaster split):

* gossip (``Transport.broadcast``/``receive``) into :meth:`MeshCore.receive`;
* block requests from peers (the transport's request handler) into
  :meth:`MeshCore.serve`;
* the core's ``Request`` outputs out through ``Transport.request``, at most
  ``max_requests`` at once, each bounded by ``request_timeout_s``; the answer,
  or None when it failed, back into :meth:`MeshCore.on_response`;
* the node's local commits into :meth:`MeshCore.local_change`, newly followed
  objects into :meth:`MeshCore.follow`, and :meth:`MeshCore.tick` when the
  core's :meth:`~MeshCore.deadline` comes (looked at every ``tick_s``; an
  idle node's look costs no worker thread);
* ``Changed`` outputs into the object host (persist heads, wake waiters),
  ``Fetched`` into :meth:`Mesh.fetch_blocks` waiters, ``Dial`` into
  ``Transport.connect``;
* who is connected into :meth:`MeshCore.peer_joined` and
  :meth:`MeshCore.suspect`, and the topology plan into dials and trims
  (:class:`meshd.p2p.watch.ConnectionWatch`, which ``Mesh`` inherits).

Threads.  The core reads and writes the block store, which may be slow
(IPFS over HTTP), so every core call runs in a worker thread, under one
lock: the core's state is never changed by two threads.  The read-only
views (live peers, the peer list, statistics) are read on the event loop
without that lock, which a slow store call may hold for long: the core
copies before iterating, so they see a recent state, never a torn one.  An answer that may
change a replica runs under that object's host lock as well (when the host
has one), so it never interleaves with a local commit of the same object.

Cancellation stops every loop; the pump holds nothing that must survive.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol, runtime_checkable

import trio

from lattice import hpcp, vouching
from lattice.cid import CID
from lattice.errors import BadInput
from lattice.claims import rendezvous_rank
from lattice.meshcore import (
    Broadcast,
    Changed,
    Dial,
    Fetched,
    Follow,
    MeshCore,
    MeshStatistics,
    Output,
    Request,
)
from lattice.meshcore import MeshCoreOptions as MeshOptions
from lattice.peers import PeerTable

from ..runtime.logs import get_logger
from ..store.objects import Followed, ObjectHost
from .ratelimit import TokenBucket
from .watch import ConnectionWatch
from .wire import TransportError

__all__ = ["Mesh", "MeshOptions", "MeshStatistics", "Refusing", "TokenBucket", "Transport", "rendezvous_rank"]

log = get_logger("meshd.mesh")



class Transport(Protocol):
    """What the mesh needs from the network (meshd.p2p implements it over libp2p).

    ``request`` and ``broadcast`` raise only :class:`meshd.p2p.wire.TransportError`.
    """

    @property
    def peer_id(self) -> str: ...
    async def broadcast(self, data: bytes) -> None: ...
    async def receive(self) -> tuple[str, bytes]: ...
    def set_request_handler(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None: ...
    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes: ...
    def peers(self) -> list[Any]: ...


@runtime_checkable
class Refusing(Protocol):
    """A transport that refuses some messages below the mesh (``SealedTransport``: a wrong mesh secret).

    The pump drains the reasons into the core's rejection counters, so the
    transport needs no reference to the mesh (which is built on top of it).
    """

    def take_rejections(self) -> list[str]:
        """The reasons of messages refused since the last call; any thread."""
        ...


@dataclass
class _Waiter:
    """One :meth:`Mesh.fetch_blocks` call waiting for its CIDs to end."""

    remaining: set[CID]
    done: trio.Event = field(default_factory=trio.Event)


class Mesh(ConnectionWatch):
    """The pump of one node's :class:`MeshCore` over a transport."""

    def __init__(self, objects: ObjectHost, transport: Transport, *, roles: list[str], inventory: dict[str, Any],
                 api_url: Callable[[], str | None] = lambda: None, options: MeshOptions | None = None,
                 addrs: Callable[[], list[str]] = lambda: [],
                 ipfs_addrs: Callable[[], list[str]] = lambda: []) -> None:
        self.objects = objects
        self.store = objects.store
        self.transport = transport
        self.options = options or MeshOptions()
        self.roles = roles
        self.core = MeshCore(transport.peer_id, objects.signer, objects.store, roles=roles, inventory=inventory,
                             api_url=api_url, addrs=addrs, options=self.options, ipfs_addrs=ipfs_addrs)
        self._lock = threading.Lock()  # the core's: held by whichever thread calls into it
        self._limiter = trio.CapacityLimiter(self.options.max_requests)
        self._wake = trio.Event()
        self._local: set[CID] = set()  # local changes not yet handed to the core
        self._rejects: deque[str] = deque()  # transport rejections not yet counted by the core
        self._refusing = transport if isinstance(transport, Refusing) else None
        self._waiters: list[_Waiter] = []
        self._connected_at: dict[str, float] = {}  # peer -> when last seen connected (time.time())
        self._nursery: trio.Nursery | None = None
        self._notifying = False  # our own notifications are not local changes
        self._neighbours: frozenset[str] = frozenset()  # lattice.topology's, from the last plan
        # Bytes of HPCP answers (blocks) served to peers and fetched from them, for /metrics.
        self.bytes_served = 0
        self.bytes_fetched = 0

    # -- the core, one thread at a time --------------------------------------------------

    def _locked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._refusing is not None:
                self._rejects.extend(self._refusing.take_rejections())
            while self._rejects:
                self.core.reject(self._rejects.popleft())
            return fn(*args, **kwargs)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.core.connected = self._connections()  # read on the event loop, where the transport lives
        return await trio.to_thread.run_sync(lambda: self._locked(fn, *args, **kwargs))

    def _peer_ids(self) -> frozenset[str]:
        """The peers connected now (a transport without ``peer_ids`` is asked for ``peers``)."""
        ids = getattr(self.transport, "peer_ids", None)
        if ids is not None:
            return ids()
        return frozenset(getattr(p, "peer_id", str(p)) for p in self.transport.peers())

    def _connections(self) -> frozenset[str]:
        """The peers connected now; remembers when each was last seen connected."""
        now = time.time()
        conn = self._peer_ids()
        for p in conn:
            self._connected_at[p] = now
        if len(self._connected_at) > 4 * len(conn) + 1024:  # forget peers gone for the longest
            for p, _at in sorted(self._connected_at.items(), key=lambda kv: kv[1])[:len(self._connected_at) // 2]:
                del self._connected_at[p]
        return conn

    def _runners_only(self, peers: Iterable[str], within_s: float | None) -> list[str]:
        """``peers`` that count as live (:mod:`lattice.vouching`) within ``within_s`` (the liveness horizon when None).

        A presence proves only that someone holds a key, and keys are free;
        a connection was authenticated by Noise and costs the peer a socket.
        So a peer counts when we had a connection to it within ``within_s``,
        or when a peer we had one to, itself heard from lately, lists it in
        its signed presence as connected (above ``max_peers`` we hold
        connections to our neighbours only).  Made-up ids gossiped through
        one peer do not skew the claim planner; a connected liar adds at most
        ``lattice.peers.MAX_LINKS``.
        """
        self._connections()
        now = time.time()
        horizon = now - (self.core.peers.options.horizon_s if within_s is None else within_s)
        lately = {p for p, at in list(self._connected_at.items()) if at >= horizon}
        table = self.core.peers
        return vouching.live(peers, me=self.peer_id, connected=lately, fresh=lambda p: table.is_live(p, now),
                             links=table.links)

    # -- public -----------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.transport.peer_id

    @property
    def peers(self) -> PeerTable:
        """The core's peer table (read it through the methods below from other code)."""
        return self.core.peers

    @property
    def syncers(self) -> dict[CID, hpcp.Syncer]:
        """Per followed object, its HPCP syncer (``.syncing`` during a catch-up)."""
        return self.core.syncers

    @property
    def rejected(self) -> dict[str, int]:
        return self.statistics().rejected

    def live_peers(self, role: str) -> list[str]:
        """Peer ids (ours included when we have ``role``) with ``role`` that were seen, and connected, lately."""
        return self._runners_only(self.core.live(time.time(), role), None)

    def live_inventories(self, role: str, within_s: float | None = None) -> dict[str, Mapping[str, Any]]:
        """Live peers with ``role`` (ours included when we have it) and their announced inventories;
        ``within_s``: heard from (and connected) within this long, instead of the liveness horizon."""
        inv = self.core.live_inventories(time.time(), role, within_s)
        return {p: inv[p] for p in self._runners_only(inv, within_s)}

    def live_runners(self) -> list[str]:
        """Peer ids (ours included when we run) that run tasks and were seen lately."""
        return self.live_peers("runner")

    def presence_soon(self) -> None:
        """Broadcast this node's presence at the next tick (its inventory changed)."""
        self._locked(self.core.presence_now)
        self._wake.set()

    def known_peers(self) -> dict[str, list[str]]:
        """Live peers with their announced addresses, most recently heard first (for ``<home>/peers.json``)."""
        table = self.core.peers
        now = time.time()
        infos = [table.peer(p) for p in table.live(now) if p != self.peer_id]
        infos.sort(key=lambda i: -(i.last_seen or 0.0) if i is not None else 0.0)
        return {i.peer_id: list(i.addrs) for i in infos if i is not None and i.addrs}

    async def dial(self, peer: str, addrs: list[str]) -> None:
        """Connect to ``peer`` at the first of ``addrs`` that answers, unless connected (failures are logged)."""
        if peer not in self._peer_ids():
            await self._dial(peer, tuple(addrs))

    def any_presence(self) -> bool:
        """Whether any peer's presence has arrived."""
        return self.core.peers.any_presence()

    def statistics(self) -> MeshStatistics:
        return dataclasses.replace(self.core.statistics(time.time()), live_runners=len(self.live_runners()))

    def peer_list(self) -> list[dict[str, Any]]:
        conn = {getattr(p, "peer_id", str(p)): list(getattr(p, "addrs", ()) or ()) for p in self.transport.peers()}
        return self.core.peer_list(time.time(), conn)

    def _reject(self, why: str) -> None:
        """Count a rejection seen below the mesh (a transport's ``on_reject`` hook); any thread.

        A :class:`Refusing` transport needs no hook: the pump drains its rejections.
        """
        self._rejects.append(why)

    def _syncer(self, obj: Followed) -> hpcp.Syncer:
        """Follow ``obj`` now (before :meth:`serve`, e.g. in tests) and return its syncer."""
        self._locked(self.core.follow, obj.replica, time.time())
        return self.core.syncers[obj.genesis]

    async def query(self, obj: Followed) -> None:
        """Ask every peer for the newest heads of ``obj`` (HPCP ``?<origin>``)."""
        await self._broadcast(hpcp.encode_query(obj.genesis))

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = 10.0, prefer: Iterable[str] = ()) -> bool:
        """Fetch ``cids`` from peers into the store; True when all arrived.

        ``prefer`` names peers to ask first (e.g. the runner of a result).
        The core keeps wanting what did not arrive in time, until it gives up.
        """
        want = list(dict.fromkeys(cids))
        if not want:
            return True
        prefer = [p for p in prefer if p != self.peer_id]
        connected = sorted(self._peer_ids())
        waiter = _Waiter(set(want))
        self._waiters.append(waiter)
        try:
            outs = await self._call(self.core.want, want, prefer[0] if prefer else None, time.time(),
                                    providers=prefer[1:] + connected)
            await self._carry(outs)
            with trio.move_on_after(timeout_s):
                await waiter.done.wait()
        finally:
            self._waiters.remove(waiter)
        return await trio.to_thread.run_sync(lambda: all(self.store.has(c) for c in want))

    # -- serving ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus["Mesh"] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pump until cancelled."""
        now = time.time()
        for obj in list(self.objects.objects.values()):
            self._locked(self.core.follow, obj.replica, now)  # no I/O: syncers only
        unsubscribe = self.objects.subscribe(self._on_local_change)
        self.transport.set_request_handler(self._serve_request)
        set_farewell = getattr(self.transport, "set_farewell", None)
        if set_farewell is not None:
            set_farewell(self._farewell)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_loop)
                await self._carry(await self._call(self.core.start, time.time()))
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._watch_loop)
                task_status.started(self)
        finally:
            self._nursery = None
            unsubscribe()

    def _farewell(self) -> bytes | None:
        """Our leaving presence, signed now (the transport calls it as it stops, on the event loop).

        The core's lock may be held by a slow store call in a worker thread:
        waiting for it is bounded, and without it we leave unannounced (our
        presence then expires on the peers, as after a crash).
        """
        if not self._lock.acquire(timeout=0.5):
            return None
        try:
            return self.core.leave(time.time())
        finally:
            self._lock.release()

    def _on_local_change(self, obj: Followed) -> None:
        # An ObjectHost listener (trio thread): hand the change to the tick loop.
        if self._notifying:
            return
        self._local.add(obj.genesis)
        self._wake.set()

    async def _tick_loop(self) -> None:
        while True:
            deadline = self.core.deadline()
            delay = self.options.tick_s if deadline is None else min(self.options.tick_s, deadline - time.time())
            if delay > 0 and not self._local:
                with trio.move_on_after(delay):
                    await self._wake.wait()
            self._wake = trio.Event()
            local, self._local = self._local, set()
            followed = self.core.followed
            new = [o.replica for g, o in list(self.objects.objects.items()) if g not in followed]
            if not local and not new and not self._due(time.time()):
                # Woken by the period with nothing due (an idle node): no
                # thread hop.  The core's views are safe to read from here.
                continue
            await self._carry(await self._call(self._tick, new, local, time.time()))

    def _due(self, now: float) -> bool:
        deadline = self.core.deadline()
        return deadline is not None and deadline <= now

    def _tick(self, new: list[Any], local: set[CID], now: float) -> list[Output]:
        # Worker thread, under the core's lock.
        out: list[Output] = []
        for replica in new:
            out += self.core.follow(replica, now)
        for g in local:
            out += self.core.local_change(g, now)
        return out + self.core.tick(now)

    async def _receive_loop(self) -> None:
        while True:
            peer, data = await self.transport.receive()
            # An announcement that pushes blocks may change its replica, which a
            # local commit must not see half-done: take the object's lock, as
            # answers to wants do (a cheap byte test first; most gossip pushes
            # nothing).
            obj = self._pushed_to(data)
            async with self._host_lock(obj):
                outs = await self._call(self.core.receive, peer, data, time.time())
                for x in outs:
                    if isinstance(x, Changed) and (target := self.objects.get(x.genesis)) is not None:
                        await self._persist(target)
            await self._carry([x for x in outs if not isinstance(x, Changed)])

    def _pushed_to(self, data: bytes) -> Followed | None:
        if b"push" not in data:
            return None
        try:
            genesis = hpcp.peek_genesis_untrusted(data)
        except BadInput:  # malformed: core.receive counts and drops it
            return None
        return self.objects.get(genesis) if genesis is not None else None

    async def _serve_request(self, peer: str, data: bytes) -> bytes:
        answer = await self._call(self.core.serve, peer, data, time.time())
        self.bytes_served += len(answer)
        return answer

    # -- carrying out -------------------------------------------------------------------

    async def _broadcast(self, data: bytes) -> None:
        try:
            await self.transport.broadcast(data)
        except TransportError as exc:  # gossip is best effort: anti-entropy repeats it
            log.info("broadcast_failed", error=repr(exc)[:200])

    async def _carry(self, outs: list[Output]) -> None:
        for o in outs:
            if isinstance(o, Broadcast):
                await self._broadcast(o.data)
            elif isinstance(o, Request):
                assert self._nursery is not None
                self._nursery.start_soon(self._request, o)
            elif isinstance(o, Dial):
                peers = self.transport.peers()
                # At max_peers, only our neighbours are dialled (lattice.topology).
                if self._nursery is not None and not any(getattr(p, "peer_id", None) == o.peer for p in peers) \
                        and (len(peers) < self.options.max_peers or o.peer in self._neighbours):
                    self._nursery.start_soon(self._dial, o.peer, o.addrs)
            elif isinstance(o, Follow):
                await self._follow(o.genesis)
            elif isinstance(o, Changed):
                obj = self.objects.get(o.genesis)
                if obj is not None:
                    await self._persist(obj)
            elif isinstance(o, Fetched):
                self._fetched(o)

    async def _request(self, o: Request) -> None:
        async with self._limiter:
            try:
                data: bytes | None = await self.transport.request(o.peer, o.data,
                                                                  timeout_s=self.options.request_timeout_s)
            except TransportError as exc:  # unreachable, timed out, broken: the core plans elsewhere
                log.info("want_failed", peer=o.peer, error=repr(exc)[:200])
                data = None
        self.bytes_fetched += len(data or b"")
        obj = self.objects.get(o.genesis) if o.genesis is not None else None
        async with self._host_lock(obj):
            outs = await self._call(self.core.on_response, o.ask_id, data, time.time())
            # Heads are persisted under the object's lock: they never go back.
            changed = [x for x in outs if isinstance(x, Changed)]
            for x in changed:
                target = self.objects.get(x.genesis)
                if target is not None:
                    await self._persist(target)
        await self._carry([x for x in outs if not isinstance(x, Changed)])

    @asynccontextmanager
    async def _host_lock(self, obj: Followed | None) -> AsyncIterator[None]:
        locked = getattr(self.objects, "locked", None)
        if obj is None or locked is None:
            yield
            return
        async with locked(obj):
            yield

    async def _persist(self, obj: Followed) -> None:
        """Peers' deltas advanced ``obj``: save its heads, wake its waiters (not a local change)."""
        await self.objects.save_heads(obj)
        self._notifying = True
        try:
            self.objects.notify(obj)
        finally:
            self._notifying = False

    async def _follow(self, genesis: CID) -> None:
        # Follow what the mesh shares (datasets of jobs, other nodes' objects).
        follow_async = getattr(self.objects, "follow_async", None)
        if follow_async is not None:
            obj = await follow_async("dataset", str(genesis), genesis=genesis)
        else:
            obj = self.objects.follow("dataset", str(genesis), genesis=genesis)
        await self._carry(await self._call(self.core.follow, obj.replica, time.time()))

    def _fetched(self, f: Fetched) -> None:
        for w in self._waiters:
            if w.remaining.intersection(f.abandoned):
                w.done.set()
            w.remaining.difference_update(f.done)
            if not w.remaining:
                w.done.set()
        if f.done:
            # Linked blocks arrived (task bodies, outputs): whoever waits on
            # the queue or the results looks again.
            self._notifying = True
            try:
                for obj in list(self.objects.objects.values()):
                    if obj.kind in ("queue", "results"):
                        self.objects.notify(obj)
            finally:
                self._notifying = False
