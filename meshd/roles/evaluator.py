"""The Evaluator role: DRES, the whitepaper's decentralized reactive event system (section 6).

Whenever a followed GOHO changes — by a local commit or by a delta merged
from a peer — the evaluator re-evaluates the rules that can be affected and
enqueues the tasks they fire.  Any node may do this for any job, including
nodes that ran none of its tasks: rules fire deterministic, content-addressed
tasks (:func:`conditions.fire`), so evaluators that react to the same state
enqueue the same CIDs and the grow-only queue holds each once.  That is what
prevents the deadlock of section 6.1: whoever merges the last result fires
the next stage.

Where rules live (each set of rules has an *origin*):

* a job dataset's ``_job/rules`` record (``meshd/roles/jobs.py``): origin is the
  dataset's genesis; reloaded whenever that register changes;
* a task's ``taskDefinition.conditions`` (Listing 3): origin is the task
  definition block's CID when linked (shared by every task using it), the
  task's CID when inline.  New tasks are discovered from the queue.

How a pass works, and why it cannot deadlock: the change listener only adds
the object to a dirty set and wakes the loop (no await, no lock).  The loop
waits ``debounce_s`` so a burst of merges becomes one pass, swaps the dirty
set out, reloads changed rule records, evaluates every origin whose rules read
a dirty dataset (at most ``max_rules_per_pass`` rules; the rest wait for the
next pass) and enqueues what fired in one queue commit.  Rule evaluation is
synchronous and holds nothing across the awaits between origins.  A rule that
fails (bad record, condition error, invalid task) is recorded — see
:meth:`Evaluator.errors` and ``GET /v1/evaluator`` — and skipped.

On start every followed object counts as dirty, so rules that should have
fired while the node was down fire at once.

Routes (mounted even when the role is off; see :func:`router`): ``POST
/v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{job}``, ``GET /v1/evaluator``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from conditions import ConditionError, ConditionOptions, Rule, has_dynamic_references, reads_work
from lattice import codec
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.goho import Replica

from ..api.app import _call, _read_json_untrusted
from ..node import DATASET, now_ms, parse_cid
from ..runtime.logs import get_logger
from . import jobs
from .outputrepair import OutputRepair, RepairNode, RepairOptions
from .workstate import QueueWork

if TYPE_CHECKING:
    from ..store.objects import Followed
    from . import RoleContext

log = get_logger("meshd.evaluator")


@runtime_checkable
class EvaluatorObjects(jobs.JobObjects, Protocol):
    """The object host as the evaluator uses it: jobs' view, plus change listeners."""

    def subscribe(self, listener: Callable[[Followed], None]) -> Callable[[], None]:
        """Call ``listener(obj)`` after every change; returns the unsubscribe function."""
        ...


@runtime_checkable
class EvaluatorNode(RepairNode, Protocol):
    """What the evaluator uses of the node (``meshd.node.Node`` satisfies it), its output repair's included."""

    @property
    def objects(self) -> EvaluatorObjects: ...

    def task_record(self, cid: CID) -> dict[str, Any]:
        """A validated task body; raises BlockNotFound (not here yet) or BadInput (rejected)."""
        ...

    def dataset_obj(self, genesis: CID, *, create: bool = ...) -> Followed | None: ...


@dataclass(frozen=True)
class EvaluatorOptions:
    """Evaluator tuning.

    Attributes:
        debounce_s: How long a pass waits after the first change so that a
            burst of changes is evaluated once (default 0.02 s).
        max_rules_per_pass: Most rule evaluations per pass (default 2,000);
            the remaining origins are evaluated in the next passes.
        max_tasks_scanned_per_pass: Most newly seen queue entries inspected
            for conditions per pass (default 10,000).
        max_errors: Most rule errors remembered (default 1,000; oldest dropped).
        follow_task_datasets: Follow the input and result datasets of every
            task seen in the queue (default True), so that the rules stored in
            them reach this node as soon as the mesh syncs those datasets.
        conditions: Limits for parsing and evaluating conditions.
        repair: When lost output writes of idle jobs are re-made
            (:mod:`meshd.roles.outputrepair`).
    """

    debounce_s: float = 0.02
    max_rules_per_pass: int = 2_000
    max_tasks_scanned_per_pass: int = 10_000
    max_errors: int = 1_000
    follow_task_datasets: bool = True
    conditions: ConditionOptions = field(default_factory=ConditionOptions)
    repair: RepairOptions = field(default_factory=RepairOptions)

    def __post_init__(self) -> None:
        if not 0 <= self.debounce_s <= 10:
            raise ValueError(f"debounce_s must be within 0..10, got {self.debounce_s!r}")
        for name in ("max_rules_per_pass", "max_tasks_scanned_per_pass", "max_errors"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.conditions, ConditionOptions):
            raise ValueError("conditions must be a ConditionOptions")
        if not isinstance(self.repair, RepairOptions):
            raise ValueError("repair must be a RepairOptions")


@dataclass(frozen=True, slots=True)
class EvaluatorStatistics:
    """Counters since start.

    Attributes:
        passes: Evaluation passes run.
        origins: Origins (job datasets, task definitions) with rules.
        rules: Rules loaded.
        evaluations: Rule evaluations.
        fired: Evaluations whose rule fired at least one task.
        tasks_enqueued: Tasks this evaluator added to the queue (not yet there).
        tasks_deduplicated: Fired tasks that were already queued.
        errors: Rule failures (load or evaluation), counted each time.
        pending: Origins waiting for the next pass.
    """

    passes: int
    origins: int
    rules: int
    evaluations: int
    fired: int
    tasks_enqueued: int
    tasks_deduplicated: int
    errors: int
    pending: int


# ----------------------------------------------------------------- rule book


class RuleBook:
    """Rules by origin, and which datasets each origin's rules read.

    Pure bookkeeping over replicas and decoded records: no I/O, no trio, so
    in-process tests drive it over bare :class:`lattice.goho.Replica` objects.
    """

    def __init__(self, options: ConditionOptions) -> None:
        self.options = options
        self._rules: dict[CID, list[tuple[int, jobs.RuleEntry]]] = {}
        self._readers: dict[CID, set[CID]] = {}
        self._reads: dict[CID, frozenset[CID]] = {}
        self._dynamic: set[CID] = set()
        self._work: set[CID] = set()  # origins whose rules read the state of work (the queue)
        self._records: dict[CID, bytes | None] = {}

    @property
    def origins(self) -> int:
        return len(self._rules)

    @property
    def size(self) -> int:
        return sum(len(r) for r in self._rules.values())

    def rules(self, origin: CID) -> list[tuple[int, jobs.RuleEntry]]:
        return list(self._rules.get(origin, ()))

    def set_rules(self, origin: CID, entries: Iterable[tuple[int, jobs.RuleEntry]]) -> None:
        """Replace ``origin``'s rules and re-index the datasets they read."""
        for g in self._reads.pop(origin, frozenset()):
            readers = self._readers.get(g)
            if readers is not None:
                readers.discard(origin)
                if not readers:
                    del self._readers[g]
        self._dynamic.discard(origin)
        self._work.discard(origin)
        entries = list(entries)
        if not entries:
            self._rules.pop(origin, None)
            return
        self._rules[origin] = entries
        reads: set[CID] = set()
        for _, entry in entries:
            reads |= entry.rule.datasets()
            if has_dynamic_references(entry.rule.expr):
                self._dynamic.add(origin)
            if reads_work(entry.rule.expr):
                self._work.add(origin)
        self._reads[origin] = frozenset(reads)
        for g in reads:
            self._readers.setdefault(g, set()).add(origin)

    def load_dataset(self, genesis: CID, replica: Replica) -> list[tuple[int, str]] | None:
        """Reload the ``_job/rules`` record of a dataset if it changed (or the job was cancelled).

        Returns None when the record is unchanged, else the malformed entries
        as ``(index, message)`` (empty when all are fine).
        """
        put = replica.state.register_entry(jobs.RULES_PATH)
        # A cancelled job's rules fire no more: read as if it had none.
        encoded = None if put is None or jobs.is_cancelled(replica) else put.value
        if genesis in self._records and self._records[genesis] == encoded:
            return None
        self._records[genesis] = encoded
        if encoded is None:
            self.set_rules(genesis, ())
            return []
        entries, errors = jobs.rules_from_record_untrusted(replica.state.register(jobs.RULES_PATH), self.options)
        self.set_rules(genesis, ((i, e) for i, e in enumerate(entries) if e is not None))
        return errors

    def load_conditions(self, origin: CID, conditions: Any) -> list[tuple[int, str]]:
        """Load a task definition's ``conditions`` (Listing 3 rules); returns the malformed ones."""
        if type(conditions) is not list:
            self.set_rules(origin, ())
            return [(-1, "taskDefinition.conditions must be a list of rules")]
        entries: list[tuple[int, jobs.RuleEntry]] = []
        errors: list[tuple[int, str]] = []
        for i, raw in enumerate(conditions[: jobs.MAX_RULES]):
            try:
                entries.append((i, jobs.RuleEntry(Rule.from_json_untrusted(raw, self.options))))
            except ConditionError as exc:
                errors.append((i, f"{type(exc).__name__}: {exc}"))
        if len(conditions) > jobs.MAX_RULES:
            errors.append((-1, f"only the first {jobs.MAX_RULES} conditions are evaluated"))
        self.set_rules(origin, entries)
        return errors

    def affected(self, datasets: Iterable[CID], *, work: bool = False) -> set[CID]:
        """Origins whose rules may fire differently after ``datasets`` changed
        (and, with ``work``, after the queue changed: rules that read the state of work)."""
        out: set[CID] = set(self._work) if work else set()
        touched = False
        for g in datasets:
            touched = True
            out |= self._readers.get(g, set())
            if g in self._rules:
                out.add(g)
        if touched:
            out |= self._dynamic  # computed hpcp() references: cannot know what they read
        return out

    def reads(self, origin: CID) -> frozenset[CID]:
        return self._reads.get(origin, frozenset())

    def fire(self, origin: CID, resolver: Any) -> tuple[list[tuple[CID, bytes]], list[RuleOutcome]]:
        """Evaluate every rule of ``origin``; the task blocks they fire and each rule's outcome.

        Never raises for a bad rule: a condition error, an invalid generated
        task or a defect is that rule's outcome (``error`` set), and the other
        rules still run.
        """
        blocks: list[tuple[CID, bytes]] = []
        outcomes: list[RuleOutcome] = []
        for index, entry in self.rules(origin):
            try:
                fired = jobs.task_blocks(jobs.fire_entry(entry, resolver, self.options))
            except (ConditionError, BadInput) as exc:
                outcomes.append(RuleOutcome(index, entry.rule.name, 0, f"{type(exc).__name__}: {exc}"))
                continue
            except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the evaluator
                log.exception("rule_crashed", origin=str(origin), index=index)
                outcomes.append(RuleOutcome(index, entry.rule.name, 0, f"internal error: {exc!r}"))
                continue
            outcomes.append(RuleOutcome(index, entry.rule.name, len(fired), None))
            blocks.extend(fired)
        return blocks, outcomes


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What evaluating one rule gave: how many tasks it fired, or its error."""

    index: int
    name: str
    fired: int
    error: str | None


# ----------------------------------------------------------------- the role


class Evaluator:
    """Re-evaluates rules on change and enqueues what they fire.  See the module doc."""

    name = "evaluator"

    def __init__(self, node: EvaluatorNode, options: EvaluatorOptions | None = None) -> None:
        self.node = node
        self.options = options or EvaluatorOptions()
        self.book = RuleBook(self.options.conditions)
        self.work = QueueWork(node)  # what task_state() and failures() read (meshd/roles/workstate.py)
        self.repair = OutputRepair(node, self.options.repair, conditions=self.options.conditions)
        self._dirty: set[CID] = set()
        self._pending: dict[CID, None] = {}
        self._wake = trio.Event()
        self._listening = False
        self._task_cursor = 0
        self._missing: dict[CID, None] = {}
        self._definitions: set[CID] = set()
        self._errors: dict[tuple[CID, int], dict[str, Any]] = {}
        self._counts = dict(passes=0, evaluations=0, fired=0, tasks_enqueued=0, tasks_deduplicated=0, errors=0)

    # -- observing --------------------------------------------------------------------

    def statistics(self) -> EvaluatorStatistics:
        c = self._counts
        return EvaluatorStatistics(c["passes"], self.book.origins, self.book.size, c["evaluations"], c["fired"],
                                   c["tasks_enqueued"], c["tasks_deduplicated"], c["errors"], len(self._pending))

    def errors(self, origin: CID | None = None) -> list[dict[str, Any]]:
        """Rule failures, newest first: ``{"origin", "index", "rule", "error", "count",
        "first_ms", "last_ms", "active"}``; ``active`` is false once the rule
        evaluated cleanly again.  ``index`` -1 is the record as a whole."""
        found = [dict(e) for (o, _), e in self._errors.items() if origin is None or o == origin]
        return sorted(found, key=lambda e: (-e["last_ms"], e["origin"], e["index"]))

    def _record_error(self, origin: CID, index: int, name: str, message: str) -> None:
        self._counts["errors"] += 1
        now = now_ms()
        key = (origin, index)
        entry = self._errors.pop(key, None)
        if entry is None:
            if len(self._errors) >= self.options.max_errors:
                del self._errors[next(iter(self._errors))]  # dicts keep insertion order: oldest first
            entry = {"origin": str(origin), "index": index, "rule": name, "count": 0, "first_ms": now}
            log.warning("rule_failed", origin=str(origin), index=index, rule=name, error=message[:300])
        entry.update(error=message[:1000], count=entry["count"] + 1, last_ms=now, active=True)
        self._errors[key] = entry

    def _clear_error(self, origin: CID, index: int) -> None:
        entry = self._errors.get((origin, index))
        if entry is not None:
            entry["active"] = False

    def _on_change(self, obj: Any) -> None:
        # Called synchronously by ObjectHost after every commit or merge: only
        # note the object and wake the loop.  serve() unsubscribes on exit.
        if self._listening:
            self._dirty.add(obj.genesis)
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Evaluate on every change until cancelled.

        Cancellation may interrupt a pass before its queue commit: the tasks it
        fired are not queued, and fire again on the next start (every object
        is dirty then), or on any other evaluator.
        """
        unsubscribe = self.node.objects.subscribe(self._on_change)
        self._listening = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.repair.serve)  # lost output writes (meshd/roles/outputrepair.py)
                self._dirty.update(self.node.objects.objects)
                task_status.started()
                while True:
                    if not self._dirty and not self._pending:
                        await self._wake.wait()
                    if self.options.debounce_s:
                        await trio.sleep(self.options.debounce_s)  # coalesce a burst of changes
                    else:
                        await trio.lowlevel.checkpoint()
                    self._wake = trio.Event()
                    dirty, self._dirty = self._dirty, set()
                    await self.run_pass(dirty)
        finally:
            self._listening = False
            unsubscribe()

    async def run_pass(self, dirty: set[CID]) -> list[CID]:
        """One pass over the objects in ``dirty``; returns the CIDs it enqueued."""
        node = self.node
        self._counts["passes"] += 1
        if node.queue_obj.genesis in dirty or self._missing:
            self._scan_queue()
        for g in dirty:
            obj = node.objects.get(g)
            if obj is None or obj.kind != DATASET:
                continue
            errors = self.book.load_dataset(g, obj.replica)
            if errors is not None:  # the record changed: its old load errors no longer hold
                self._pending[g] = None
                for (origin, index), entry in self._errors.items():
                    if origin == g:
                        entry["active"] = False
                for index, message in errors:
                    self._record_error(g, index, "", message)
        work_changed = node.queue_obj.genesis in dirty
        for origin in sorted(self.book.affected(dirty, work=work_changed), key=lambda c: c.raw):
            self._pending[origin] = None
        resolver = jobs.node_resolver(node, self.work)
        budget = self.options.max_rules_per_pass
        fired: list[tuple[CID, bytes]] = []
        while self._pending and budget > 0:
            origin = next(iter(self._pending))
            del self._pending[origin]
            blocks, outcomes = self.book.fire(origin, resolver)
            budget -= max(1, len(outcomes))
            fired.extend(blocks)
            for outcome in outcomes:
                self._counts["evaluations"] += 1
                if outcome.error is not None:
                    self._record_error(origin, outcome.index, outcome.name, outcome.error)
                else:
                    self._clear_error(origin, outcome.index)
                    self._counts["fired"] += outcome.fired > 0
            await trio.lowlevel.checkpoint()  # keep the API responsive between origins
        if self._pending:
            self._wake.set()
        unique = list(dict.fromkeys(fired))
        new = await jobs.enqueue_blocks(node, unique)
        self._counts["tasks_enqueued"] += len(new)
        self._counts["tasks_deduplicated"] += len(unique) - len(new)
        if new:
            log.info("tasks_fired", enqueued=len(new), deduplicated=len(unique) - len(new))
        return new

    # -- discovering task conditions ------------------------------------------------------

    def _scan_queue(self) -> None:
        limit = self.options.max_tasks_scanned_per_pass
        retry = list(itertools.islice(self._missing, limit))
        fresh = list(itertools.islice(self.node.queue.tasks(), self._task_cursor, self._task_cursor + limit))
        self._task_cursor += len(fresh)
        if len(fresh) == limit:
            self._dirty.add(self.node.queue_obj.genesis)  # more to scan: next pass
            self._wake.set()
        for t in retry:
            del self._missing[t]
        for t in retry + fresh:
            try:
                self._inspect(t)
            except Exception:  # noqa: BLE001 - one task's defect must not stop the evaluator
                self.node.count("role_item_errors")
                log.exception("task_skipped", task=str(t))

    def _inspect(self, t: CID) -> None:
        # Task bodies may come from any peer: read them defensively, never trust their shape.
        node = self.node
        try:
            rec = node.task_record(t)
        except BlockNotFound:
            self._remember_missing(t)  # the body comes with the mesh; retried each pass
            return
        except BadInput:
            return  # not a valid task: the node quarantined and counted it
        if type(rec) is not dict:
            return
        self.work.index(t, rec)
        if self.options.follow_task_datasets:
            for g in (_dig(rec, "input", "dataset"), _dig(rec, "result", "destination", "dataset")):
                if type(g) is CID and node.objects.get(g) is None:
                    node.dataset_obj(g, create=True)
                    self._dirty.add(g)
        definition = rec.get("taskDefinition")
        origin = t
        if type(definition) is CID:
            origin = definition
            if origin in self._definitions:
                return
            try:
                definition = codec.decode_untrusted(node.store.get(origin))
            except BlockNotFound:
                self._remember_missing(t)
                return
            except BadInput as exc:
                self._record_error(origin, -1, "", f"task definition does not decode: {exc}")
                definition = None
            self._remember_definition(origin)
        if type(definition) is not dict or "conditions" not in definition:
            return
        for index, message in self.book.load_conditions(origin, definition["conditions"]):
            self._record_error(origin, index, "", message)
        self._pending[origin] = None

    def _remember_missing(self, t: CID) -> None:
        if len(self._missing) >= 100_000:
            del self._missing[next(iter(self._missing))]
        self._missing[t] = None

    def _remember_definition(self, cid: CID) -> None:
        if len(self._definitions) >= 100_000:
            self._definitions.clear()  # only a cache: a definition seen again is re-read
        self._definitions.add(cid)


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value


def create(ctx: RoleContext) -> Evaluator:
    """The role plug-in entry point (no I/O)."""
    return Evaluator(ctx.node, EvaluatorOptions())


# ----------------------------------------------------------------- routes


def router(ctx: RoleContext) -> APIRouter:
    """``/v1/jobs`` and ``/v1/evaluator``; mounted whether or not the role runs.

    Jobs can be submitted and watched on any node: the rules travel with the
    job dataset and any evaluator in the mesh fires them.
    """
    routes = APIRouter()
    options = EvaluatorOptions()

    def running() -> Evaluator | None:
        role = ctx.roles.get("evaluator")
        return role if isinstance(role, Evaluator) else None

    @routes.post("/v1/jobs", status_code=201, tags=["jobs"])
    async def submit_job(request: Request) -> JSONResponse:
        """Submit a pipeline (see ``meshd/roles/jobs.py``); the answer names the job."""
        body = await _read_json_untrusted(request)
        out = await _call("submit_job", jobs.submit_job(ctx.node, body, options=options.conditions,
                                                        now_ms=now_ms()))
        out["evaluator"] = running() is not None
        return JSONResponse(out, status_code=201)

    @routes.get("/v1/jobs", tags=["jobs"])
    async def list_jobs(limit: int = Query(default=100, ge=1, le=1000)) -> JSONResponse:
        """Jobs this node follows, newest first."""
        return JSONResponse({"jobs": jobs.list_jobs(ctx.node, options=options.conditions, now_ms=now_ms(), limit=limit)})

    @routes.get("/v1/jobs/{job}", tags=["jobs"])
    async def job_status(job: str) -> JSONResponse:
        """Per-stage progress, state and final result of a job."""
        genesis = parse_cid(job, "job id")
        role = running()
        errors = role.errors(genesis) if role is not None else []
        return JSONResponse(jobs.job_status(ctx.node, genesis, options=options.conditions, now_ms=now_ms(),
                                            errors=errors))

    @routes.get("/v1/evaluator", tags=["jobs"])
    async def evaluator_status() -> JSONResponse:
        """Evaluator counters and rule errors (``enabled`` false when the role is off)."""
        role = running()
        if role is None:
            return JSONResponse({"enabled": False, "statistics": None, "errors": []})
        stats = role.statistics()
        return JSONResponse({"enabled": True, "statistics": dataclasses.asdict(stats),
                             "errors": role.errors()})

    return routes
