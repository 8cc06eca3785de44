"""Jobs: pipelines of stages chained by Evaluator rules (whitepaper section 6).

A *job* is a dataset GOHO whose genesis CID is the job id.  Submitting a
pipeline writes, in **one** delta of that dataset:

* ``_job/spec``  — ``{"t": "meshd/job", "v": 1, "name", "created_ms",
  "result": "<last stage>/results", "stages": [{"name", "action", "engine",
  "definition", "source", "split", "results"}]}`` (``engine`` and
  ``definition`` are links);
* ``_job/rules`` — ``{"t": "meshd/rules", "v": 1, "rules": [{"rule": <rule>,
  "keyed": bool}]}``, one entry per stage, ``<rule>`` being the
  :class:`conditions.Rule` JSON (``docs/conditions.md``) with real links;
* ``<first stage>/input`` — the pipeline's ``input``.

Every node that syncs the dataset therefore has the rules, and its evaluator
(``meshd/roles/evaluator.py``) fires them whenever the dataset changes; the
first stage's task is also enqueued at once by the submitting node.  Tasks
are content-addressed, so any number of evaluators firing the same rule
enqueue each task once.

**Keyed map results.**  A dataset ``append`` is a grow-only *set*: two map
tasks with equal outputs (``fib`` ranges with equal sums, two identical text
chunks) would collapse into one element and the reduce, which waits for as
many results as split elements, would never fire.  A ``keyed`` map entry
therefore rewrites each generated task's result to ``set`` at
``<results>/<index>``; ``<results>`` then reads back as ``{"0": r0, "1": r1,
…}`` and the reduce gets the results in index order.  The rewrite is a pure
function of the task, so CIDs stay identical on every evaluator.

Pipeline JSON (``POST /v1/jobs``; examples in ``engines/examples/pipelines``)::

    {"name": "fibsum",                    # [A-Za-z0-9._-], at most 64
     "input": {"n": 200, "chunks": 8},    # written at <first stage>/input
     "stages": [                          # 1..16 stages
       {"name": "split", "engine_name": "fibsum-split"},
       {"name": "map", "engine_name": "fibsum-map", "action": "map"},
       {"name": "reduce", "engine_name": "fibsum-reduce", "action": "reduce"}]}

Stage fields: ``name`` ([a-z0-9_-], unique); exactly one of ``engine``
(``{"/": cid}``) or ``engine_name`` (looked up at ``name/<engine_name>`` in
the node's engine registry); ``action`` (``enqueue``, the default, ``map`` or
``reduce``; the first stage cannot reduce); ``source`` (dataset path in the
job; default ``<first>/input`` for the first stage, else the previous stage's
``<name>/results``); ``split`` (reduce only; default: the previous map stage's
source); ``condition`` (optional: replaces the default condition; ``$JOB`` in
it stands for the job id); ``constraints`` (task constraints, copied into the
stage's task definition).  Default conditions, with ``R`` the stage's results:

* enqueue / map: ``exist(source) && !exist(R)``
* reduce: ``len(source) == len(split) && !exist(R)`` (and :func:`conditions.fire`
  itself waits until every map result exists).
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conditions import BadCondition, ConditionError, ConditionOptions, Rule, fire, parse_untrusted
from engines.examples import EXAMPLES_DIR
from lattice import codec, dataset, queue, records, task
from lattice.cid import CID
from lattice.errors import BadInput
from lattice.goho import Replica

from ..errors import BadRequest, NotFound
from .pipeline import JOB_PLACEHOLDER, MAX_STAGES, Pipeline, Stage, submitted_column
from .resolver import _DATASET_KIND, ReplicaResolver, node_resolver, read_path

if TYPE_CHECKING:
    from lattice.blockstore import BlockStore
    from lattice.queue import QueueView

    from ..store.objects import Followed

# Pipeline, Stage and MAX_STAGES live in meshd/roles/pipeline.py (pure validation of
# the pipeline file) and are re-exported here, where callers have always found them.
__all__ = [
    "CANCEL_PATH", "CANCEL_TYPE", "EXAMPLE_ENGINES", "JOB_PLACEHOLDER", "JOB_TYPE", "MAX_RULES", "MAX_STAGES", "RULES_PATH",
    "RULES_TYPE", "SPEC_PATH", "JobObjects", "JobPlan", "JobsNode", "Pipeline", "ReplicaResolver", "Requester", "RuleEntry",
    "Stage", "cancel_record", "default_condition", "enqueue_blocks", "fire_entry", "is_cancelled", "job_status",
    "job_tasks",
    "list_jobs",
    "node_resolver", "plan_job", "publish_examples", "read_path", "resolve_engine", "rules_from_record_untrusted",
    "rules_record", "submit_job", "task_blocks",
]

JOB_TYPE = "meshd/job"
RULES_TYPE = "meshd/rules"
SPEC_PATH = "_job/spec"
RULES_PATH = "_job/rules"
#: A grow-only set in the job dataset: ``{t: CANCEL_TYPE, v: 1, by, at}``
#: elements; any one cancels the job (docs/protocol.md, *Cancel and retry*).
CANCEL_PATH = "_job/cancelled"
CANCEL_TYPE = "meshd/job-cancel"
#: Stands for the job id in a stage's custom ``condition``.
#: Most rule entries one ``_job/rules`` record may hold (bounds evaluation).
MAX_RULES = 64


# ----------------------------------------------------------------- what jobs use of the node


@runtime_checkable
class JobObjects(Protocol):
    """The object host as jobs use it (``meshd.store.objects.ObjectHost``)."""

    @property
    def objects(self) -> Mapping[CID, Followed]:
        """Every followed object by genesis."""
        ...

    def get(self, genesis: CID) -> Followed | None: ...

    def follow(self, kind: str, name: str, nonce: bytes = ..., *, genesis: CID | None = ...) -> Followed: ...

    async def commit(self, obj: Followed, ops: list[list[Any]], blocks: list[tuple[CID, bytes]] = ...) -> None: ...


@runtime_checkable
class JobsNode(Protocol):
    """What submitting, reading and firing jobs use of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def store(self) -> BlockStore: ...

    @property
    def objects(self) -> JobObjects: ...

    @property
    def queue(self) -> QueueView: ...

    @property
    def queue_obj(self) -> Followed: ...

    @property
    def engines_obj(self) -> Followed:
        """The engine registry (``name/<engine>`` registers)."""
        ...

    def engine_known(self, engine: CID) -> bool: ...

    def count(self, name: str, n: int = 1) -> None: ...


# ----------------------------------------------------------------- rule records


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """One rule as stored in a ``meshd/rules`` record.

    Attributes:
        rule: The decoded rule.
        keyed: Map rules only: each task writes ``set`` at ``<results>/<index>``
            instead of the rule's own result (see the module doc).
    """

    rule: Rule
    keyed: bool = False

    def to_record(self) -> dict[str, Any]:
        return {"rule": codec.from_json(self.rule.to_json()), "keyed": self.keyed}


def rules_record(entries: Sequence[RuleEntry]) -> dict[str, Any]:
    """The ``_job/rules`` value holding ``entries``."""
    return {"t": RULES_TYPE, "v": 1, "rules": [e.to_record() for e in entries]}


def rules_from_record_untrusted(value: Any, options: ConditionOptions
                                ) -> tuple[list[RuleEntry | None], list[tuple[int, str]]]:
    """Decode a ``meshd/rules`` record written by any peer.

    Returns the entries (None where one is malformed, so indexes stay those of
    the record) and ``(index, message)`` for each malformed one; index -1 means
    the record itself is malformed.  Never raises on bad data.
    """
    if type(value) is not dict or value.get("t") != RULES_TYPE or value.get("v") != 1 \
            or type(value.get("rules")) is not list:
        return [], [(-1, f"{RULES_PATH} is not a {RULES_TYPE} v1 record")]
    raw = value["rules"]
    if len(raw) > MAX_RULES:
        return [], [(-1, f"{RULES_PATH} holds {len(raw)} rules, more than {MAX_RULES}")]
    entries: list[RuleEntry | None] = []
    errors: list[tuple[int, str]] = []
    for i, item in enumerate(raw):
        try:
            if type(item) is not dict or set(item) - {"rule", "keyed"} or type(item.get("keyed", False)) is not bool:
                raise ValueError('an entry must be {"rule": {...}, "keyed": bool}')
            rule = Rule.from_json_untrusted(item.get("rule"), options)
            keyed = item.get("keyed", False)
            if keyed and (rule.action != "map" or rule.result.action != "set"):
                raise ValueError("only a map rule whose result action is set can be keyed")
            entries.append(RuleEntry(rule, keyed))
        except (ConditionError, ValueError) as exc:
            entries.append(None)
            errors.append((i, f"{type(exc).__name__}: {exc}"))
    return entries, errors


def fire_entry(entry: RuleEntry, resolver: Any, options: ConditionOptions) -> list[dict[str, Any]]:
    """:func:`conditions.fire`, plus the keyed-result rewrite of map tasks.

    Raises:
        ConditionError: as :func:`conditions.fire`.
    """
    tasks = fire(entry.rule, resolver, options)
    if entry.keyed:
        dest = entry.rule.result.destination
        for t in tasks:
            t["result"] = {"action": "set",
                           "destination": {"dataset": dest.genesis, "path": f"{dest.path}/{t['input']['index']}"}}
    return tasks


def task_blocks(tasks: Sequence[dict[str, Any]]) -> list[tuple[CID, bytes]]:
    """Validate generated tasks exactly as ``POST /v1/tasks`` does; their blocks.

    Going through :func:`lattice.task.task_from_json_untrusted` means a task an
    evaluator enqueues has the CID a client enqueueing the same JSON gets.

    Raises:
        BadInput: a task is not a valid ``meshd/task`` (e.g. a map over a
            dict, whose inputs carry a ``key`` that tasks do not accept).
    """
    out = []
    for t in tasks:
        cid, data, _ = task.task_from_json_untrusted(codec.to_json(t))
        out.append((cid, data))
    return out


async def enqueue_blocks(node: JobsNode, blocks: Sequence[tuple[CID, bytes]]) -> list[CID]:
    """Store task blocks and add the ones not yet queued; returns those CIDs.

    The bodies are stored before the queue names them.  Cancellation before
    the commit returns leaves the tasks unqueued (re-fired later).
    """
    new = list(dict.fromkeys(c for c, _ in blocks if c not in node.queue))
    if not new:
        return []
    wanted = set(new)
    # The bodies go in the commit's own flush (in a worker thread, before the delta): no store I/O
    # on the event loop, and the queue never names a body that is not stored.
    await node.objects.commit(node.queue_obj, queue.enqueue_ops(new), [b for b in blocks if b[0] in wanted])
    node.count("tasks_enqueued", len(new))
    return new


# ----------------------------------------------------------------- job plans


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything a submit writes, computed without I/O by :func:`plan_job`.

    Attributes:
        genesis: The job id.
        blocks: Task-definition blocks, to store before anything names them.
        ops: The dataset ops of the one submit delta (spec, rules, input).
        entries: The rules, one per stage.
    """

    genesis: CID
    blocks: tuple[tuple[CID, bytes], ...]
    ops: tuple[list[Any], ...]
    entries: tuple[RuleEntry, ...]


def default_condition(stage: Stage, genesis: CID) -> str:
    def ref(path: str) -> str:
        return f"dataset(hpcp('{genesis}/{path}'))"

    guard = f"!exist({ref(stage.results)})"
    if stage.action == "reduce":
        assert stage.split is not None
        return f"len({ref(stage.source)}) == len({ref(stage.split)}) && {guard}"
    return f"exist({ref(stage.source)}) && {guard}"


def plan_job(pipeline: Pipeline, genesis: CID, engines: Sequence[CID], *, created_ms: int,
             options: ConditionOptions) -> JobPlan:
    """The blocks, ops and rules of a job (pure: no I/O, no clock).

    Args:
        engines: The resolved engine of every stage, in order.

    Raises:
        BadRequest: ``bad_condition`` when a stage's condition does not parse
            (the message says where and what was expected), ``bad_rule`` for
            any other rule problem.
    """
    blocks: list[tuple[CID, bytes]] = []
    entries: list[RuleEntry] = []
    spec_stages: list[dict[str, Any]] = []
    g = {"/": str(genesis)}
    for stage, engine in zip(pipeline.stages, engines, strict=True):
        definition: dict[str, Any] = {"runner": {"type": "bin-json-runner", "engine": engine}}
        if stage.constraints:
            definition["constraints"] = list(stage.constraints)
        def_cid, def_data = codec.encode_block(definition)
        blocks.append((def_cid, def_data))
        if stage.condition is not None:
            condition = stage.condition.replace(JOB_PLACEHOLDER, str(genesis))
        else:
            condition = default_condition(stage, genesis)
        keyed = stage.action == "map"
        rule_json: dict[str, Any] = {
            "name": f"{pipeline.name}/{stage.name}", "condition": condition, "action": stage.action,
            "taskDefinition": {"/": str(def_cid)},
            "source": {"dataset": g, "path": stage.source},
            "result": {"action": "set", "destination": {"dataset": g, "path": stage.results}}}
        if stage.split is not None:
            rule_json["split"] = {"dataset": g, "path": stage.split}
        try:
            rule = Rule.from_json_untrusted(rule_json, options)
        except BadCondition as exc:
            if stage.condition is not None and exc.line:  # say where in the text the client wrote
                exc = BadCondition(exc.reason.replace(str(genesis), JOB_PLACEHOLDER), line=exc.line,
                                   column=submitted_column(stage.condition, str(genesis), exc.line, exc.column),
                                   expected=exc.expected)
            raise BadRequest(f"stage {stage.name!r}: condition: {exc}", code="bad_condition") from None
        except ConditionError as exc:
            raise BadRequest(f"stage {stage.name!r}: {exc}", code="bad_rule") from None
        entries.append(RuleEntry(rule, keyed))
        spec_stages.append({"name": stage.name, "action": stage.action, "engine": engine,
                            "definition": def_cid, "source": stage.source, "split": stage.split,
                            "results": stage.results})
    spec = {"t": JOB_TYPE, "v": 1, "name": pipeline.name, "created_ms": created_ms,
            "result": pipeline.stages[-1].results, "stages": spec_stages}
    ops = (dataset.set_op(SPEC_PATH, spec), dataset.set_op(RULES_PATH, rules_record(entries)),
           dataset.set_op(f"{pipeline.stages[0].name}/input", pipeline.input))
    return JobPlan(genesis, tuple(blocks), ops, tuple(entries))


# ----------------------------------------------------------------- node operations


def resolve_engine(node: JobsNode, stage: Stage) -> CID:
    """The engine CID of ``stage``; BadRequest ``unknown_engine`` when the node has none."""
    if stage.engine is not None:
        if not node.engine_known(stage.engine):
            raise BadRequest(f"stage {stage.name!r}: unknown engine {stage.engine} "
                             "(publish it with POST /v1/engines)", code="unknown_engine")
        return stage.engine
    found = node.engines_obj.replica.state.register(f"name/{stage.engine_name}")
    if type(found) is not CID:
        raise BadRequest(f"stage {stage.name!r}: no engine named {stage.engine_name!r} "
                         "(publish it with POST /v1/engines)", code="unknown_engine")
    return found


async def submit_job(node: JobsNode, body: object, *, options: ConditionOptions, now_ms: int) -> dict[str, Any]:
    """Create the job dataset of pipeline ``body`` and enqueue its first task.

    Write order (crash safety): definition blocks, then the one delta holding
    spec, rules and input, then the first task.  A crash after the delta
    loses nothing: the first stage's rule fires on any evaluator's next pass.
    Cancellation leaves one of those prefixes.

    Raises:
        BadRequest: ``bad_pipeline``, ``bad_cid``, ``unknown_engine``,
            ``bad_condition`` or ``bad_rule``; nothing was written.
    """
    pipeline = Pipeline.from_json_untrusted(body)
    engines = [resolve_engine(node, s) for s in pipeline.stages]
    name, nonce = f"job/{pipeline.name}", os.urandom(8)
    genesis, _ = records.make_genesis(_DATASET_KIND, name, nonce)
    plan = plan_job(pipeline, genesis, engines, created_ms=now_ms, options=options)
    obj = node.objects.follow(_DATASET_KIND, name, nonce)
    assert obj.genesis == genesis
    await node.objects.commit(obj, list(plan.ops), list(plan.blocks))  # blocks stored first, off the event loop
    try:
        first = task_blocks(fire_entry(plan.entries[0], node_resolver(node), options))
    except (ConditionError, BadInput):
        first = []  # reported by the evaluator, which fires the same rule
    await enqueue_blocks(node, first)
    return {"job": str(genesis), "name": pipeline.name,
            "stages": [s.name for s in pipeline.stages], "tasks": [str(c) for c, _ in first]}


def _job_obj(node: JobsNode, job: CID) -> tuple[Any, dict[str, Any]]:
    obj = node.objects.get(job)
    spec = obj.replica.state.register(SPEC_PATH) if obj is not None and obj.kind == _DATASET_KIND else None
    if type(spec) is not dict or spec.get("t") != JOB_TYPE or type(spec.get("stages")) is not list:
        raise NotFound(f"job {job} is not known to this node", code="job_not_found")
    return obj, spec


def is_cancelled(replica: Replica) -> bool:
    """Whether a job dataset holds a cancel: its rules fire no more on any evaluator."""
    return any(type(v) is dict and v.get("t") == CANCEL_TYPE for v in replica.state.members(CANCEL_PATH))


def cancel_record(by: str, at_ms: int) -> list[Any]:
    """The op that cancels a job (added to its dataset)."""
    return ["add", CANCEL_PATH, {"t": CANCEL_TYPE, "v": 1, "by": by, "at": at_ms}]


def job_tasks(node: JobsNode, job: CID, *, options: ConditionOptions) -> list[CID]:
    """Every task the job's stages have made so far (as their rules fire them).

    Raises:
        NotFound: ``job_not_found``.
    """
    obj, _ = _job_obj(node, job)
    entries = rules_from_record_untrusted(obj.replica.state.register(RULES_PATH), options)[0]
    resolver = node_resolver(node)
    return [c for e in entries if e is not None for c in _expected_tasks(e, resolver, options)]


def _expected_tasks(entry: RuleEntry, resolver: Any, options: ConditionOptions) -> list[CID]:
    # The stage's tasks as its rule fires them once its condition holds.
    always = dataclasses.replace(entry.rule, condition="true", expr=parse_untrusted("true", options))
    try:
        return [c for c, _ in task_blocks(fire_entry(RuleEntry(always, entry.keyed), resolver, options))]
    except (ConditionError, BadInput):
        return []


def _condition_holds(entry: RuleEntry | None, resolver: Any, options: ConditionOptions) -> bool | None:
    # Whether the stage's rule would fire now (tasks or not); None when the rule errs.
    if entry is None:
        return None
    try:
        return bool(fire_entry(entry, resolver, options))
    except (ConditionError, BadInput):
        return None


def _mark_blocked(stages: list[dict[str, Any]], holds: list[bool | None], entries: Sequence[RuleEntry | None],
                  pending: int, state: str) -> None:
    """Set each stage's ``blocked``: why its rule can no longer fire, or None.

    A stage after one whose tasks failed for good waits on results that will
    never come.  Otherwise, when no task of the job is available or running
    and a stage that has not run has a condition that does not hold, nothing
    in the job can change the dataset any more: the stage waits for a write
    from outside, and says so with its condition.
    """
    failed_before: str | None = None
    for i, stage in enumerate(stages):
        stage["blocked"] = None
        unfinished = stage["total"] is None or stage["done"] < stage["total"]
        if failed_before is not None and unfinished and not stage["enqueued"]:
            stage["blocked"] = f"stage {failed_before} failed, so this stage's rule can no longer fire"
        elif (state == "running" and pending == 0 and unfinished and not stage["enqueued"] and holds[i] is False
              and i < len(entries) and entries[i] is not None):
            condition = entries[i].rule.condition  # type: ignore[union-attr]
            stage["blocked"] = (f"its condition `{condition}` does not hold and no task of the job is pending: "
                                f"it fires only if something else writes the job's dataset")
        if stage["failed"] and failed_before is None:
            failed_before = str(stage["name"])


def job_status(node: JobsNode, job: CID, *, options: ConditionOptions, now_ms: int,
               errors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Per-stage progress, state and final value of a job.

    ``done``/``failed``/``running`` count the stage's tasks by queue state;
    ``total`` is how many tasks the stage has (None while a map's source is
    not written yet).  The state is ``completed`` once the last stage's result
    exists, ``failed`` when a task failed for good or a rule errors,
    ``cancelled`` once the job is cancelled (:data:`CANCEL_PATH`),
    ``stalled`` when a stage's rule can no longer fire (each stage's
    ``blocked`` says why; see :func:`_mark_blocked`), else ``running``.

    Raises:
        NotFound: ``job_not_found``.
    """
    obj, spec = _job_obj(node, job)
    entries = rules_from_record_untrusted(obj.replica.state.register(RULES_PATH), options)[0]
    resolver = node_resolver(node)
    stages_out: list[dict[str, Any]] = []
    failed = False
    pending = 0  # tasks of the job still available or running
    holds: list[bool | None] = []  # per stage: whether its rule's condition holds now (None: cannot tell)
    for i, st in enumerate(spec["stages"]):
        st = st if type(st) is dict else {}
        entry = entries[i] if i < len(entries) else None
        cids = _expected_tasks(entry, resolver, options) if entry is not None else []
        states = [s.state for c in cids if (s := node.queue.status(c, now_ms)) is not None]
        pending += states.count(queue.AVAILABLE) + states.count(queue.ASSIGNED)
        holds.append(_condition_holds(entry, resolver, options))
        total: int | None = 1
        if st.get("action") == "map":
            source = read_path(obj.replica, str(st.get("source", "")))
            total = len(cids) if source is not None else None
        stage_failed = states.count(queue.FAILED)
        failed = failed or stage_failed > 0
        stages_out.append({"name": st.get("name"), "action": st.get("action"),
                           "done": states.count(queue.COMPLETED), "total": total,
                           "running": states.count(queue.ASSIGNED), "failed": stage_failed,
                           "enqueued": len(states)})
    result_path = spec.get("result")
    result = read_path(obj.replica, result_path) if type(result_path) is str else None
    active = [e for e in errors if e.get("active")]
    # The runner writes a stage's output before it completes the task (so a
    # crash re-runs rather than loses it): wait for both before "completed".
    all_done = all(s["total"] is not None and s["done"] >= s["total"] for s in stages_out)
    state = "completed" if result is not None and all_done else ("failed" if failed or active else "running")
    _mark_blocked(stages_out, holds, entries, pending, state)
    if state == "running" and any(s["blocked"] for s in stages_out):
        state = "stalled"
    if state != "completed" and is_cancelled(obj.replica):
        state = "cancelled"
    return {"job": str(job), "name": spec.get("name"), "created_ms": spec.get("created_ms"),
            "state": state, "stages": stages_out, "result_path": result_path,
            "result": None if result is None else codec.to_json(result), "errors": list(errors)}


def job_ids(node: JobsNode, *, limit: int = 100) -> list[dict[str, Any]]:
    """The jobs this node follows, newest first: ``{"job", "name", "created_ms"}``, no status."""
    out = []
    for obj in list(node.objects.objects.values()):
        if obj.kind != _DATASET_KIND:
            continue
        spec = obj.replica.state.register(SPEC_PATH)
        if type(spec) is not dict or spec.get("t") != JOB_TYPE:
            continue
        out.append({"job": str(obj.genesis), "name": spec.get("name"), "created_ms": spec.get("created_ms")})
    out.sort(key=lambda j: (-(j["created_ms"] or 0), j["job"]))
    return out[:limit]


def list_jobs(node: JobsNode, *, options: ConditionOptions, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
    """The jobs this node follows, newest first: ``{"job", "name", "created_ms", "state", "stages", "blocked"}``.

    ``state`` is :func:`job_status`'s (``failed`` and ``stalled`` included),
    ``stages`` the progress line, ``blocked`` the stages that can no longer
    fire and why (None when none).
    """
    out = job_ids(node, limit=limit)
    for j in out:
        # The full status, so a failed or stalled job is not listed as running.
        status = job_status(node, CID.parse_untrusted(j["job"]), options=options, now_ms=now_ms)
        j["state"] = status["state"]
        j["stages"] = progress_of(status)
        blocked = [f"{s['name']}: {s['blocked']}" for s in status["stages"] if s.get("blocked")]
        j["blocked"] = blocked or None
    return out


def progress_of(status: dict[str, Any]) -> str:
    """``split 1/1  map 3/8  reduce 0/1`` (``?`` for a total not known yet), plus failures."""
    parts = []
    for stage in status.get("stages", []):
        total = "?" if stage.get("total") is None else stage["total"]
        failed = f" ({stage['failed']} failed)" if stage.get("failed") else ""
        parts.append(f"{stage.get('name')} {stage.get('done', 0)}/{total}{failed}")
    return "  ".join(parts)


# ----------------------------------------------------------------- example engines


class Requester(Protocol):
    """What :func:`publish_examples` needs (``meshd.client.Client`` has it)."""

    def request(self, method: str, path: str, body: Any = None) -> Any: ...


#: Engine name -> (script in engines/examples, stage argument).
EXAMPLE_ENGINES: dict[str, tuple[str, str]] = {
    f"{job}-{stage}": (f"{job}.py", stage)
    for job in ("fibsum", "wordcount") for stage in ("split", "map", "reduce")
}


def publish_examples(client: Requester, names: Sequence[str] | None = None) -> dict[str, str]:
    """Publish the example engines that the example pipelines name; ``{name: cid}``.

    Each is the script run as ``python3 <script> <stage>``, warm-capable with
    ``--jsonl`` (the host appends ``serve_args`` to ``args``).
    """
    out = {}
    for name in names or EXAMPLE_ENGINES:
        script, stage = EXAMPLE_ENGINES[name]
        body = {"manifest": {"name": name, "executable": script, "interpreter": "python3",
                             "args": [stage], "serve_args": ["--jsonl"]},
                "files": {script: base64.b64encode((EXAMPLES_DIR / script).read_bytes()).decode()}}
        out[name] = client.request("POST", "/v1/engines", body)["cid"]
    return out
