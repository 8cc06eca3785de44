"""The mesh: HPCP driven over a transport, presence, and block prefetch.

:class:`Mesh` connects the node's GOHOs to peers.  It does no protocol logic
of its own — :class:`lattice.hpcp.Syncer` decides what to send — it only moves
bytes (go-ds-crdt's broadcaster split):

* gossip (``Transport.broadcast``/``receive``): HPCP announcements and
  queries, and signed presence records (roles, inventory, API address);
* request/response (``Transport.request``): HPCP ``want`` → ``blocks``.

Besides the DAG, objects *link* to blocks that HPCP does not walk: task bodies
named in the queue, result outputs, engine signatures.  Every CID found in a
newly applied op is prefetched from the peer that sent the delta, so a runner
has the task body and a submitter has the output by the time they look.

Anti-entropy: every object is re-announced every ``announce_interval_s``, and
a node queries all objects when it starts and whenever a new peer appears.
Cancellation stops all loops; nothing here holds state that must survive.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from lattice import codec, hpcp
from lattice.cid import CID
from lattice.errors import BadInput
from lattice.goho import Change
from lattice.signing import verify_signature
from lattice.state import decode_value

from ..errors import IdentityError
from ..runtime.logs import get_logger
from ..store.objects import Followed, ObjectHost
from .identity import peer_id_from_public_key
from .ratelimit import TokenBucket

log = get_logger("meshd.mesh")


class Transport(Protocol):
    """What the mesh needs from the network (meshd.p2p implements it over libp2p)."""

    @property
    def peer_id(self) -> str: ...
    async def broadcast(self, data: bytes) -> None: ...
    async def receive(self) -> tuple[str, bytes]: ...
    def set_request_handler(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None: ...
    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes: ...
    def peers(self) -> list[Any]: ...


@dataclass(frozen=True)
class MeshOptions:
    """Mesh timing and limits.

    Attributes:
        announce_coalesce_s: Local changes within this window share one
            announcement (default 0.02 s) — keeps gossip far below the
            transport's message ceiling under load.
        announce_interval_s: Anti-entropy re-announcement period (5 s).
        presence_interval_s: Presence broadcast period (2 s); a peer unseen
            for 3 periods is no longer live.
        tick_s: How often unanswered wants are retried (0.5 s).
        request_timeout_s: Deadline of one block request (10 s).
        max_requests: Block requests in flight at once (16).
        prefetch_batch: CIDs per prefetch request (256).
        allow_peers: Membership allow-list (None: open mesh).  Anyone else's
            gossip and block requests are refused and counted.
        gossip_per_s: Per-peer gossip rate limit (token bucket, burst 2x).
        requests_per_s: Per-peer block-request rate limit (burst 2x).
    """

    announce_coalesce_s: float = 0.02
    announce_interval_s: float = 5.0
    presence_interval_s: float = 2.0
    tick_s: float = 0.5
    request_timeout_s: float = 10.0
    max_requests: int = 16
    prefetch_batch: int = 256
    allow_peers: frozenset[str] | None = None
    gossip_per_s: float = 500.0
    requests_per_s: float = 200.0

    def __post_init__(self) -> None:
        for name in ("announce_coalesce_s", "announce_interval_s", "presence_interval_s", "tick_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_requests < 1 or self.prefetch_batch < 1:
            raise ValueError("max_requests and prefetch_batch must be >= 1")


#: Times a prefetch that found no provider is retried, backing off 1, 2, 4 … 30 s (about 2.5 min in all).
PREFETCH_RETRIES = 8


@dataclass
class PeerState:
    peer_id: str
    addrs: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    inventory: dict[str, Any] = field(default_factory=dict)
    api: str | None = None
    last_seen: float = 0.0
    presence_seq: int = 0


@dataclass(frozen=True)
class MeshStatistics:
    peers: int
    live_runners: int
    announces_out: int
    gossip_in: int
    requests_out: int
    requests_in: int
    prefetched: int
    rejected: dict[str, int]


def rendezvous_rank(task: CID, peers: list[str]) -> list[str]:
    """Peers ordered by preference for ``task`` (highest random weight first).

    Every node computes the same order from the same live set, so most tasks
    are claimed first by one node and duplicate runs stay rare.
    """
    return sorted(peers, key=lambda p: hashlib.sha256(p.encode() + task.raw).digest(), reverse=True)


def _links(value: Any, out: list[CID], depth: int = 0) -> None:
    t = type(value)
    if t is CID:
        out.append(value)
    elif depth < 8 and t is dict:
        for v in value.values():
            _links(v, out, depth + 1)
    elif depth < 8 and t is list:
        for v in value:
            _links(v, out, depth + 1)


class Mesh:
    """HPCP over a transport for every object of an :class:`ObjectHost`."""

    def __init__(self, objects: ObjectHost, transport: Transport, *, roles: list[str], inventory: dict[str, Any],
                 api_url: Callable[[], str | None] = lambda: None, options: MeshOptions | None = None,
                 addrs: Callable[[], list[str]] = lambda: []) -> None:
        self.objects = objects
        self.store = objects.store
        self.transport = transport
        self.options = options or MeshOptions()
        self.roles = roles
        self.inventory = inventory
        self._api_url = api_url
        self._addrs = addrs
        self._dialing: dict[str, float] = {}
        self.syncers: dict[CID, hpcp.Syncer] = {}
        self.peers: dict[str, PeerState] = {}
        self._dirty: set[CID] = set()
        self._dirty_event = trio.Event()
        self._prefetch: dict[CID, str | None] = {}  # cid -> preferred peer
        self._prefetch_event = trio.Event()
        self._inflight_prefetch: set[CID] = set()
        self._last_sender: dict[CID, str] = {}
        self._limiter = trio.CapacityLimiter(self.options.max_requests)
        self._nursery: trio.Nursery | None = None
        self._presence_seq = 0
        self._stats = {"announces_out": 0, "gossip_in": 0, "requests_out": 0, "requests_in": 0, "prefetched": 0}
        self.rejected: dict[str, int] = {}
        self._merging = False
        self._gossip_bucket = TokenBucket(self.options.gossip_per_s)
        self._request_bucket = TokenBucket(self.options.requests_per_s)

    # -- public -----------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.transport.peer_id

    def live_runners(self) -> list[str]:
        """Peer ids (ours included when we run) that run tasks and were seen lately."""
        horizon = time.monotonic() - 3 * self.options.presence_interval_s
        live = [p.peer_id for p in self.peers.values() if p.last_seen >= horizon and "runner" in p.roles]
        if "runner" in self.roles:
            live.append(self.peer_id)
        return live

    def live_peers(self, role: str) -> list[str]:
        """Peer ids (ours included when we have ``role``) with ``role`` that were seen lately."""
        horizon = time.monotonic() - 3 * self.options.presence_interval_s
        live = [p.peer_id for p in self.peers.values() if p.last_seen >= horizon and role in p.roles]
        if role in self.roles:
            live.append(self.peer_id)
        return live

    def any_presence(self) -> bool:
        """Whether any peer's presence has arrived."""
        return any(p.last_seen for p in self.peers.values())

    def statistics(self) -> MeshStatistics:
        # HPCP rejections are counted per object by its syncer: sum them here
        # (copying each syncer's count over the last one lost all but one object's).
        rejected = dict(self.rejected)
        for syncer in self.syncers.values():
            for k, v in syncer.stats.rejected.items():
                rejected[f"hpcp_{k}"] = rejected.get(f"hpcp_{k}", 0) + v
        return MeshStatistics(len(self.peers), len(self.live_runners()), rejected=rejected, **self._stats)

    def peer_list(self) -> list[dict[str, Any]]:
        conn = {getattr(p, "peer_id", str(p)): p for p in self.transport.peers()}
        out = []
        for pid in sorted(set(conn) | set(self.peers)):
            st = self.peers.get(pid)
            info = conn.get(pid)
            heads = {}
            for g, s in self.syncers.items():
                h = s.peer_heads().get(pid)
                if h is not None:
                    heads[str(g)] = [str(c) for c in h]
            out.append({
                "peer_id": pid,
                "connected": pid in conn,
                "addresses": list(getattr(info, "addrs", []) or []),
                "roles": st.roles if st else [],
                "inventory": st.inventory if st else {},
                "api": st.api if st else None,
                "last_seen_s": round(time.monotonic() - st.last_seen, 1) if st and st.last_seen else None,
                "heads": heads,
            })
        return out

    def _connected_first(self, peers: list[str]) -> list[str]:
        connected = {getattr(p, "peer_id", None) for p in self.transport.peers()}
        return sorted(peers, key=lambda p: p not in connected)

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = 10.0, prefer: list[str] = ()) -> bool:
        """Fetch ``cids`` from peers into the store; True when all arrived.

        ``prefer`` names peers to ask first (e.g. the runner of a result).
        """
        want = [c for c in dict.fromkeys(cids) if not self.store.has(c)]
        if not want:
            return True
        known = [p for p in self.peers] or [getattr(p, "peer_id", str(p)) for p in self.transport.peers()]
        peers = [p for p in prefer if p != self.peer_id] + self._connected_first([p for p in known if p not in prefer])
        with trio.move_on_after(timeout_s):
            for peer in peers:
                await self._request_blocks(peer, want[: self.options.prefetch_batch * 4])
                want = [c for c in want if not self.store.has(c)]
                if not want:
                    return True
        return not want

    # -- wiring -------------------------------------------------------------------------

    def _syncer(self, obj: Followed) -> hpcp.Syncer:
        s = self.syncers.get(obj.genesis)
        if s is None:
            s = self.syncers[obj.genesis] = hpcp.Syncer(obj.replica, self.objects.signer)
            obj.replica.subscribe(lambda ch, g=obj.genesis: self._on_applied(g, ch))
        return s

    def _on_local_change(self, obj: Followed) -> None:
        self._syncer(obj)
        if not self._merging:
            self._dirty.add(obj.genesis)
            self._dirty_event.set()

    def _on_applied(self, genesis: CID, change: Change) -> None:
        sender = self._last_sender.get(genesis)
        found: list[tuple[CID, str | None]] = []

        def collect(value: Any) -> None:
            links: list[CID] = []
            _links(value, links)
            # A record written by a runner names it ("runner"/"by"): it surely
            # holds the blocks it links (its output), so ask it first.
            hint = None
            if type(value) is dict:
                for k in ("runner", "by"):
                    if isinstance(value.get(k), str) and value[k] in self.peers:
                        hint = value[k]
                        break
            found.extend((c, hint or sender) for c in links)

        for _, enc in change.adds:
            collect(decode_value(enc))
        state = self.objects.objects[genesis].replica.state if genesis in self.objects.objects else None
        if state is not None:
            for key in change.puts:
                collect(state.register(key))
        if not found:
            return
        added = False
        for c, peer in found:
            if c not in self._prefetch and c not in self._inflight_prefetch and c not in self.objects.objects and not self.store.has(c):
                self._prefetch[c] = peer
                added = True
        if added:
            self._prefetch_event.set()

    async def serve(self, *, task_status: trio.TaskStatus["Mesh"] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the mesh loops until cancelled."""
        for obj in self.objects.objects.values():
            self._syncer(obj)
        self.objects.on_change(self._on_local_change)
        self.transport.set_request_handler(self._serve_request)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._anti_entropy_loop)
            nursery.start_soon(self._presence_loop)
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._prefetch_loop)
            task_status.started(self)
            for obj in list(self.objects.objects.values()):
                await self._broadcast(self._syncer(obj).query())

    # -- loops ---------------------------------------------------------------------------

    async def _broadcast(self, data: bytes) -> None:
        await self.transport.broadcast(data)

    async def _announce_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event = trio.Event()
            await trio.sleep(self.options.announce_coalesce_s)  # coalesce a burst into one announcement
            dirty, self._dirty = self._dirty, set()
            for g in dirty:
                obj = self.objects.objects.get(g)
                if obj is not None:
                    await self._broadcast(self._syncer(obj).announce(time.time()))
                    self._stats["announces_out"] += 1

    async def _anti_entropy_loop(self) -> None:
        while True:
            await trio.sleep(self.options.announce_interval_s)
            for obj in list(self.objects.objects.values()):
                if obj.replica.heads:
                    await self._broadcast(self._syncer(obj).announce(time.time()))
                    self._stats["announces_out"] += 1

    async def _presence_loop(self) -> None:
        while True:
            await self._broadcast(self._presence())
            await trio.sleep(self.options.presence_interval_s)

    def _presence(self) -> bytes:
        self._presence_seq = max(self._presence_seq + 1, int(time.time() * 1000))
        body = {"t": "meshd/presence", "v": 1, "peer": self.peer_id, "roles": list(self.roles),
                "inv": {k: v for k, v in self.inventory.items() if isinstance(v, (str, int, bool, list))},
                "api": self._api_url() or "", "addrs": list(self._addrs())[:8], "seq": self._presence_seq,
                "a": self.objects.signer.public}
        body["s"] = self.objects.signer.sign(codec.encode(body))
        return codec.encode(body)

    async def _tick_loop(self) -> None:
        while True:
            await trio.sleep(self.options.tick_s)
            now = time.time()
            for g, s in list(self.syncers.items()):
                if s.syncing:
                    await self._dispatch(g, s.tick(now))

    def _reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1

    async def _receive_loop(self) -> None:
        while True:
            peer, data = await self.transport.receive()
            self._stats["gossip_in"] += 1
            if not self._admit(peer, self._gossip_bucket):
                continue
            try:
                obj = codec.decode_untrusted(data, max_size=hpcp.MAX_MESSAGE)
            except BadInput:
                self._reject("bad_gossip")
                continue
            if type(obj) is not dict:
                self._reject("bad_gossip")
                continue
            t = obj.get("t")
            if t == "meshd/presence":
                self._on_presence_untrusted(peer, obj)
                continue
            g = obj.get("g")
            if t not in ("hpcp/announce", "hpcp/query") or type(g) is not CID:
                self._reject("bad_gossip")
                continue
            followed = self.objects.get(g)
            if followed is None:
                if t != "hpcp/announce":
                    continue
                # Follow what the mesh shares (datasets of jobs, other nodes' objects).
                followed = self.objects.follow("dataset", str(g), genesis=g)
            syncer = self._syncer(followed)
            known = self.peers.get(peer)
            if known is None:
                self.peers[peer] = PeerState(peer)
            if t == "hpcp/announce":
                self._last_sender[g] = peer
            outs = syncer.receive_untrusted(peer, data, time.time())
            await self._dispatch(g, outs)

    def _on_presence_untrusted(self, peer: str, obj: dict[str, Any]) -> None:
        try:
            pk, sig = obj["a"], obj["s"]
            unsigned = {k: v for k, v in obj.items() if k != "s"}
            if obj.get("v") != 1 or obj.get("peer") != peer or peer_id_from_public_key(pk) != peer:
                raise ValueError("presence does not come from its signer")
            if not verify_signature(pk, sig, codec.encode(unsigned)):
                raise ValueError("bad presence signature")
            st = self.peers.setdefault(peer, PeerState(peer))
            if type(obj.get("seq")) is not int or obj["seq"] <= st.presence_seq:
                self._reject("presence_replayed")
                return
            first = st.last_seen == 0.0
            st.presence_seq = obj["seq"]
            st.roles = [r for r in obj.get("roles", []) if isinstance(r, str)][:16]
            # Both are served as JSON by GET /v1/peers: a peer's bytes or links must not break it.
            st.inventory = codec.to_json(obj["inv"]) if type(obj.get("inv")) is dict else {}
            st.api = obj.get("api") if type(obj.get("api")) is str and obj.get("api") else None
            addrs = obj.get("addrs")
            st.addrs = [a for a in addrs if type(a) is str and a.startswith("/")][:8] if type(addrs) is list else []
            st.last_seen = time.monotonic()
        except (KeyError, TypeError, ValueError, BadInput, IdentityError):  # IdentityError: a key not 32 bytes
            self._reject("bad_presence")
            return
        if first and self._nursery is not None:
            # A new peer: ask it (and everyone) for the newest heads of our objects.
            self._nursery.start_soon(self._query_all)
        self._maybe_connect(peer)

    def _maybe_connect(self, peer: str) -> None:
        """Dial a peer we hear about through gossip but are not connected to.

        Gossip reaches us through relays, but block requests need a direct
        stream; small meshes simply become fully connected.  At most one dial
        per peer per 10 s.
        """
        st = self.peers.get(peer)
        if st is None or not st.addrs or self._nursery is None:
            return
        if any(getattr(p, "peer_id", None) == peer for p in self.transport.peers()):
            return
        now = time.monotonic()
        if now - self._dialing.get(peer, -1e9) < 10.0:
            return
        self._dialing[peer] = now
        self._nursery.start_soon(self._dial, peer, list(st.addrs))

    async def _dial(self, peer: str, addrs: list[str]) -> None:
        connect = getattr(self.transport, "connect", None)
        if connect is None:
            return
        for addr in addrs:
            full = addr if "/p2p/" in addr else f"{addr}/p2p/{peer}"
            try:
                with trio.move_on_after(5):
                    await connect(full)
                    log.info("dialed_peer", peer=peer, addr=full)
                    return
            except Exception as exc:  # noqa: BLE001 - try the next address
                log.info("dial_failed", peer=peer, addr=full, error=repr(exc)[:200])

    async def query(self, obj: Followed) -> None:
        """Ask every peer for the newest heads of ``obj`` (HPCP ``?<origin>``)."""
        await self._broadcast(self._syncer(obj).query())

    async def _query_all(self) -> None:
        for obj in list(self.objects.objects.values()):
            await self._broadcast(self._syncer(obj).query())

    async def _dispatch(self, genesis: CID, outs: list[hpcp.Outgoing]) -> None:
        for o in outs:
            if o.to is None:
                await self._broadcast(o.data)
                continue
            kind = codec.decode_trusted(o.data).get("t")
            if kind == "hpcp/want":
                assert self._nursery is not None
                self._nursery.start_soon(self._want, genesis, o.to, o.data)
            else:  # an announcement answering a query: gossip it, everyone benefits
                await self._broadcast(o.data)

    async def _want(self, genesis: CID, peer: str, data: bytes) -> None:
        async with self._limiter:
            self._stats["requests_out"] += 1
            try:
                resp = await self.transport.request(peer, data, timeout_s=self.options.request_timeout_s)
            except Exception as exc:  # noqa: BLE001 - any transport failure: re-plan elsewhere
                log.info("want_failed", peer=peer, error=repr(exc)[:200])
                syncer = self.syncers.get(genesis)
                if syncer is not None:
                    await self._dispatch(genesis, syncer.request_failed(peer, time.time()))
                self._maybe_connect(peer)
                return
        syncer = self.syncers.get(genesis)
        obj = self.objects.get(genesis)
        if syncer is None or obj is None:
            return
        before = obj.replica.version
        self._last_sender[genesis] = peer
        self._merging = True  # our listener must not re-announce mid-merge
        try:
            outs = syncer.receive_untrusted(peer, resp, time.time())
            if obj.replica.version != before:
                self.objects.changed(obj)  # persist heads, wake waiters (runner, evaluator, API)
        finally:
            self._merging = False
        if obj.replica.version != before and not syncer.syncing:
            self._dirty.add(genesis)  # publish the merged heads once the fetch is complete
            self._dirty_event.set()
        await self._dispatch(genesis, outs)

    def _admit(self, peer: str, bucket: TokenBucket) -> bool:
        allow = self.options.allow_peers
        if allow is not None and peer not in allow:
            self._reject("not_member")
            return False
        if not bucket.allow(peer):
            self._reject("rate_limited")
            return False
        return True

    async def _serve_request(self, peer: str, data: bytes) -> bytes:
        self._stats["requests_in"] += 1
        if not self._admit(peer, self._request_bucket):
            return hpcp.encode_blocks([], [])
        try:
            msg = hpcp.decode_message_untrusted(data, verify=False)
        except BadInput:
            self._reject("bad_request")
            return hpcp.encode_blocks([], [])
        if msg["t"] != "hpcp/want":
            self._reject("bad_request")
            return hpcp.encode_blocks([], [])
        return await trio.to_thread.run_sync(hpcp.serve_want, self.store, msg["cids"][:1024], 4 * 1024 * 1024)

    # -- prefetch -------------------------------------------------------------------------

    async def _prefetch_loop(self) -> None:
        while True:
            await self._prefetch_event.wait()
            self._prefetch_event = trio.Event()
            while self._prefetch:
                by_peer: dict[str | None, list[CID]] = {}
                for c, p in list(self._prefetch.items()):
                    lst = by_peer.setdefault(p, [])
                    if len(lst) < self.options.prefetch_batch:
                        lst.append(c)
                        del self._prefetch[c]
                        self._inflight_prefetch.add(c)
                assert self._nursery is not None
                for p, cids in by_peer.items():
                    self._nursery.start_soon(self._prefetch_batch, p, cids)
                await trio.sleep(0)

    async def _prefetch_batch(self, peer: str | None, cids: list[CID], attempt: int = 0) -> None:
        try:
            candidates = ([peer] if peer else []) + self._connected_first([p for p in self.peers if p != peer])
            for p in candidates[:6]:
                await self._request_blocks(p, cids)
                cids = [c for c in cids if not self.store.has(c)]
                if not cids:
                    break
        finally:
            self._inflight_prefetch.difference_update(cids)
        if cids and attempt < PREFETCH_RETRIES:
            # Nobody answered (a request timed out while a connection was still
            # settling, the holder was busy): ask again later instead of giving
            # up, since a runner waits for a task body through this prefetch only.
            await trio.sleep(min(30.0, 2.0 ** attempt))
            cids = [c for c in cids if c not in self._prefetch and c not in self._inflight_prefetch
                    and not self.store.has(c)]
            if cids:
                self._inflight_prefetch.update(cids)
                await self._prefetch_batch(peer, cids, attempt + 1)

    async def _request_blocks(self, peer: str, cids: list[CID]) -> None:
        async with self._limiter:
            self._stats["requests_out"] += 1
            try:
                resp = await self.transport.request(peer, hpcp.encode_want(cids), timeout_s=self.options.request_timeout_s)
                msg = hpcp.decode_message_untrusted(resp, verify=False)
            except BadInput:
                self._reject("bad_blocks")
                return
            except Exception as exc:  # noqa: BLE001 - unreachable peer: try the next one
                log.info("prefetch_failed", peer=peer, error=repr(exc)[:200])
                self._maybe_connect(peer)
                return
        if msg["t"] != "hpcp/blocks":
            self._reject("bad_blocks")
            return
        wanted = set(cids)
        good = [(c, d) for c, d in msg["blocks"] if c in wanted and c.verify(d)]
        if len(good) != len([1 for c, _ in msg["blocks"] if c in wanted]):
            self._reject("block_hash_mismatch")
        if good:
            await trio.to_thread.run_sync(self.store.put_many, good)
            self._stats["prefetched"] += len(good)
            for obj in self._waiting_objects():
                ev, obj.changed = obj.changed, trio.Event()
                ev.set()

    def _waiting_objects(self) -> list[Followed]:
        node_objs = self.objects.objects
        return [o for o in node_objs.values() if o.kind in ("queue", "results")]


