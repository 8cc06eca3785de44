"""The value model: kinds, truthiness, existence, equality and order.

Values are the DAG-CBOR data model as Python objects (``None``, ``bool``,
``int``, finite ``float``, ``str``, ``bytes``, ``list``/``tuple``, ``dict`` with
``str`` keys, :class:`~lattice.cid.CID`), plus :class:`~conditions._ast.Ref`
and, for sources a daemon may hand us, ``set``/``frozenset``.  Types are
checked exactly (no subclasses) when a value is *used*, not when a resolver
returns it, so ``len()`` of a large list stays O(1); anything else raises
:class:`EvaluationError` rather than reaching Python's own operators, whose
mixed-type rules (``True == 1``, ``None < 1`` raising ``TypeError``) are not
ours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from lattice.cid import CID

from ._ast import Ref
from .errors import EvaluationError, LimitExceeded
from .options import ConditionOptions

_SIZED = frozenset({"string", "list", "dict", "set", "bytes"})


class Budget:
    """Counts evaluation steps and enforces the collection limit."""

    __slots__ = ("steps", "max_steps", "max_collection")

    def __init__(self, options: ConditionOptions) -> None:
        self.steps = 0
        self.max_steps = options.max_steps
        self.max_collection = options.max_collection

    def charge(self, n: int = 1) -> None:
        """Spend ``n`` steps; raise :class:`LimitExceeded` past ``max_steps``."""
        self.steps += n
        if self.steps > self.max_steps:
            raise LimitExceeded(f"evaluation exceeded max_steps={self.max_steps}")

    def admit(self, size: int, what: str) -> None:
        """Allow iterating a collection of ``size`` elements, charging one step each."""
        if size > self.max_collection:
            raise LimitExceeded(
                f"{what} has {size} elements, more than max_collection={self.max_collection}")
        self.charge(size)


def kind(value: Any) -> str:
    """Name the kind of ``value``; raise :class:`EvaluationError` if unsupported."""
    if value is None:
        return "null"
    t = type(value)
    if t is bool:
        return "bool"
    if t is int:
        return "number"
    if t is float:
        if not math.isfinite(value):
            raise EvaluationError("NaN and infinite numbers are not supported")
        return "number"
    if t is str:
        return "string"
    if t is list or t is tuple:
        return "list"
    if t is dict:
        return "dict"
    if t is CID:
        return "cid"
    if t is Ref:
        return "ref"
    if t is bytes:
        return "bytes"
    if t is set or t is frozenset:
        return "set"
    raise EvaluationError(f"unsupported value of type {t.__name__}")


def truthy(value: Any) -> bool:
    """JavaScript-like truthiness: null, false, 0, and empty strings/collections are falsy."""
    k = kind(value)
    if k == "null":
        return False
    if k == "bool":
        return value
    if k == "number":
        return value != 0
    if k in _SIZED:
        return len(value) > 0
    return True  # cid, ref


def exists(value: Any) -> bool:
    """``exist()``: false only for null and empty strings/collections (false and 0 exist)."""
    k = kind(value)
    if k == "null":
        return False
    if k in _SIZED:
        return len(value) > 0
    return True


def key_order(key: str) -> tuple[int, bytes]:
    """DAG-CBOR map key order: shorter UTF-8 first, then bytewise ('2' < '10')."""
    raw = key.encode("utf-8", "surrogatepass")
    return (len(raw), raw)


def sorted_keys(mapping: dict, budget: Budget, what: str) -> list[str]:
    """The keys of ``mapping`` in canonical order, after checking they are strings."""
    budget.admit(len(mapping), what)
    keys = list(mapping)
    for key in keys:
        if type(key) is not str:
            raise EvaluationError(f"{what} has a non-string key of type {type(key).__name__}")
    keys.sort(key=key_order)
    return keys


def elements(value: Any, budget: Budget, what: str) -> Iterable[Any]:
    """The elements of a list or set, or the values of a dict, charged and size-checked.

    The order is only meaningful for lists; callers that need a canonical order
    for dicts use :func:`sorted_keys`.
    """
    k = kind(value)
    if k in ("list", "set"):
        budget.admit(len(value), what)
        return value
    if k == "dict":
        budget.admit(len(value), what)
        return value.values()
    raise EvaluationError(f"{what} needs a list, dict or set, got {k}")


def equal(a: Any, b: Any, budget: Budget) -> bool:
    """``==``: deep structural equality with strict kinds.

    At the top level, null equals only null and may be compared with anything;
    two other values of different kinds are an error (``len(x) == '3'`` is a
    bug in the rule, not a false condition).  Inside lists and dicts a kind
    mismatch just means "not equal".  Numbers compare by value (``1 == 1.0``).

    Raises:
        EvaluationError: for mismatched kinds at the top level, sets, or
            unsupported values.
    """
    ka, kb = kind(a), kind(b)
    if ka == "null" or kb == "null":
        return ka == kb
    if ka != kb:
        raise EvaluationError(f"cannot compare {ka} with {kb}")
    # Iterative, so deeply nested data cannot exhaust the Python stack.
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        kx, ky = kind(x), kind(y)
        if kx == "set" or ky == "set":
            raise EvaluationError("sets cannot be compared; compare len() or count() instead")
        if kx != ky:
            return False
        if kx == "list":
            if len(x) != len(y):
                return False
            budget.charge(len(x))
            stack.extend(zip(x, y))
        elif kx == "dict":
            if len(x) != len(y):
                return False
            budget.charge(len(x))
            for key, value in x.items():
                if type(key) is not str:
                    raise EvaluationError(f"dict has a non-string key of type {type(key).__name__}")
                if key not in y:
                    return False
                stack.append((value, y[key]))
        elif x != y:
            return False
    return True


def order(op: str, a: Any, b: Any) -> bool:
    """``< <= > >=`` on two numbers or two strings (code-point order); else an error."""
    ka, kb = kind(a), kind(b)
    if ka != kb or ka not in ("number", "string"):
        raise EvaluationError(f"cannot order {ka} {op} {kb}: need two numbers or two strings")
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b
