"""Rules: a condition plus the tasks to enqueue when it holds.

A rule is the JSON of the whitepaper's Listing 3, extended with where the
action reads from and where its tasks write to::

    {"name": "Create Map tasks",
     "condition": "!exist(dataset(hpcp('<G>/map/results')))",
     "action": "map",
     "taskDefinition": {"/": "<task definition CID>"},
     "source": {"dataset": {"/": "<G>"}, "path": "split/results"},
     "result": {"action": "append",
                "destination": {"dataset": {"/": "<G>"}, "path": "map/results"}}}

:func:`fire` turns a rule and the current state into task dicts.  It is a pure
function of (rule, resolver state): no clock, no randomness, no node identity,
so every evaluator in the mesh that sees the same state produces byte-identical
tasks with the same CID, and enqueueing them is idempotent.  That is what lets
any member evaluate any rule (whitepaper section 6.1) without coordination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from lattice.cid import CID
from lattice.codec import decode_trusted, encode, from_json, to_json
from lattice.errors import LatticeError

from ._ast import Expr, Ref, normalize_path
from ._evaluate import Resolver, datasets_read, holds
from ._parse import parse_untrusted
from ._values import Budget, exists, kind, sorted_keys
from .errors import BadRule, EvaluationError
from .options import ConditionOptions

#: The record tag and version of every generated task.
TASK_TYPE: Final = "meshd/task"
TASK_VERSION: Final = 1

ACTIONS: Final = frozenset({"enqueue", "map", "reduce"})
RESULT_ACTIONS: Final = frozenset({"set", "append"})
_FIELDS: Final = frozenset({"name", "condition", "action", "taskDefinition", "source",
                            "result", "input", "split"})
_MAX_NAME: Final = 256
_DEFAULT_OPTIONS = ConditionOptions()
# What lattice.codec.encode raises for data it cannot encode.  UnicodeError:
# cbor2 leaks it for strings with lone surrogates (reported upstream to the
# lattice owner); RecursionError: defensive, encode bounds depth itself.
_NOT_ENCODABLE = (LatticeError, UnicodeError, RecursionError)

Action = Literal["enqueue", "map", "reduce"]


@dataclass(frozen=True, slots=True)
class ResultSpec:
    """Where a generated task's engine output goes: ``set`` or ``append`` at ``destination``."""

    action: str
    destination: Ref


@dataclass(frozen=True, slots=True)
class Rule:
    """A decoded rule.  Build it with :meth:`from_json_untrusted`.

    Attributes:
        name: Free text for logs (may be empty).
        condition: The condition text as submitted.
        expr: The parsed condition.
        action: ``"enqueue"``, ``"map"`` or ``"reduce"``.
        task_definition: CID of the task definition every generated task runs.
        source: ``enqueue``: the task's input location (unless ``input`` is
            given); ``map``: the collection to map over; ``reduce``: where the
            map results are.
        result: Copied into every generated task.
        input: ``enqueue`` only: a literal task input, used instead of
            ``source`` when given (None when absent; JSON null is refused).
        split: ``reduce`` only: the collection that was mapped; reduce waits
            until there are as many existing map results as split elements.
    """

    name: str
    condition: str
    expr: Expr
    action: Action
    task_definition: CID
    source: Ref | None
    result: ResultSpec
    input: Any = None
    split: Ref | None = None

    @classmethod
    def from_json_untrusted(cls, obj: object,
                            options: ConditionOptions = _DEFAULT_OPTIONS) -> "Rule":
        """Decode a rule from JSON (links as ``{"/": "<cid>"}``, or CIDs already decoded).

        Raises:
            BadRule: when the JSON does not have the rule shape; ``field`` says where.
            BadCondition: when the ``condition`` text does not parse.
        """
        if type(obj) is not dict:
            raise BadRule(f"rule must be a JSON object, got {type(obj).__name__}")
        unknown = [key for key in obj if key not in _FIELDS]
        if unknown:
            raise BadRule(f"unknown field(s) {sorted(map(str, unknown))[:5]}; allowed: "
                          f"{sorted(_FIELDS)}")
        name = obj.get("name", "")
        if type(name) is not str or len(name) > _MAX_NAME:
            raise BadRule(f"must be a string of at most {_MAX_NAME} characters", field="name")
        condition = obj.get("condition")
        if type(condition) is not str:
            raise BadRule("required, and must be a string", field="condition")
        expr = parse_untrusted(condition, options)
        action = obj.get("action")
        if type(action) is not str or action not in ACTIONS:
            raise BadRule(f"must be one of {sorted(ACTIONS)}", field="action")
        task_definition = _link(obj.get("taskDefinition"), "taskDefinition")
        source = _location(obj["source"], "source") if "source" in obj else None
        result = _result(obj.get("result"))
        rule_input = _input(obj["input"]) if "input" in obj else None
        split = _location(obj["split"], "split") if "split" in obj else None
        if action != "enqueue" and "input" in obj:
            raise BadRule("only an enqueue rule takes a literal input", field="input")
        if action == "enqueue" and source is None and "input" not in obj:
            raise BadRule("an enqueue rule needs a source or an input", field="source")
        if action in ("map", "reduce") and source is None:
            raise BadRule(f"a {action} rule needs a source", field="source")
        if action == "reduce" and split is None:
            raise BadRule("a reduce rule needs the split it waits for", field="split")
        if action != "reduce" and split is not None:
            raise BadRule("only a reduce rule takes a split", field="split")
        return cls(name=name, condition=condition, expr=expr, action=action,
                   task_definition=task_definition, source=source, result=result,
                   input=rule_input, split=split)

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON (links as ``{"/": "bafy…"}``); decodes back to an equal rule."""
        out: dict[str, Any] = {"name": self.name, "condition": self.condition,
                               "action": self.action,
                               "taskDefinition": self.task_definition.to_json(),
                               "result": {"action": self.result.action,
                                          "destination": _location_json(self.result.destination)}}
        if self.source is not None:
            out["source"] = _location_json(self.source)
        if self.input is not None:
            out["input"] = to_json(self.input)
        if self.split is not None:
            out["split"] = _location_json(self.split)
        return out

    def datasets(self) -> frozenset[CID]:
        """Every dataset whose change may change what this rule fires.

        The condition's literal ``hpcp()`` datasets plus the source and split
        datasets; see :func:`~conditions.datasets_read` for computed references.
        """
        found = set(datasets_read(self.expr))
        for ref in (self.source, self.split):
            if ref is not None:
                found.add(ref.genesis)
        return frozenset(found)


def fire(rule: Rule, resolver: Resolver,
         options: ConditionOptions = _DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """The tasks ``rule`` generates in the state ``resolver`` shows; [] when it does not hold.

    Every task is a ``meshd/task`` v1 record::

        {"t": "meshd/task", "v": 1, "input": {...}, "taskDefinition": CID,
         "result": {"action": "set"|"append",
                    "destination": {"dataset": CID, "path": str}}}

    and is returned as canonical DAG-CBOR data (an independent copy, encodable
    by :func:`lattice.codec.encode`), so ``cid_of(task)`` is the same on every
    evaluator that sees the same state.

    Raises:
        EvaluationError: when the condition fails to evaluate, the source is
            not a collection, or an element cannot be encoded as DAG-CBOR.
        LimitExceeded: past ``max_steps`` in the condition, or when a map
            would generate more than ``max_collection`` tasks.
    """
    if not holds(rule.expr, resolver, options):
        return []
    if rule.action == "enqueue":
        if rule.input is not None:
            task_input: Any = rule.input
        else:
            assert rule.source is not None  # enforced by from_json_untrusted
            task_input = {"dataset": rule.source.genesis, "path": rule.source.path}
        return [_task(rule, task_input)]
    budget = Budget(options)
    assert rule.source is not None  # enforced by from_json_untrusted
    source_value = resolver.resolve_path(rule.source.genesis, rule.source.path)
    if rule.action == "map":
        return [_task(rule, element_input)
                for element_input in _map_inputs(source_value, budget)]
    assert rule.split is not None
    split_value = resolver.resolve_path(rule.split.genesis, rule.split.path)
    results = _reduce_inputs(source_value, split_value, budget)
    return [] if results is None else [_task(rule, {"value": results})]


def _map_inputs(value: Any, budget: Budget) -> list[dict[str, Any]]:
    """One input per element: lists in order, dicts in key order, sets in encoded order.

    ``index`` is part of every input so that equal elements (``[3, 3]``) still
    give distinct tasks; dict inputs also carry their ``key``.
    """
    k = kind(value)
    if k == "null":
        return []
    if k == "list":
        budget.admit(len(value), "map source")
        return [{"value": element, "index": i} for i, element in enumerate(value)]
    if k == "dict":
        keys = sorted_keys(value, budget, "map source")
        return [{"value": value[key], "key": key, "index": i} for i, key in enumerate(keys)]
    if k == "set":
        budget.admit(len(value), "map source")
        ordered = _canonical_sort(value)
        return [{"value": element, "index": i} for i, element in enumerate(ordered)]
    raise EvaluationError(f"map source must be a list, dict or set, got {k}")


def _reduce_inputs(results: Any, split: Any, budget: Budget) -> list[Any] | None:
    """The map results in canonical order once every one exists, else None.

    Ready means: the split exists as a collection and the number of map results
    that exist (``count()``) equals its length.  Results are ordered by their
    canonical encoding (lists, sets) or by key (dicts), so the reduce task does
    not depend on the order in which replicas appended them.
    """
    split_kind = kind(split)
    if split_kind not in ("list", "dict", "set"):
        if split_kind == "null":
            return None
        raise EvaluationError(f"reduce split must be a list, dict or set, got {split_kind}")
    result_kind = kind(results)
    if result_kind == "null":
        present: list[Any] = []
    elif result_kind == "dict":
        present = [results[key] for key in sorted_keys(results, budget, "map results")]
    elif result_kind in ("list", "set"):
        budget.admit(len(results), "map results")
        present = _canonical_sort(results)
    else:
        raise EvaluationError(f"map results must be a list, dict or set, got {result_kind}")
    present = [value for value in present if exists(value)]
    if len(present) != len(split):
        return None
    return present


def _canonical_sort(values: Any) -> list[Any]:
    """Sort by DAG-CBOR encoding: a total order every replica agrees on."""
    try:
        keyed = [(encode(value), value) for value in values]
    except _NOT_ENCODABLE as exc:
        raise EvaluationError(f"value is not DAG-CBOR data: {exc}") from None
    keyed.sort(key=lambda pair: (len(pair[0]), pair[0]))
    return [value for _, value in keyed]


def _task(rule: Rule, task_input: Any) -> dict[str, Any]:
    task = {"t": TASK_TYPE, "v": TASK_VERSION, "input": task_input,
            "taskDefinition": rule.task_definition,
            "result": {"action": rule.result.action,
                       "destination": {"dataset": rule.result.destination.genesis,
                                       "path": rule.result.destination.path}}}
    # Round-trip through the canonical encoding: proves the task encodes, gives
    # the caller a copy it may keep (no aliasing of resolver-owned data), and
    # normalises tuples to lists and key order to canonical order.
    try:
        return decode_trusted(encode(task))
    except _NOT_ENCODABLE as exc:
        raise EvaluationError(f"task input is not DAG-CBOR data: {exc}") from None


def _link(value: object, field: str) -> CID:
    if type(value) is CID:
        return value
    if type(value) is dict and len(value) == 1 and type(value.get("/")) is str:
        try:
            return CID.parse_untrusted(value["/"])
        except LatticeError as exc:
            raise BadRule(str(exc), field=field) from None
    raise BadRule('must be a link {"/": "<cid>"}', field=field)


def _location(value: object, field: str) -> Ref:
    if type(value) is not dict or set(value) != {"dataset", "path"}:
        raise BadRule('must be {"dataset": {"/": "<cid>"}, "path": "<path>"}', field=field)
    path = value["path"]
    if type(path) is not str or len(path) > 1024:
        raise BadRule("path must be a string of at most 1024 characters", field=f"{field}.path")
    try:
        path = normalize_path(path)
    except ValueError as exc:
        raise BadRule(str(exc), field=f"{field}.path") from None
    return Ref(_link(value["dataset"], f"{field}.dataset"), path)


def _location_json(ref: Ref) -> dict[str, Any]:
    return {"dataset": ref.genesis.to_json(), "path": ref.path}


def _result(value: object) -> ResultSpec:
    if type(value) is not dict or set(value) != {"action", "destination"}:
        raise BadRule('must be {"action": "set"|"append", "destination": {...}}', field="result")
    if type(value["action"]) is not str or value["action"] not in RESULT_ACTIONS:
        raise BadRule(f"must be one of {sorted(RESULT_ACTIONS)}", field="result.action")
    return ResultSpec(value["action"], _location(value["destination"], "result.destination"))


def _input(value: object) -> Any:
    if value is None:
        raise BadRule("must not be null; leave it out to use the source", field="input")
    try:
        decoded = from_json(value)
        return decode_trusted(encode(decoded))
    except _NOT_ENCODABLE as exc:
        raise BadRule(f"not encodable as DAG-CBOR: {exc}", field="input") from None
