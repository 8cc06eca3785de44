"""The node: one meshd's GOHOs, block store, engines and roles, behind the API.

:class:`Node` implements :class:`meshd.api.app.NodeService`.  It follows three
well-known objects per mesh — the *queue*, the *results* and the *engine
registry*, whose genesis CIDs derive from the mesh name so every member
agrees on them without talking — plus every dataset it creates or sees.

Peers plug in through :meth:`ObjectHost.subscribe` (announce after a local
commit) and ``Replica.receive_untrusted`` (blocks from the mesh); nothing in
this module assumes it is alone.

Building a :class:`Node` registers nothing: its views pull replica changes
when read, and :meth:`Node.serve` (started by the composition root) holds
its one object listener for as long as it runs.  Store I/O on the API paths
runs in worker threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import trio

from lattice import codec, dataset, queue, results, task
from lattice.checkpoints import CheckpointView
from lattice.cid import CID
from lattice.errors import BadCID, BadInput, BlockNotFound
from lattice.trust import TrustOptions, TrustView

from . import __version__
from .api.engine_registry import add_engine, list_engines
from .api.task_status import ended_reason, read_outputs, result_json, status_json
from .errors import BadRequest, NotFound
from .roles.images import RegistryView, resolve_image
from .roles.verify import ReplicationPolicy
from .runtime.inventory import inventory as inventory  # re-exported: meshd.node.inventory
from .runtime.inventory import node_inventory
from .store.objects import Followed, ObjectHost
from .store.peerblocks import PeerBlocks
from .store.quarantine import Quarantine

if TYPE_CHECKING:
    from .p2p.mesh import Mesh

#: Kinds of well-known objects.
QUEUE, RESULTS, ENGINES, VERDICTS, DATASET = "queue", "results", "engines", "verdicts", "dataset"


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_cid(text: str, what: str = "CID") -> CID:
    try:
        return CID.parse_untrusted(text)
    except BadCID as exc:
        raise BadRequest(f"invalid {what} {text[:80]!r}: {exc}", code="bad_cid") from None


class SubmitClaims(Protocol):
    """A local runner that runs some just-submitted tasks itself (the Runner)."""

    def claims_at_submit(self, tasks: list[CID], now: int) -> list[list[Any]]: ...

    def adopt_submitted(self, ops: list[list[Any]]) -> None: ...

    def drop_submitted(self, ops: list[list[Any]]) -> None: ...


class Node:
    """A meshd node's state and the Manager protocol over it.

    Everything it uses is handed to the constructor: the composition root
    builds bottom-up (object host, transport and mesh, then the node).  Two
    facts are known only once a service listens, so they come as providers
    read when asked: ``api_url`` (the HTTP server serves an app built from
    this node, so it starts after it) and ``p2p_addrs`` (the transport's
    real ports).

    Args:
        objects: The object host (replicas, commits, change notifications).
        peer_id: This node's peer id.
        identity_seed: Its Ed25519 seed (engine signatures).
        config: The validated configuration.
        started: Start time (epoch seconds; now by default).
        quarantine: Peer blocks rejected for good (in memory by default).
        health: The roles' supervisor health (``meshd.runtime.supervisor.Health``).
        mesh: The mesh pump, or None when this node has no p2p layer.
        inventory: What this node offers (:func:`node_inventory` by default).
        api_url: This node's API URL while it listens, else None.
        p2p_addrs: This node's p2p listen multiaddrs.
    """

    def __init__(self, *, objects: ObjectHost, peer_id: str, identity_seed: bytes, config: Any,
                 started: float | None = None, quarantine: Quarantine | None = None,
                 health: Any = None, mesh: Mesh | None = None, inventory: dict[str, Any] | None = None,
                 api_url: Callable[[], str | None] = lambda: None,
                 p2p_addrs: Callable[[], list[str]] = list,
                 stalled: Callable[[float, float], bool] = lambda late_s, within_s: False) -> None:
        self.objects = objects
        self.store = objects.store
        self.peer_id = peer_id
        self._seed = identity_seed
        self.config = config
        self.started = started or time.time()
        self.inventory = inventory if inventory is not None else node_inventory(config)
        self.counters: dict[str, int] = {}
        # Peer blocks that failed validation (persistent when the daemon
        # passes one opened on the home), and validated task bodies by CID.
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self.role_health = health  # meshd.runtime.supervisor.Health once the daemon supervises roles
        self._api_url = api_url
        self._p2p_addrs = p2p_addrs
        self._stalled = stalled
        self.mesh = mesh
        self._submit_claims: SubmitClaims | None = None  # this node's runner while it serves
        mesh = config.node.mesh
        self.queue_obj = objects.follow(QUEUE, mesh)
        self.results_obj = objects.follow(RESULTS, mesh)
        self.engines_obj = objects.follow(ENGINES, mesh)
        self.verdicts_obj = objects.follow(VERDICTS, mesh)
        vc = config.verify
        self.results_view = results.ResultsView(self.results_obj.replica, own_key=objects.signer.public)
        # The verifier model (lattice.trust): the mesh's verifier keys, or this node alone.
        self.trust = TrustView(self.verdicts_obj.replica, TrustOptions(
            trust_after=vc.trust_after, ban_after=vc.ban_after,
            verifiers=frozenset(vc.keys or (peer_id,))), evidence=self.results_view)
        self.policy = ReplicationPolicy(self, self.trust, vc)  # [verify], validated once by the config
        self.queue = queue.QueueView(self.queue_obj.replica, banned=self.trust.banned, wanted=self.policy.wanted,
                                     clock=now_ms)
        self.checkpoints = CheckpointView(self.queue_obj.replica, self.queue)
        # Task bodies, definitions, outputs and manifests from the shared objects, validated once.
        self.blocks = PeerBlocks(self.store, self.quarantine, on_bad_task=self.queue.reject)
        self._banned_seen: frozenset[str] = self.trust.banned_peers()
        for cid in self.quarantine:  # rejected in an earlier life: never offered again
            if self.queue.info(cid) is not None:
                self.queue.reject(cid)

    async def serve(self, *, task_status: trio.TaskStatus["Node"] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the verdicts for new bans until cancelled (the listener goes with it)."""
        unsubscribe = self.objects.subscribe(self._on_object_change)
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            unsubscribe()

    @property
    def api_url(self) -> str | None:
        """This node's API base URL while the API listens, else None."""
        return self._api_url()

    def stalled(self, late_s: float, within_s: float) -> bool:
        """Whether this process's event loop stalled ``late_s`` or longer
        within the last ``within_s`` (or is stalled now): it was stopped or
        starved, so what it knows of its peers is stale (``runtime.loopwatch``)."""
        return self._stalled(late_s, within_s)

    @property
    def p2p_addrs(self) -> list[str]:
        """This node's p2p listen multiaddrs (empty without a p2p layer)."""
        return list(self._p2p_addrs())

    # -- helpers ------------------------------------------------------------------

    def _on_object_change(self, obj: Followed) -> None:
        if obj is self.verdicts_obj:
            banned = self.trust.banned_peers()
            if banned != self._banned_seen:
                # A new ban frees the banned peer's leases and voids its
                # completions: rebuild the ready list.
                self._banned_seen = banned
                self.queue.rescan(now_ms())
                self.count("bans_seen")

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def private_key(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self._seed)

    def dataset_obj(self, genesis: CID, *, create: bool = False) -> Followed | None:
        obj = self.objects.get(genesis)
        if obj is None and create:
            obj = self.objects.follow(DATASET, str(genesis), genesis=genesis)
        return obj

    # -- peer blocks: validated once, rejected for good (meshd.store.peerblocks) ---------

    def task_record(self, cid: CID) -> dict[str, Any]:
        """The validated task body named ``cid``; raises as :meth:`PeerBlocks.task_record`."""
        return self.blocks.task_record(cid)

    def task_definition(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The validated definition of a validated task; raises as :meth:`PeerBlocks.task_definition`."""
        return self.blocks.task_definition(rec)

    def task_engine(self, cid: CID) -> CID | None:
        """The engine a task names, or None when its body or definition is missing or invalid."""
        try:
            rec = self.task_record(cid)
            return task.engine_of(rec, self.task_definition(rec))
        except (BlockNotFound, BadInput):
            return None

    def output_value(self, cid: CID) -> Any:
        """A decoded result output; raises as :meth:`PeerBlocks.output_value`."""
        return self.blocks.output_value(cid)

    def engine_platforms(self, engine: CID) -> frozenset[str] | None:
        """Platform keys ``engine`` has builds for (None: any); raises as :meth:`PeerBlocks.engine_platforms`."""
        return self.blocks.engine_platforms(engine)

    def engine_deterministic(self, engine: CID) -> bool:
        """Whether ``engine`` declares ``deterministic: true``; raises as :meth:`PeerBlocks.engine_deterministic`."""
        return self.blocks.engine_deterministic(engine)

    def engine_signatures(self, engine: CID) -> list[CID]:
        return [c for c in self.engines_obj.replica.state.members(str(engine)) if type(c) is CID]

    def _status_json(self, st: queue.TaskStatus, *, with_task: bool = True) -> dict[str, Any]:
        """Task ``st`` as the API shows it (:func:`meshd.api.task_status.status_json`)."""
        return status_json(self, st, with_task=with_task)

    def live_runner_count(self) -> int:
        """Runners seen lately, this node included when it runs tasks."""
        if self.mesh is not None:
            return len(self.mesh.live_runners())
        return 1 if "runner" in self.config.node.roles else 0

    # -- NodeService: tasks -------------------------------------------------------------

    @contextlib.contextmanager
    def runner_serving(self, runner: SubmitClaims) -> Iterator[None]:
        """While the block runs, :meth:`enqueue` lets ``runner`` claim, in the
        enqueue's own delta, as many of the new tasks as it has idle slots
        (the Runner enters this around its claim loop; on exit, or when
        cancelled, enqueues go back to leaving every task to the claim rounds)."""
        self._submit_claims = runner
        try:
            yield
        finally:
            if self._submit_claims is runner:
                self._submit_claims = None

    async def enqueue(self, tasks: list[dict]) -> list[dict]:
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest("expected a non-empty list of tasks", code="no_tasks")
        if len(tasks) > 10_000:
            raise BadRequest("at most 10,000 tasks per request", code="too_many_tasks")
        blocks: list[tuple[CID, bytes]] = []
        verify: dict[CID, dict[str, int]] = {}
        engines: dict[CID, int] = {}  # engine -> first task naming it
        for i, t in enumerate(tasks):
            try:
                cid, data, rec = task.task_from_json_untrusted(t)
            except BadInput as exc:
                raise BadRequest(f"task {i}: {exc}", code="bad_task") from None
            cid, data, rec = await self._fix_engine(i, cid, data, rec)
            self.blocks.remember_task(cid, rec)  # validated here: no need to decode it again
            if "verify" in rec:
                v = rec["verify"]
                if v.get("quorum", v["replicas"]) > v["replicas"]:
                    raise BadRequest(f"task {i}: verify.quorum cannot exceed verify.replicas", code="bad_task")
                verify[cid] = v
            engine = task.engine_of(rec)
            if engine is not None:
                engines.setdefault(engine, i)
            blocks.append((cid, data))
        # Engines signed in the registry are known at once; the rest are
        # looked up in the store, in a worker thread (IPFS: HTTP calls).
        unsigned = [e for e in engines if not self.engine_signatures(e)]
        if unsigned:
            stored = await self.objects.run_io(lambda: [self.store.has(e) for e in unsigned])
            unknown = sorted((engines[e], e) for e, ok in zip(unsigned, stored) if not ok)
            if unknown:
                i, engine = unknown[0]
                raise BadRequest(f"task {i}: unknown engine {engine} (publish it with POST /v1/engines)",
                                 code="unknown_engine")
        new = list(dict.fromkeys(c for c, _ in blocks if c not in self.queue))
        known = set(new)
        if len(known) < len(blocks):
            # Bodies of tasks already queued: stored again (a peer's body may
            # not have reached this node yet).
            await self.objects.run_io(self.store.put_many, [b for b in blocks if b[0] not in known])
        if new:
            # Replication requests go first in the delta, so no view ever sees
            # a verified task as a plain one.  The bodies go in the commit's
            # flush, before the delta (the queue never names a missing task),
            # and ride inline in it, so peers fetch nothing per task.
            ops = [queue.replicate_op(c, v["replicas"], v.get("quorum", v["replicas"]))
                   for c, v in ((c, verify.get(c)) for c in new) if v]
            # An idle local runner claims what it can start now in the same
            # delta (after the tasks): no peer can see such a task unclaimed,
            # and it starts without waiting for a round trip of gossip.
            local = self._submit_claims
            claims = local.claims_at_submit([c for c in new if c not in verify], now_ms()) if local else []
            try:
                await self.objects.commit(self.queue_obj, ops + queue.enqueue_ops(new) + claims,
                                          [b for b in dict(blocks).items() if b[0] in known])
            except BaseException:
                if claims and local is not None:
                    local.drop_submitted(claims)
                raise
            if claims and local is not None:
                local.adopt_submitted(claims)
        self.count("tasks_enqueued", len(new))
        now = now_ms()
        out = []
        for cid, _ in blocks:
            st = self.queue.status(cid, now)
            out.append({"cid": str(cid), "state": st.state if st else queue.AVAILABLE})
        return out

    async def image_engine(self, image: str) -> CID | None:
        """The published Docker engine ``image`` (a name or digest) names; see :mod:`meshd.roles.images`."""
        view = RegistryView.of(self.engines_obj.replica.state, image)
        return await self.objects.run_io(resolve_image, image, view, self.store)

    async def engine_for(self, rec: dict[str, Any], definition: dict[str, Any] | None) -> CID | None:
        """The engine a validated task runs: its ``runner.engine``, else what its ``metadata.image`` names.

        A task enqueued here has its image resolved already (:meth:`enqueue`);
        this covers tasks whose linked definition names only an image (rules
        fire such tasks without a node in between).
        """
        engine = task.engine_of(rec, definition)
        if engine is not None:
            return engine
        image = task.image_of(rec, definition)
        return None if image is None else await self.image_engine(image)

    async def _fix_engine(self, i: int, cid: CID, data: bytes,
                          rec: dict[str, Any]) -> tuple[CID, bytes, dict[str, Any]]:
        """Resolve a Docker task's ``metadata.image`` to an engine, or refuse the task.

        An inline definition gets the engine written into its runner (a new
        task CID, fixed for good); a linked one is only checked, when its
        block is here, and resolved again by the runner.

        Raises:
            BadRequest: ``unknown_engine`` when no published engine matches.
        """
        try:
            definition = None if type(rec["taskDefinition"]) is dict else self.task_definition(rec)
        except (BlockNotFound, BadInput):
            return cid, data, rec  # the runner fetches, validates and resolves it
        image = task.image_of(rec, definition)
        if image is None:
            return cid, data, rec
        engine = await self.image_engine(image)
        if engine is None:
            raise BadRequest(f"task {i}: no published docker-json-runner engine matches metadata.image {image!r} "
                             "(publish it with `meshd engine add-docker`, or name runner.engine)",
                             code="unknown_engine")
        if definition is not None:
            return cid, data, rec
        rec = task.with_engine(rec, engine)
        cid, data = codec.encode_block(rec)
        return cid, data, rec

    def engine_known(self, engine: CID) -> bool:
        return self.store.has(engine) or bool(self.engine_signatures(engine))

    async def task_status(self, cid: str) -> dict:
        c = parse_cid(cid, "task CID")
        st = self.queue.status(c, now_ms())
        if st is None:
            raise NotFound(f"task {c} is not in the queue", code="task_not_found")
        return self._status_json(st)

    async def list_tasks(self, state: str | None, limit: int, after: str | None) -> dict:
        if state is not None and state not in queue.STATES:
            raise BadRequest(f"state must be one of {list(queue.STATES)}", code="bad_state")
        limit = max(1, min(int(limit), 1000))
        after_cid = parse_cid(after, "cursor") if after else None
        now = now_ms()
        found: list[dict] = []
        nxt = None
        tasks = self.queue.tasks()
        if after_cid is not None:
            # Resume after the cursor by its index, not by comparing every task before it.
            idx = self.queue.order_index(after_cid)
            tasks = itertools.islice(tasks, idx + 1, None) if idx is not None else iter(())
        for t in tasks:
            st = self.queue.status(t, now)
            if st is None or (state is not None and st.state != state):
                continue
            if len(found) == limit:
                nxt = found[-1]["cid"]
                break
            found.append(self._status_json(st, with_task=False))
        return {"tasks": found, "next": nxt}

    async def results(self, task_cid: str, wait_s: float = 0.0) -> dict:
        c = parse_cid(task_cid, "task CID")
        recs = self.results_view.results(c)
        st = self.queue.status(c, now_ms())
        if not recs and wait_s > 0:
            # Long poll: until a first result, or the task fails for good or
            # is cancelled (then at once: no result will come).  The versions are read
            # before the state, so no change between the two is missed.
            with trio.move_on_after(wait_s):
                while True:
                    since = [(self.results_obj, self.results_obj.version), (self.queue_obj, self.queue_obj.version)]
                    recs = self.results_view.results(c)
                    st = self.queue.status(c, now_ms())
                    if recs or (st is not None and st.state in (queue.FAILED, queue.CANCELLED)):
                        break
                    await self._wait_any(since)
            st = self.queue.status(c, now_ms())
        if not recs and c not in self.queue:
            raise NotFound(f"task {c} is not in the queue", code="task_not_found")
        values = await read_outputs(self, recs)
        out = [result_json(r, output) for r, output in zip(recs, values)]
        answer: dict[str, Any] = {"task": str(c), "results": out, "state": st.state if st is not None else None}
        if st is not None:
            answer.update(ended_reason(st))
        return answer

    async def _wait_any(self, since: list[tuple[Followed, int]]) -> None:
        """Return once any of the objects changed after its given version (cancellation: nothing to undo)."""
        async with trio.open_nursery() as nursery:
            async def one(obj: Followed, version: int) -> None:
                await self.objects.wait_changed(obj, since=version)
                nursery.cancel_scope.cancel()

            for obj, version in since:
                nursery.start_soon(one, obj, version)

    async def queue_counts(self) -> dict:
        counts = self.queue.counts(now_ms())
        rs = self.results_view.statistics()
        counts["results"] = rs.tasks
        counts["result_records"] = rs.records
        # Tasks this node's runner completed from the result cache, and lookups that found nothing usable.
        counts["cache_hits"] = self.counters.get("cache_hits", 0)
        counts["cache_misses"] = self.counters.get("cache_misses", 0)
        return counts

    # -- NodeService: datasets -------------------------------------------------------

    async def create_dataset(self, name: str | None, value: dict | None) -> dict:
        nonce = os.urandom(8) if name is None else b""
        obj = await self.objects.follow_async(DATASET, name or "dataset", nonce)
        if value:
            if not isinstance(value, dict):
                raise BadRequest("value must be an object of path -> value", code="bad_value")
            try:
                ops = [dataset.set_op(k, codec.from_json(v)) for k, v in value.items()]
                codec.encode(ops)
            except (ValueError, BadInput) as exc:
                raise BadRequest(f"invalid dataset value: {exc}", code="bad_value") from None
            await self.objects.commit(obj, ops)
        return {"cid": str(obj.genesis)}

    def _dataset(self, ds: str) -> Followed:
        g = parse_cid(ds, "dataset CID")
        obj = self.objects.get(g)
        if obj is None or obj.kind != DATASET:
            raise NotFound(f"dataset {g} is not known to this node", code="dataset_not_found")
        return obj

    async def dataset_get(self, dataset_cid: str, path: str) -> dict:
        obj = self._dataset(dataset_cid)
        if not path.strip("/"):
            # The whole value: an object of the top-level paths ({} when empty).
            try:
                whole = dataset.get(obj.replica, "") or {}
            except ValueError as exc:  # over the read budget
                raise BadRequest(str(exc), code="bad_path") from None
            return {"dataset": str(obj.genesis), "path": "", "value": codec.to_json(whole)}
        try:
            value = dataset.get(obj.replica, path)
        except ValueError as exc:
            raise BadRequest(str(exc), code="bad_path") from None
        if value is None:
            raise NotFound(f"nothing at {path!r} in dataset {obj.genesis}", code="path_not_found")
        return {"dataset": str(obj.genesis), "path": path, "value": codec.to_json(value)}

    async def dataset_put(self, dataset_cid: str, path: str, value: object, action: str) -> dict:
        obj = self._dataset(dataset_cid)
        try:
            op = dataset.write_op(action, path, codec.from_json(value))
            codec.encode(op)
        except (ValueError, BadInput) as exc:
            raise BadRequest(str(exc), code="bad_value") from None
        await self.objects.commit(obj, [op])
        return {"dataset": str(obj.genesis), "path": path, "action": action}

    # -- NodeService: engines -----------------------------------------------------------

    async def add_engine(self, name: str, files: dict[str, bytes], executable: str, manifest: dict) -> dict:
        """Publish an uploaded native engine (:func:`meshd.api.engine_registry.add_engine`)."""
        return await add_engine(self, name, files, executable, manifest)

    async def list_engines(self) -> dict:
        """The engines registry (:func:`meshd.api.engine_registry.list_engines`)."""
        return list_engines(self.engines_obj.replica.state, self.store)

    # -- NodeService: node ----------------------------------------------------------------

    async def node_info(self) -> dict:
        st = self.store.statistics()
        return {
            "peer_id": self.peer_id,
            "version": __version__,
            "name": self.config.node.name,
            "mesh": self.config.node.mesh,
            "roles": list(self.config.node.roles),
            "inventory": self.inventory,
            "addresses": ([self.api_url] if self.api_url else []) + list(self.p2p_addrs),
            "objects": {"queue": str(self.queue_obj.genesis), "results": str(self.results_obj.genesis),
                        "engines": str(self.engines_obj.genesis), "verdicts": str(self.verdicts_obj.genesis)},
            "rejected": self.rejections(),
            "counters": dict(self.counters),
            "store": {"blocks": getattr(st, "blocks", None)},
            "peers": self.mesh.peer_list() if self.mesh is not None else [],
            "mesh_stats": dataclasses.asdict(self.mesh.statistics()) if self.mesh is not None else None,
            "uptime_s": round(time.time() - self.started, 1),
            "health": self.health_report(),
        }

    def rejections(self) -> dict[str, int]:
        """Everything refused from peers, by reason (forged, replayed, malformed...)."""
        out: dict[str, int] = {}
        if self.mesh is not None:
            for k, v in self.mesh.statistics().rejected.items():
                out[k] = out.get(k, 0) + v
        rs = self.results_view.statistics().rejected
        if rs:
            out["forged_results"] = rs
        ts = self.trust.statistics()
        if ts.forged:
            out["forged_verdicts"] = ts.forged
        if ts.ignored:
            out["untrusted_verdicts"] = ts.ignored  # signed by someone who is not a verifier
        if ts.unfounded:
            out["unfounded_verdicts"] = ts.unfounded  # about a runner with no result for the task
        for kind, n in self.quarantine.statistics().by_kind.items():
            out[kind] = out.get(kind, 0) + n
        if self.counters.get("role_item_errors"):
            out["role_item_errors"] = self.counters["role_item_errors"]
        return out

    def health_report(self) -> dict[str, Any]:
        """``{"healthy", "roles": {name: {"restarts", "recent_restarts", "last_error"}}}``."""
        if self.role_health is None:
            return {"healthy": True, "roles": {}}
        st = self.role_health.statistics()
        return {"healthy": st.healthy, "roles": {name: dataclasses.asdict(r) for name, r in st.roles.items()}}

    async def health(self) -> dict:
        # Liveness stays ok while the process serves; "healthy" says whether
        # its roles are stable (see meshd.runtime.supervisor).
        return {"ok": True, "healthy": self.health_report()["healthy"], "peer_id": self.peer_id,
                "version": __version__}

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = 10.0) -> bool:
        """Fetch blocks from peers into the store (False when alone or unavailable)."""
        if await self.objects.run_io(lambda: all(self.store.has(c) for c in cids)):
            return True
        if self.mesh is None:
            return False
        return await self.mesh.fetch_blocks(cids, timeout_s=timeout_s)

    # -- waiting --------------------------------------------------------------------------

    async def wait_changed(self, obj: Followed, timeout_s: float) -> None:
        """Return when ``obj`` changes (or waiters should look again) or after ``timeout_s``."""
        await self.objects.wait_changed(obj, timeout_s)
