"""``meshd run``: open the home, compose the node and serve until a signal.

Start-up order (each step a trio service started with ``nursery.start``, so a
step that fails stops the ones before it):

1. hold the home's single-instance lock;
2. open the block store (embedded sqlite, or IPFS when ``[ipfs] api`` is set)
   and the heads database, and replay every followed object;
3. start the object host (group commit), the engine host, the HTTP API, and
   the roles named in ``[node] roles``, then the storage budget's collector
   (:mod:`meshd.store.collector`; it only reports when ``[store] max_bytes``
   is 0).

SIGTERM or SIGINT, from the start of start-up on, cancels the node: in-flight
engine runs are killed, a run that already finished is still recorded, the
API stops, and whatever was acknowledged is already on disk (see
:mod:`meshd.store.objects`).  A stop that takes longer than ``[node]
shutdown_grace_s``, or a second signal, kills the engines and exits hard
(:mod:`meshd.runtime.shutdown`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from engines.auth import AuthPolicy
from engines.cgroup import CgroupOptions, EngineCgroup
from engines.cgroup import unavailable as cgroup_unavailable
from engines.host import EngineHost, HostOptions
from engines.ledger import LEDGER_NAME, kill_recorded
from engines.manifest import Resources
from engines.native import NativeOptions
from engines.pool import PoolOptions
from lattice import queue
from lattice.cid import CID
from lattice.diskstore import DiskBlockStore, DiskStoreOptions
from lattice.errors import StoreError
from lattice.goho import ReplicaOptions
from lattice.signing import Signer, peer_id_of

from . import __version__
from .api import engines as api_engines
from .api import lifecycle as api_lifecycle
from .api import lineage as api_lineage
from .api import mesh as api_mesh
from .api import metrics as api_metrics
from .api import server as httpserver
from .api import store as api_store
from .api.app import create_app
from .api.engine_admin import EngineAdmin
from .errors import ConfigError, MeshdError
from .home import Home
from .node import QUEUE, Node, node_inventory
from .owner import api as owner_api
from .owner import service as owner_service
from .p2p import P2POptions, Transport
from .p2p.known_peers import FILE_NAME as KNOWN_PEERS_FILE
from .p2p.known_peers import serve_known_peers
from .p2p.ipfs_swarm import IpfsSwarm, IpfsSwarmOptions, PeerOffer
from .p2p.mesh import Mesh, MeshOptions
from .p2p.secret import SealedTransport
from .roles import ALWAYS_ROUTED, RoleContext, role_module
from .runtime.docker_backend import DockerBackendOptions, serve_docker
from .runtime.logs import demote, get_logger
from .runtime.shutdown import Shutdown, ShutdownOptions
from .runtime.loopwatch import LoopWatch
from .runtime.supervisor import Health, supervise
from .store.heads import HeadsStore
from .store.collector import Collector
from .store.objects import ObjectHost
from .store.usage import UsageTracking
from .store.quarantine import Quarantine

log = get_logger("meshd.daemon")

#: py-libp2p loggers that report, at error or warning level, what is routine in a
#: mesh whose members come and go: a dial refused because the peer stopped
#: (``transport.tcp.tcp``, ``network.swarm``), a stream to a peer that went away
#: (``host.basic_host``, ``protocol_muxer.multiselect_client``,
#: ``stream_muxer.yamux.yamux``).  The mesh logs each such event once, at info,
#: as its own (``dial_failed``, ``want_failed``, ``peer_suspected``), and a crashed
#: peer cost every node connected to it an error line per redial (for up to 10 minutes).
#: They are logged at debug instead, so what operators see at error level is real.
ROUTINE_LIBP2P_LOGGERS = (
    "libp2p.transport.tcp.tcp",
    "libp2p.network.swarm",
    "libp2p.host.basic_host",
    "libp2p.protocol_muxer.multiselect_client",
    "libp2p.stream_muxer.yamux.yamux",
)


def _open_store(home: Home, config: Any) -> Any:
    if config.ipfs.api:
        from .store.ipfs import IpfsBlockStore, IpfsOptions

        return IpfsBlockStore.open(IpfsOptions(api=config.ipfs.api, retries=3))
    # synchronous=normal in WAL mode: a committed write survives a process
    # crash (SIGKILL) — what "accepted work is never lost" needs — at a
    # fraction of the cost of an fsync per transaction.  A power loss (not a
    # process crash) may drop the last acknowledged transactions: the
    # documented trade-off (docs/operations.md).
    return DiskBlockStore.open(home.blocks_dir / "blocks.db", DiskStoreOptions(synchronous="normal"))


def _ipfs_offers(mesh: Mesh) -> dict[str, PeerOffer]:
    """Live peers whose presence offers IPFS addresses, with their meshd addresses."""
    peers = mesh.peers
    out = {}
    for p in peers.live(time.time()):
        ipfs = peers.ipfs_addrs(p)
        if ipfs and p != mesh.peer_id:
            out[p] = PeerOffer(tuple(peers.addrs(p)), tuple(ipfs))
    return out


def _policy(config: Any, own_key: bytes) -> AuthPolicy:
    keys = {own_key} | {bytes.fromhex(k) for k in config.engines.trusted_publishers}
    allow = {CID.parse_untrusted(c) for c in config.engines.allow}
    return AuthPolicy(trusted_publishers=frozenset(keys), allow_cids=frozenset(allow))


def _native_options(home: Home, config: Any, cgroup_procs: str = "") -> NativeOptions:
    """The engine sandbox: the home hidden from every jail, the configured
    interpreters' installations visible (read-only), the operator's two switches,
    and the engines' cgroup (``[owner]`` caps) when there is one."""
    prefixes = []
    for program in config.engines.interpreters.values():
        real = os.path.realpath(program)
        # Only an installation laid out as <prefix>/bin/<program> brings its
        # prefix (its libraries); any other program is bound alone (the jail
        # binds the program it runs), so that an interpreter kept in, say,
        # ~/tools does not show the whole of ~ to every engine.
        if os.path.basename(os.path.dirname(real)) != "bin":
            continue
        prefix = os.path.dirname(os.path.dirname(real))
        if prefix not in ("/", "/usr", "/usr/local"):
            prefixes.append(prefix)
    return NativeOptions(weak_sandbox=config.runner.weak_sandbox, isolate_network=not config.runner.engine_network,
                         hide=(str(home.path.resolve()),), ro_paths=tuple(dict.fromkeys(prefixes)),
                         cgroup_procs=cgroup_procs)


def _engine_cgroup(owner: Any) -> EngineCgroup | None:
    """The engines' cgroup v2 group for ``[owner] engine_cpu_pct`` / ``engine_memory_headroom_mb``;
    None when neither is asked for, or (logged with the reason) when this machine cannot."""
    options = CgroupOptions(cpu_pct=owner.engine_cpu_pct, memory_headroom_mb=owner.engine_memory_headroom_mb)
    if not options.wanted:
        return None
    reason = cgroup_unavailable(options)
    if reason is None:
        try:
            group = EngineCgroup.create(options)
        except OSError as exc:
            reason = f"cannot set up the engines' cgroup: {exc}"
        else:
            log.info("engine_cgroup", path=str(group.path), cpu_pct=options.cpu_pct,
                     memory_max=group.memory_max or 0)
            return group
    log.warning("engine_cgroup_unavailable", reason=reason)
    return None


def _engine_host(home: Home, config: Any, store: Any, signer: Signer, docker: Any,
                 cgroup: EngineCgroup | None = None) -> EngineHost:
    """The engine host (no I/O): native cold and warm runners, and ``docker`` (or None)."""
    native = _native_options(home, config, cgroup.procs if cgroup is not None else "")
    return EngineHost(
        store,
        HostOptions(cache_dir=str(home.path / "engines"), native=native,
                    ledger_path=str(home.path / LEDGER_NAME),
                    interpreters={"python3": sys.executable, "python": sys.executable,
                                  **dict(config.engines.interpreters)},
                    pool=PoolOptions(workers=max(1, min(config.runner.slots, 4))), warm_default=config.runner.warm,
                    max_resources=Resources(cpu_s=3600, memory_mb=65536, timeout_s=config.runner.task_timeout_s,
                                            nofile=4096)),
        _policy(config, signer.public),
        docker=docker,
    )


async def serve_node(home: Home, config: Any, *, shutdown: Shutdown | None = None,
                     task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
    """Compose and serve one node until cancelled.

    ``shutdown`` (when given) is told which engine host a forced stop must
    clean up after.  Cancellation stops every service; see :mod:`meshd.runtime.shutdown`.
    """
    identity = home.load_identity()
    signer = Signer.from_seed(identity.seed)
    store = _open_store(home, config)
    if config.store.max_bytes:
        # The storage budget's LRU clock (in memory); without a budget nothing wraps the store.
        store = UsageTracking(store)
    heads = HeadsStore.open(home.path / "heads.db")
    quarantine = Quarantine.open(home.path / "rejected.db")
    try:
        replica_options = None
        if config.p2p.allow_peers:
            # Allow-list mode: deltas (which peers relay on behalf of their
            # authors) are accepted only from members, whoever relays them.
            members = frozenset(config.p2p.allow_peers) | {identity.peer_id}
            replica_options = ReplicaOptions(accept_author=lambda pk: peer_id_of(pk) in members)
        objects = ObjectHost(store, heads, signer, replica_options=replica_options,
                             checks={QUEUE: queue.check_delta})
        t0 = time.perf_counter()
        objects.load()
        health = Health()
        # Built bottom-up, nothing assigned after construction: the transport
        # and the mesh pump (when p2p is on) before the node that uses them.
        # The API server is built before the node too: the node and the mesh
        # report its URL (a provider, read when asked), and the app, which is
        # built from the node, is handed to it when it is served.
        api = httpserver.ApiServer(home.api_options(config), home=home.path)
        inventory = node_inventory(config)
        transport: Transport | None = None
        mesh: Mesh | None = None
        swarm: IpfsSwarm | None = None
        if config.p2p.listen:
            transport = Transport(identity.seed, P2POptions(
                listen=tuple(config.p2p.listen), bootstrap=tuple(config.p2p.bootstrap),
                announce=tuple(config.p2p.announce), no_announce=tuple(config.p2p.no_announce),
                topic=f"meshd/{config.node.mesh}/hpcp/2", mdns=config.p2p.mdns,
                mdns_interfaces=tuple(config.p2p.mdns_interfaces)))
            # A sealed transport counts what it refuses itself; the mesh drains
            # those counts (meshd.p2p.mesh.Refusing), so it needs no hook back.
            wire: Any = SealedTransport(transport, config.p2p.secret) if config.p2p.secret else transport
            allow = frozenset(config.p2p.allow_peers) | {identity.peer_id} if config.p2p.allow_peers else None
            if config.ipfs.api and not config.p2p.secret:
                # IPFS stores are connected to each other (bitswap), except in a
                # private mesh: its secret cannot seal bitswap (docs/security.md).
                swarm = IpfsSwarm(store, own_addrs=transport.listen_addrs,
                                  peers=lambda: _ipfs_offers(mesh) if mesh is not None else {},
                                  options=IpfsSwarmOptions(no_announce=tuple(config.p2p.no_announce)))
            mesh = Mesh(objects, wire, roles=list(config.node.roles), inventory=inventory,
                        api_url=api.url, addrs=transport.listen_addrs,
                        ipfs_addrs=swarm.offered if swarm is not None else list,
                        options=MeshOptions(allow_peers=allow, gossip_per_s=config.p2p.gossip_per_s,
                                            requests_per_s=config.p2p.requests_per_s,
                                            max_peers=config.p2p.max_peers))
        # Counts on the node (the lambda runs only once serving, after ``node`` exists);
        # the node asks it whether this process was stopped (Node.stalled).
        watch = LoopWatch(on_stall=lambda _late: node.count("loop_stalls"))
        node = Node(objects=objects, peer_id=identity.peer_id, identity_seed=identity.seed, config=config,
                    quarantine=quarantine, health=health, mesh=mesh, inventory=inventory, api_url=api.url,
                    p2p_addrs=transport.listen_addrs if transport is not None else list, stalled=watch.stalled)
        log.info("node_loaded", peer_id=node.peer_id, objects=len(objects.objects),
                 tasks=len(node.queue), seconds=round(time.perf_counter() - t0, 3))
        # Engines a previous daemon on this home started and could not clean
        # up (it was SIGKILLed, or crashed): killed before any engine starts.
        orphans = kill_recorded(home.path / LEDGER_NAME)
        if orphans:
            log.warning("orphaned_engines_killed", engine_groups=",".join(map(str, orphans)))
        async with trio.open_nursery() as nursery:
            await nursery.start(watch.serve)
            await nursery.start(objects.serve)
            await nursery.start(node.serve)  # the node's object listener lives as long as this
            # [engines/docker] the Docker backend (None, logged, when off or
            # unreachable) is served first: the engine host is built with it.
            cpu_pct = config.owner.engine_cpu_pct
            docker = await nursery.start(serve_docker, DockerBackendOptions(
                host=config.docker.host, task_timeout_s=config.runner.task_timeout_s,
                owner=hashlib.sha256(str(home.path.resolve()).encode()).hexdigest()[:16],
                max_cpus=max(0.01, (os.cpu_count() or 1) * cpu_pct / 100) if cpu_pct > 0 else None))
            # [owner] engine caps: one cgroup v2 group for every native engine, where writable.
            cgroup = await trio.to_thread.run_sync(_engine_cgroup, config.owner)
            if cgroup is not None:
                await nursery.start(cgroup.serve)
            host = _engine_host(home, config, store, signer, docker, cgroup)
            if shutdown is not None:
                shutdown.own(host)
            await nursery.start(host.serve)
            if transport is not None and mesh is not None:
                await nursery.start(transport.serve)
                await nursery.start(mesh.serve)
                # The members it last knew: a restart whose bootstrap peers died rejoins through them.
                await nursery.start(partial(serve_known_peers, home.path / KNOWN_PEERS_FILE, me=identity.peer_id,
                                            known=mesh.known_peers, dial=mesh.dial))
                log.info("p2p_listening", addresses=",".join(node.p2p_addrs))
                if swarm is not None:
                    await nursery.start(swarm.serve)
                    log.info("ipfs_swarm_offered", addresses=",".join(swarm.offered()))
            # ``started`` is the registry of running roles: the routes below
            # look a role up there per request (404/503 until it has started).
            started: dict[str, Any] = {}
            ctx = RoleContext(node=node, host=host, config=config, home=home, mesh=mesh, roles=started)
            roles = []
            for name in config.node.roles:
                mod = role_module(name)
                if mod is None and name != "manager":
                    raise ConfigError(f"[node] roles: this build has no {name!r} role")
                if mod is not None:
                    roles.append((name, mod.create(ctx)))
            # GET /metrics reads the components at scrape time; its run
            # tracker follows the queue from now on.
            api_rejections: dict[str, int] = {}
            # [store] the storage budget (started after the roles: it reads the archivist's pins).
            collector = Collector(node, store, config, started)
            metrics = await nursery.start(api_metrics.NodeMetrics(node, started, api_rejections,
                                                                  store_budget=collector).serve)
            # The lifecycle router goes first: its /v1/results/stream must win over /v1/results/{task_cid}.
            routers = [api_lifecycle.router(node), api_mesh.router(node), api_metrics.router(metrics),
                       api_store.router(collector)]
            for name in dict.fromkeys([*config.node.roles, *ALWAYS_ROUTED]):
                mod = role_module(name)
                if mod is not None and hasattr(mod, "router"):
                    routers.append(mod.router(ctx))
            # [engines/docker] engine admin routes, and the streamed image upload outside the body limit.
            admin = EngineAdmin(node, host, home, max_image_bytes=config.docker.max_image_mb * 1024 * 1024)
            routers.append(api_engines.router(admin))
            routers.append(owner_api.router(ctx))  # /v1/owner, /v1/node/drain, /v1/node/resume
            routers.append(api_lineage.router(ctx))  # GET /v1/explain/{cid}
            app = create_app(node, home.api_options(config), version=__version__, routers=routers,
                             rejections=api_rejections)
            app = api_engines.with_docker_upload(app, admin, home.api_options(config))
            bound = await nursery.start(api.serve, app)
            for name, role in roles:
                # Supervised: a role that fails is restarted with backoff (and
                # counted in /v1/node health) instead of stopping the daemon.
                await nursery.start(supervise, name, role.serve, health)
                started[name] = role
            await nursery.start(collector.serve)
            log.info("node_ready", peer_id=node.peer_id, api=bound.url, roles=",".join(config.node.roles))
            if "runner" in started:
                # [owner] the owner policy closes the runner's gate and stops its engines.
                owner = owner_service.from_config(config.owner, started["runner"], host)
                await nursery.start(owner.serve)
                started["owner"] = owner
            if shutdown is not None and "runner" in started:
                # From now on the first SIGTERM drains before the node stops.
                stop = trio.Event()
                shutdown.divert(stop.set)
                nursery.start_soon(_drain_on_signal, stop, started["runner"], mesh, config.runner.drain_deadline_s,
                                   nursery.cancel_scope)
            task_status.started(node)
    finally:
        quarantine.close()
        heads.close()
        store.close()


#: Beyond ``[runner] drain_deadline_s``: time for the release records to be
#: committed and fetched by peers before the node stops.
_DRAIN_SLACK_S = 2.0


async def _drain_on_signal(stop: trio.Event, runner: Any, mesh: Mesh | None, deadline_s: float,
                           scope: trio.CancelScope) -> None:
    """On the first stop signal: drain (release claims, let running tasks
    finish for ``deadline_s``, vacate the rest), give peers a moment to fetch
    the release records, then cancel the node.  Bounded by ``deadline_s +
    _DRAIN_SLACK_S`` whatever happens."""
    await stop.wait()
    with trio.move_on_after(deadline_s + _DRAIN_SLACK_S):
        released = runner.gate.released
        served = mesh.bytes_served if mesh is not None else 0
        await runner.drain(deadline_s, reason="node stopping")
        if mesh is not None and runner.gate.released > released and len(mesh.live_peers("runner")) > 1:
            # Peers fetch the release delta from us (it is announced at
            # once): wait for them to ask, briefly.
            with trio.move_on_after(1.0):
                while mesh.bytes_served == served:
                    await trio.sleep(0.02)
            await trio.sleep(0.1)  # the rest of that answer
    scope.cancel()


async def _main(home: Home, config: Any, shutdown: Shutdown) -> int:
    """Serve until the first stop signal cancels the node (start-up included)."""
    with trio.CancelScope() as scope:
        shutdown.attach(scope)
        await serve_node(home, config, shutdown=shutdown)
    return 0


def run(home_path: Path, overrides: dict[str, Any] | None = None) -> int:
    """Run the daemon in the foreground; returns the exit code."""
    home = Home(home_path)
    home.require_initialised()
    config = home.load_config(overrides or {})
    demote(ROUTINE_LIBP2P_LOGGERS)
    for name in config.node.roles:
        if name != "manager" and role_module(name) is None:
            raise ConfigError(f"[node] roles: this build has no {name!r} role")
    # Installed before start-up: one SIGTERM stops the daemon whatever it is
    # doing, within [node] shutdown_grace_s, or forces (see meshd.runtime.shutdown).
    shutdown = Shutdown(ShutdownOptions(grace_s=config.node.shutdown_grace_s,
                                        drain_s=config.runner.drain_deadline_s + _DRAIN_SLACK_S))
    with home.lock():
        shutdown.install()
        try:
            return trio.run(_main, home, config, shutdown)
        except KeyboardInterrupt:
            return 130
        except (OSError, MeshdError, BaseExceptionGroup) as exc:
            # trio wraps start-up failures (a port in use, an unreachable IPFS
            # node) in exception groups: report the first leaf, no traceback.
            leaf = _first_leaf(exc)
            if not isinstance(leaf, (OSError, MeshdError, StoreError)):
                raise
            print(f"error: {leaf}", file=sys.stderr)
            return 1
        finally:
            shutdown.restore()
            # Cancellation killed every engine; anything still here (a group
            # that could not be reaped in time) is killed before we go.
            shutdown.kill_engines_left()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
