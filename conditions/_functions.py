"""The built-in functions: the only calls a condition can make.

Each function takes already-evaluated arguments and a context holding the
resolver and the step budget.  Functions that read data charge one step per
resolver call; functions that walk a collection charge one step per element
and refuse collections over ``max_collection``.  ``null`` (absent data) is
accepted wherever "no data yet" has an obvious meaning, because conditions are
routinely evaluated before the data they wait for exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lattice.cid import CID
from lattice.errors import BadCID

from ._ast import Ref, parse_location
from ._values import Budget, elements, exists, kind, sorted_keys, truthy
from .errors import EvaluationError


class Resolver(Protocol):
    """Where conditions read data from; the daemon implements it over its GOHOs.

    Values are JSON-like Python (dict/list/str/int/float/bool/None) and may
    contain :class:`~lattice.cid.CID` links.  Implementations must not block
    for long: evaluation is synchronous and runs whenever a dataset changes.
    """

    def resolve_path(self, genesis: CID, path: str) -> object | None:
        """The current value at ``path`` ('split/results') in dataset ``genesis``, or None."""
        ...

    def get_block(self, cid: CID) -> object | None:
        """The decoded DAG-CBOR value of block ``cid``, or None if not available locally."""
        ...


class WorkState(Protocol):
    """The state of work, as conditions may read it; the daemon implements it over its queue.

    A resolver that carries one as its ``work`` attribute lets conditions
    call ``task_state()`` and ``failures()``; without it those functions
    raise :class:`~conditions.errors.EvaluationError`.  Kept apart from
    :class:`Resolver` so that evaluating a rule still needs only datasets
    when a rule reads no work, and so that this package still imports only
    ``lattice`` (the queue's view is the daemon's business).
    """

    def task_state(self, task: CID) -> str | None:
        """The task's state ("available", "assigned", "completed", "failed",
        "cancelled"), or None when the queue does not hold it."""
        ...

    def job_failures(self, dataset: CID) -> list[dict[str, Any]]:
        """The tasks failed for good among those that read or write dataset
        ``dataset`` (a job's tasks read and write its dataset), as
        ``{"task": CID, "error": str, "name": str | None}``, ordered by task CID."""
        ...


class Context(Protocol):
    """What a function implementation may use while it runs."""

    resolver: Resolver
    budget: Budget


@dataclass(frozen=True, slots=True)
class Function:
    """A built-in: its arity, implementation and a one-line description."""

    arity: int
    impl: Callable[[Context, list[Any]], Any]
    summary: str


def _hpcp(ctx: Context, args: list[Any]) -> Ref:
    (text,) = args
    if kind(text) != "string":
        raise EvaluationError(f"hpcp() needs a string '<genesis>/<path>', got {kind(text)}")
    try:
        return parse_location(text)
    except ValueError as exc:
        raise EvaluationError(f"hpcp(): {exc}") from None


def _link_cid(value: Any) -> CID | None:
    """A CID from a CID, a CID string or a DAG-JSON link ``{"/": "..."}``; None otherwise."""
    if type(value) is CID:
        return value
    if type(value) is dict and len(value) == 1 and type(value.get("/")) is str:
        value = value["/"]
    if type(value) is str:
        try:
            return CID.parse_untrusted(value)
        except BadCID as exc:
            raise EvaluationError(f"dataset(): {exc}") from None
    return None


def _dataset(ctx: Context, args: list[Any]) -> Any:
    (target,) = args
    k = kind(target)
    if k == "null":
        return None
    ctx.budget.charge()
    if k == "ref":
        return ctx.resolver.resolve_path(target.genesis, target.path)
    cid = _link_cid(target)
    if cid is None:
        raise EvaluationError(f"dataset() needs hpcp(...), a CID or a link, got {k}")
    return ctx.resolver.get_block(cid)


def _work(ctx: Context, name: str) -> WorkState:
    work = getattr(ctx.resolver, "work", None)
    if work is None:
        raise EvaluationError(f"{name}() reads the state of work, which this evaluator does not supply")
    return work


def _task_cid(value: Any, name: str) -> CID:
    try:
        cid = _link_cid(value)
    except EvaluationError as exc:
        raise EvaluationError(f"{name}(): {exc.reason.removeprefix('dataset(): ')}") from None
    if cid is None:
        raise EvaluationError(f"{name}() needs a CID, a CID string or a link, got {kind(value)}")
    return cid


def _task_state(ctx: Context, args: list[Any]) -> str | None:
    (target,) = args
    if kind(target) == "null":
        return None
    task = _task_cid(target, "task_state")
    work = _work(ctx, "task_state")
    ctx.budget.charge()
    return work.task_state(task)


def _failures(ctx: Context, args: list[Any]) -> list[dict[str, Any]]:
    (target,) = args
    k = kind(target)
    if k == "null":
        return []
    genesis = target.genesis if k == "ref" else _task_cid(target, "failures")
    work = _work(ctx, "failures")
    ctx.budget.charge()
    found = work.job_failures(genesis)
    ctx.budget.admit(len(found), "failures()")
    return found


def _exist(ctx: Context, args: list[Any]) -> bool:
    return exists(args[0])


def _len(ctx: Context, args: list[Any]) -> int:
    (value,) = args
    k = kind(value)
    if k == "null":
        return 0
    if k in ("string", "list", "dict", "set", "bytes"):
        return len(value)
    hint = "; read it first with dataset()" if k == "ref" else ""
    raise EvaluationError(f"len() needs a string, list, dict or bytes, got {k}{hint}")


def _keys(ctx: Context, args: list[Any]) -> list[str]:
    (value,) = args
    k = kind(value)
    if k == "null":
        return []
    if k != "dict":
        raise EvaluationError(f"keys() needs a dict, got {k}")
    return sorted_keys(value, ctx.budget, "keys() argument")


def _values(ctx: Context, args: list[Any]) -> list[Any]:
    (value,) = args
    k = kind(value)
    if k == "null":
        return []
    if k != "dict":
        raise EvaluationError(f"values() needs a dict, got {k}")
    return [value[key] for key in sorted_keys(value, ctx.budget, "values() argument")]


def _count(ctx: Context, args: list[Any]) -> int:
    (value,) = args
    if value is None:
        return 0
    return sum(1 for element in elements(value, ctx.budget, "count() argument") if exists(element))


def _all(ctx: Context, args: list[Any]) -> bool:
    (value,) = args
    if value is None:
        return False  # absent data is not "all done": see docs/conditions.md
    return all(truthy(element) for element in elements(value, ctx.budget, "all() argument"))


def _any(ctx: Context, args: list[Any]) -> bool:
    (value,) = args
    if value is None:
        return False
    return any(truthy(element) for element in elements(value, ctx.budget, "any() argument"))


def _get(ctx: Context, args: list[Any]) -> Any:
    container, key = args
    k, kk = kind(container), kind(key)
    if k == "null":
        return None
    if k == "dict":
        if kk != "string":
            raise EvaluationError(f"get() on a dict needs a string key, got {kk}")
        return container.get(key)
    if k == "list":
        if type(key) is not int:
            raise EvaluationError(f"get() on a list needs an integer index, got {kk}")
        return container[key] if 0 <= key < len(container) else None
    raise EvaluationError(f"get() needs a dict or list, got {k}")


FUNCTIONS: dict[str, Function] = {
    "hpcp": Function(1, _hpcp, "reference to '<genesis>/<path>' (reads nothing)"),
    "dataset": Function(1, _dataset, "value at a reference, or a block by CID/link"),
    "exist": Function(1, _exist, "false for null and empty string/list/dict"),
    "len": Function(1, _len, "length of a string, list or dict; 0 for null"),
    "keys": Function(1, _keys, "keys of a dict in canonical order; [] for null"),
    "values": Function(1, _values, "values of a dict in key order; [] for null"),
    "count": Function(1, _count, "number of elements that exist(); 0 for null"),
    "all": Function(1, _all, "every element truthy; false for null, true for []"),
    "any": Function(1, _any, "some element truthy; false for null"),
    "get": Function(2, _get, "dict value by key or list element by index; null if absent"),
    "task_state": Function(1, _task_state, "a task's state in the queue by CID or link; null if unknown"),
    "failures": Function(1, _failures, "tasks failed for good that read or write a dataset (a job): "
                                       "[{task, error, name}]"),
}

#: Functions that read the state of work rather than datasets: a rule that
#: calls one is evaluated again whenever the queue changes.
WORK_FUNCTIONS = frozenset({"task_state", "failures"})
