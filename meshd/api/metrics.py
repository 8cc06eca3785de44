"""``GET /metrics``: the node in Prometheus text format (``prometheus_client``).

Why it is shaped so: almost everything an operator wants to graph is already
counted by some component (the queue view, the replicas, the mesh core, the
trust view, the archivist), so :class:`NodeCollector` reads those records
*at scrape time* and adds nothing to the hot paths.  Two things no component
keeps are measured by :class:`RunTracker`, which follows the queue's change
feed (the view pattern: a cursor pulled when the queue changes):

* how long this node's runs took, per engine (``meshd_task_run_seconds``);
* how long a task waited here before this node claimed it
  (``meshd_claim_latency_seconds``).

Every value is this node's own view: counters restart at zero with the
daemon, as Prometheus expects, and summing a counter over nodes counts each
run once (a runner counts only its own runs).

The route needs the ``read`` scope (``<home>/api-read.token``), so Prometheus
scrapes with ``authorization: {credentials_file: .../api-read.token}``; a
remote scraper's ``Host`` must be listed in ``[api] allowed_hosts`` (see
docs/operations.md, "Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import trio
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lattice import queue
from lattice.cid import CID
from lattice.state import decode_value

from .. import __version__
from ..owner.policy import RUNNING, SUSPENDED, WAITING

#: The owner policy's states, one sample each in ``meshd_owner_state``.
OWNER_STATES = (WAITING, RUNNING, SUSPENDED)

#: Roles whose live peers are counted in ``meshd_peers_live``.
LIVE_ROLES = ("runner", "verifier", "evaluator", "archivist", "manager")


@dataclass(frozen=True)
class MetricsOptions:
    """How runs and claims are bucketed, and how much the tracker may remember.

    Attributes:
        run_buckets: Upper bounds (s) of the run-time histogram buckets.
        claim_buckets: Upper bounds (s) of the claim-latency buckets.
        max_tracked: Most tasks remembered while waiting for a claim or an
            end (the oldest are forgotten first: unmeasured, never wrong).
    """

    run_buckets: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
    claim_buckets: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
    max_tracked: int = 200_000

    def __post_init__(self) -> None:
        for name in ("run_buckets", "claim_buckets"):
            b = getattr(self, name)
            if not b or list(b) != sorted(set(b)) or b[0] <= 0:
                raise ValueError(f"{name} must be increasing positive numbers")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be >= 1")


def _bounded_put(d: MutableMapping[Any, Any], key: Any, value: Any, limit: int) -> None:
    d[key] = value
    while len(d) > limit:
        del d[next(iter(d))]  # dicts keep insertion order: the oldest goes


class RunTracker:
    """Run times per engine, claim latency and run outcomes, from the queue's change feed.

    Building it registers nothing; :meth:`serve` follows the queue while it
    runs.  Only changes applied after it started are measured.

    Args:
        node: The node (``peer_id``, ``objects``, ``queue_obj``, ``task_engine``,
            ``engines_obj``).
        registry: Where its metric families are registered.
        options: Buckets and memory bound.
    """

    def __init__(self, node: Any, registry: CollectorRegistry, options: MetricsOptions = MetricsOptions()) -> None:
        self.node = node
        self.options = options
        self.run_seconds = Histogram("meshd_task_run_seconds", "Run time of this node's task attempts, claim to end",
                                     ["engine", "outcome"], buckets=options.run_buckets, registry=registry)
        self.claim_latency = Histogram("meshd_claim_latency_seconds",
                                       "From a task reaching this node to this node claiming it",
                                       buckets=options.claim_buckets, registry=registry)
        self.runs = Counter("meshd_tasks_run", "Task attempts this node finished (completed or failed)",
                            ["engine"], registry=registry)
        self.failed = Counter("meshd_tasks_failed", "Tasks this node failed for good (final failure)",
                              ["engine"], registry=registry)
        self.retried = Counter("meshd_tasks_retried", "Attempts this node failed that leave the task to run again",
                               ["engine"], registry=registry)
        self._seen: dict[CID, int] = {}  # task -> ms it reached this node, until this node claims it
        self._started: dict[CID, int] = {}  # task -> ms this node's newest claim on it starts running
        self._names: dict[CID, str] = {}
        self._names_version = -1
        self._cursor: Any = None

    async def serve(self, *, task_status: trio.TaskStatus[RunTracker] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the queue until cancelled; cancellation closes the cursor (nothing persists)."""
        self._cursor = self.node.queue_obj.replica.cursor()
        unsubscribe = self.node.objects.subscribe(self._on_change)
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            unsubscribe()
            self._cursor.close()
            self._cursor = None

    def _on_change(self, obj: Any) -> None:
        if obj is self.node.queue_obj:
            self.pull()

    def pull(self) -> None:
        """Account for the queue changes applied since the last pull."""
        if self._cursor is None:
            return
        now = int(time.time() * 1000)
        me, limit = self.node.peer_id, self.options.max_tracked
        # A record of this node's holds its peer id as a CBOR text string, so
        # a record whose bytes lack it is another node's: not decoded (most
        # records, on a mesh of more than one runner).
        mine = me.encode()
        for change in self._cursor.pull():
            for key, enc in change.adds:
                if key == queue.AVAILABLE:
                    task = decode_value(enc)
                    if type(task) is CID and task not in self._seen:
                        _bounded_put(self._seen, task, now, limit)
                    continue
                if key not in (queue.ASSIGNED, queue.COMPLETED, queue.FAILED) or mine not in enc:
                    continue
                rec = decode_value(enc)
                if (type(rec) is not dict or rec.get("by") != me or type(rec.get("task")) is not CID
                        or type(rec.get("at")) is not int):
                    continue
                self._mine(key, rec, limit)

    def _mine(self, key: str, rec: dict[str, Any], limit: int) -> None:
        task, at = rec["task"], rec["at"]
        if key == queue.ASSIGNED:
            settle = rec.get("settle", 0) if type(rec.get("settle", 0)) is int else 0
            seen = self._seen.pop(task, None)
            if seen is not None:
                self.claim_latency.observe(max(0.0, (at - seen) / 1000))
            if task not in self._started or self._started[task] < at:  # a renewal keeps its start
                _bounded_put(self._started, task, at + settle, limit)
            return
        start = self._started.pop(task, None)
        engine = self._engine_name(task)
        self.runs.labels(engine).inc()
        outcome = "completed"
        if key == queue.FAILED:
            final = rec.get("final") is True
            outcome = "failed" if final else "retried"
            (self.failed if final else self.retried).labels(engine).inc()
        if start is not None:
            self.run_seconds.labels(engine, outcome).observe(max(0.0, (at - start) / 1000))

    def _engine_name(self, task: CID) -> str:
        """The engine's registered name (its CID when unnamed; ``unknown`` when the task names none here)."""
        engine = self.node.task_engine(task)
        if engine is None:
            return "unknown"
        replica = self.node.engines_obj.replica
        if replica.version != self._names_version:
            names: dict[CID, str] = {}
            for k in replica.state.register_keys():
                value = replica.state.register(k)
                if k.startswith("name/") and type(value) is CID:
                    names[value] = k[len("name/"):]
            self._names, self._names_version = names, replica.version
        return self._names.get(engine, str(engine))


class NodeCollector:
    """A ``prometheus_client`` collector that reads the node's components at scrape time.

    Args:
        node: The node (queue, objects, mesh, trust, rejections, inventory).
        roles: The daemon's registry of started roles (runner, archivist...).
        api_rejections: The API's refusals by error code (shared with
            :func:`meshd.api.app.create_app`).
    """

    def __init__(self, node: Any, roles: Mapping[str, Any], api_rejections: Mapping[str, int],
                 store_budget: Any = None) -> None:
        self.node = node
        self.roles = roles
        self.api_rejections = api_rejections
        self.store_budget = store_budget

    def describe(self) -> list[Metric]:
        return []  # collected on demand: the registry must not call collect() at registration

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily("meshd_info", "This node (value 1)", labels=["version", "peer_id", "mesh"])
        info.add_metric([__version__, node.peer_id, node.config.node.mesh], 1)
        yield info
        up = GaugeMetricFamily("meshd_uptime_seconds", "Seconds since the daemon started")
        up.add_metric([], time.time() - node.started)
        yield up
        yield from self._queue()
        yield from self._objects()
        yield from self._mesh()
        yield from self._runner()
        yield from self._trust()
        yield from self._rejections()
        yield from self._roles()
        yield from self._store()
        yield from self._owner()

    def _queue(self) -> Iterator[Metric]:
        counts = self.node.queue.counts(int(time.time() * 1000))
        g = GaugeMetricFamily("meshd_queue_tasks", "Tasks in this node's view of the queue, by state", labels=["state"])
        for state in queue.STATES:
            g.add_metric([state], counts.get(state, 0))
        yield g
        c = CounterMetricFamily("meshd_tasks_enqueued", "Tasks enqueued through this node", labels=[])
        c.add_metric([], self.node.counters.get("tasks_enqueued", 0))
        yield c
        for name, key, doc in (("meshd_cache_hits", "cache_hits",
                                "Tasks this node's runner completed from the result cache, without running"),
                               ("meshd_cache_misses", "cache_misses",
                                "Result cache lookups that found no usable result (the task ran)")):
            c = CounterMetricFamily(name, doc, labels=[])
            c.add_metric([], self.node.counters.get(key, 0))
            yield c

    def _objects(self) -> Iterator[Metric]:
        node = self.node
        syncers = node.mesh.syncers if node.mesh is not None else {}
        deltas = GaugeMetricFamily("meshd_object_deltas", "Deltas applied per followed object",
                                   labels=["kind", "object"])
        pending = GaugeMetricFamily("meshd_object_pending_deltas",
                                    "Deltas received but waiting for their parents (sync lag, in deltas)",
                                    labels=["kind", "object"])
        heads = GaugeMetricFamily("meshd_object_heads", "Heads of each followed object", labels=["kind", "object"])
        ahead = GaugeMetricFamily("meshd_object_peers_ahead",
                                  "Peers that announced heads of the object this node has not applied yet (sync lag)",
                                  labels=["kind", "object"])
        for obj in list(node.objects.objects.values()):
            labels = [obj.kind, str(obj.genesis)]
            st = obj.replica.statistics()
            deltas.add_metric(labels, st.applied)
            pending.add_metric(labels, st.pending)
            heads.add_metric(labels, st.heads)
            s = syncers.get(obj.genesis)
            behind = 0
            if s is not None:
                known = obj.replica.is_known
                behind = sum(1 for h in s.peer_heads().values() if not all(known(c) for c in h))
            ahead.add_metric(labels, behind)
        yield from (deltas, pending, heads, ahead)

    def _mesh(self) -> Iterator[Metric]:
        mesh = self.node.mesh
        peers = GaugeMetricFamily("meshd_peers", "Peers in the peer table")
        live = GaugeMetricFamily("meshd_peers_live", "Live peers (this node included) by role", labels=["role"])
        fetched = CounterMetricFamily("meshd_blocks_fetched", "Blocks this node wanted that arrived from peers")
        fetched_b = CounterMetricFamily("meshd_blocks_fetched_bytes", "Bytes of block answers fetched from peers")
        served = CounterMetricFamily("meshd_block_requests_served", "Block requests (hpcp/want) answered for peers")
        served_b = CounterMetricFamily("meshd_blocks_served_bytes", "Bytes of block answers served to peers")
        gossip = CounterMetricFamily("meshd_gossip_received", "Gossip messages received from peers")
        if mesh is not None:
            st = mesh.statistics()
            peers.add_metric([], st.peers)
            for role in LIVE_ROLES:
                live.add_metric([role], len(mesh.live_peers(role)))
            fetched.add_metric([], mesh.core.fetcher.statistics().blocks)
            fetched_b.add_metric([], getattr(mesh, "bytes_fetched", 0))
            served.add_metric([], st.requests_in)
            served_b.add_metric([], getattr(mesh, "bytes_served", 0))
            gossip.add_metric([], st.gossip_in)
        else:
            for m in (peers, fetched, fetched_b, served, served_b, gossip):
                m.add_metric([], 0)
        yield from (peers, live, fetched, fetched_b, served, served_b, gossip)

    def _runner(self) -> Iterator[Metric]:
        inv = self.node.inventory
        for name, key, doc in (("meshd_runner_slots", "slots", "Task slots this node offers (0: not a runner)"),
                               ("meshd_runner_slots_free", "free", "Idle task slots"),
                               ("meshd_runner_backlog", "backlog", "Tasks claimed here and not started")):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], inv.get(key, 0) or 0)
            yield g
        runner = self.roles.get("runner")
        planner = getattr(runner, "planner", None)
        lag = GaugeMetricFamily("meshd_queue_propagation_lag_seconds",
                                "90th percentile of how late other runners' claims reach this node")
        lag.add_metric([], float(getattr(planner, "lag_s", 0.0)))
        yield lag

    def _trust(self) -> Iterator[Metric]:
        scores = self.node.trust.scores()
        results = GaugeMetricFamily("meshd_trust_judged_results",
                                    "Replica results judged by verdicts, by outcome (all peers)", labels=["outcome"])
        results.add_metric(["valid"], sum(s.valid for per in scores.values() for s in per.values()))
        results.add_metric(["invalid"], sum(s.invalid for per in scores.values() for s in per.values()))
        yield results
        trusted = GaugeMetricFamily("meshd_trusted_runners", "(peer, engine) pairs trusted by their streak")
        trusted.add_metric([], sum(1 for p, per in scores.items() for e in per if self.node.trust.trusted(p, e)))
        yield trusted
        banned = GaugeMetricFamily("meshd_banned_peers", "Peers banned for invalid results")
        banned.add_metric([], len(self.node.trust.banned_peers()))
        yield banned
        archivist = self.roles.get("archivist")
        pins = GaugeMetricFamily("meshd_pins", "Pins the archivist holds (versions, outputs, engine files)")
        versions = CounterMetricFamily("meshd_pinned_versions", "Object versions the archivist pinned")
        failures = CounterMetricFamily("meshd_pin_failures", "Pin attempts that failed")
        st = archivist.statistics() if archivist is not None else None
        pins.add_metric([], st.pins if st else 0)
        versions.add_metric([], st.versions if st else 0)
        failures.add_metric([], st.failures if st else 0)
        yield from (pins, versions, failures)

    def _rejections(self) -> Iterator[Metric]:
        c = CounterMetricFamily("meshd_rejections", "Inputs refused, by source (peer, api) and reason",
                                labels=["source", "reason"])
        for reason, n in sorted(self.node.rejections().items()):
            c.add_metric(["peer", reason], n)
        for code, n in sorted(dict(self.api_rejections).items()):
            c.add_metric(["api", code], n)
        yield c

    def _roles(self) -> Iterator[Metric]:
        c = CounterMetricFamily("meshd_role_restarts", "Times the supervisor restarted a failed role", labels=["role"])
        for name, r in self.node.health_report()["roles"].items():
            c.add_metric([name], r.get("restarts", 0))
        yield c
        n = CounterMetricFamily("meshd_loop_stalls", "Event-loop stalls the watchdog saw")
        n.add_metric([], self.node.counters.get("loop_stalls", 0))
        yield n

    def _owner(self) -> Iterator[Metric]:
        """The owner policy and the runner's gate (``GET /v1/owner``), as numbers."""
        owner, runner = self.roles.get("owner"), self.roles.get("runner")
        state = GaugeMetricFamily("meshd_owner_state", "The owner policy's state (1 for the current one)",
                                  labels=["state"])
        current = owner.decision.state if owner is not None else None
        for name in OWNER_STATES:
            state.add_metric([name], 1 if name == current else 0)
        yield state
        actions = CounterMetricFamily("meshd_owner_actions", "What the owner policy did to the engines",
                                      labels=["action"])
        counts = getattr(owner, "counts", {}) if owner is not None else {}
        for key, action in (("suspends", "suspend"), ("continues", "continue"), ("vacates", "vacate"),
                            ("kills", "kill")):
            actions.add_metric([action], counts.get(key, 0))
        yield actions
        gate = runner.gate.statistics() if runner is not None and hasattr(runner, "gate") else None
        closed = GaugeMetricFamily("meshd_runner_gate_closed",
                                   "1 while the runner claims nothing, by why (drain, owner policy)", labels=["by"])
        closed.add_metric(["drain"], 1 if gate is not None and gate.draining else 0)
        closed.add_metric(["owner"], 1 if gate is not None and gate.owner_closed else 0)
        yield closed
        handed = CounterMetricFamily("meshd_runner_tasks_handed_back",
                                     "Tasks the gate handed back to peers, by how (released unstarted, vacated running)",
                                     labels=["how"])
        handed.add_metric(["released"], gate.released if gate is not None else 0)
        handed.add_metric(["vacated"], gate.vacated if gate is not None else 0)
        yield handed


    def _store(self) -> Iterator[Metric]:
        if self.store_budget is None:
            return
        st = self.store_budget.statistics()
        used = GaugeMetricFamily("meshd_store_used_bytes", "Block data held at the last budget check")
        used.add_metric([], st.used_bytes or 0)
        budget = GaugeMetricFamily("meshd_store_budget_bytes", "[store] max_bytes (0: no budget)")
        budget.add_metric([], st.budget_bytes)
        over = GaugeMetricFamily("meshd_store_over_budget",
                                 "1 when the last round could not get under the budget (protected blocks outweigh it)")
        over.add_metric([], int(st.over_budget))
        blocks = CounterMetricFamily("meshd_store_collected_blocks", "Blocks dropped by the storage budget")
        blocks.add_metric([], st.collected_blocks)
        freed = CounterMetricFamily("meshd_store_collected_bytes", "Bytes dropped by the storage budget")
        freed.add_metric([], st.collected_bytes)
        refused = CounterMetricFamily("meshd_store_refused_blocks",
                                      "Blocks over the budget kept, by reason (pinned, in_use, few_holders)",
                                      labels=["reason"])
        for reason, n in sorted(st.refused.items()):
            refused.add_metric([reason], n)
        yield from (used, budget, over, blocks, freed, refused)


class NodeMetrics:
    """The node's metrics: one private registry, the run tracker and the scrape-time collector.

    Args:
        node: The node.
        roles: The daemon's registry of started roles.
        api_rejections: The API's refusals by code (the dict handed to ``create_app``).
        options: See :class:`MetricsOptions`.
        store_budget: The storage budget's collector (:mod:`meshd.store.collector`), if any.
    """

    def __init__(self, node: Any, roles: Mapping[str, Any], api_rejections: Mapping[str, int],
                 options: MetricsOptions = MetricsOptions(), *, store_budget: Any = None) -> None:
        # A registry per node, never the process-global one: tests run several nodes in one process.
        self.registry = CollectorRegistry(auto_describe=False)
        self.tracker = RunTracker(node, self.registry, options)
        self.registry.register(NodeCollector(node, roles, api_rejections, store_budget))

    async def serve(self, *, task_status: trio.TaskStatus[NodeMetrics] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the tracker until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tracker.serve)
            task_status.started(self)

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        self.tracker.pull()
        return generate_latest(self.registry)


def router(node_metrics: NodeMetrics) -> APIRouter:
    """``GET /metrics`` (read scope)."""
    r = APIRouter()

    @r.get("/metrics", tags=["node"], response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Every metric of this node in Prometheus text format (see docs/operations.md, "Metrics")."""
        return Response(node_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return r


__all__ = ["MetricsOptions", "NodeCollector", "NodeMetrics", "RunTracker", "router"]
