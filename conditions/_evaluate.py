"""Evaluating an expression tree against a resolver, within a step budget.

A tree-walking interpreter over :class:`~conditions._ast.Expr` nodes; Python's
``eval`` is never involved.  Every node visited costs one step, and functions
charge for resolver calls and collection elements (see :mod:`._functions`), so
the work one evaluation can do is bounded by ``max_steps`` whatever the rule
and the data.  Recursion is bounded by ``max_depth`` even for trees built by
hand rather than by :func:`~conditions.parse_untrusted`.
"""

from __future__ import annotations

from typing import Any

from lattice.cid import CID

from ._ast import And, Call, Compare, Expr, Literal, Not, Or, Ref, parse_location
from ._functions import FUNCTIONS, WORK_FUNCTIONS, Resolver
from ._values import Budget, equal, order, truthy
from .errors import EvaluationError, LimitExceeded
from .options import ConditionOptions

_DEFAULT_OPTIONS = ConditionOptions()


class _Evaluator:
    """One evaluation: the resolver, the options and the steps spent so far."""

    __slots__ = ("resolver", "budget", "max_depth")

    def __init__(self, resolver: Resolver, options: ConditionOptions) -> None:
        self.resolver = resolver
        self.budget = Budget(options)
        self.max_depth = options.max_depth

    def eval(self, node: Expr, depth: int) -> Any:
        if depth > self.max_depth:
            raise LimitExceeded(f"expression nested deeper than max_depth={self.max_depth}",
                                line=node.line, column=node.column)
        try:
            return self._eval(node, depth + 1)
        except EvaluationError as exc:
            if exc.line or not node.line:
                raise
            # Attach the position of the innermost node that knows one.
            raise type(exc)(exc.reason, line=node.line, column=node.column) from None

    def _eval(self, node: Expr, depth: int) -> Any:
        self.budget.charge()
        t = type(node)
        if t is Literal:
            return node.value
        if t is Call:
            function = FUNCTIONS.get(node.name)
            if function is None:
                raise EvaluationError(f"unknown function {node.name[:40]!r}")
            if len(node.args) != function.arity:
                raise EvaluationError(f"{node.name}() takes {function.arity} argument(s), "
                                      f"got {len(node.args)}")
            args = [self.eval(arg, depth) for arg in node.args]
            return function.impl(self, args)
        if t is And:
            for operand in node.operands:
                if not truthy(self.eval(operand, depth)):
                    return False
            return True
        if t is Or:
            for operand in node.operands:
                if truthy(self.eval(operand, depth)):
                    return True
            return False
        if t is Not:
            return not truthy(self.eval(node.operand, depth))
        if t is Compare:
            left = self.eval(node.left, depth)
            right = self.eval(node.right, depth)
            if node.op == "==":
                return equal(left, right, self.budget)
            if node.op == "!=":
                return not equal(left, right, self.budget)
            if node.op in ("<", "<=", ">", ">="):
                return order(node.op, left, right)
            raise EvaluationError(f"unknown comparison operator {node.op[:10]!r}")
        raise EvaluationError(f"not an expression node: {t.__name__}")


def evaluate(expr: Expr, resolver: Resolver,
             options: ConditionOptions = _DEFAULT_OPTIONS) -> object:
    """Evaluate ``expr`` and return its value.

    Args:
        expr: A tree from :func:`~conditions.parse_untrusted`.
        resolver: Where ``dataset()`` reads from.
        options: ``max_steps``, ``max_collection`` and ``max_depth`` apply.

    Returns:
        The value: a bool for comparisons and logic, otherwise whatever the
        outermost function returned (a data value, a list, a :class:`Ref`...).

    Raises:
        EvaluationError: for type errors and malformed references.
        LimitExceeded: when a limit of ``options`` is reached.
        Exceptions raised by ``resolver`` itself propagate unchanged.
    """
    return _Evaluator(resolver, options).eval(expr, 1)


def holds(expr: Expr, resolver: Resolver, options: ConditionOptions = _DEFAULT_OPTIONS) -> bool:
    """True when ``expr`` evaluates to a truthy value (the condition is met).

    Falsy values are null, false, 0, and empty strings, lists and dicts.

    Raises:
        EvaluationError: as :func:`evaluate`, also when the result is not a
            supported value.
    """
    value = _Evaluator(resolver, options).eval(expr, 1)
    try:
        return truthy(value)
    except EvaluationError as exc:
        raise EvaluationError(f"condition result: {exc.reason}",
                              line=expr.line, column=expr.column) from None


def datasets_read(expr: Expr) -> frozenset[CID]:
    """The genesis CIDs named by ``hpcp('<genesis>/…')`` literals in ``expr``.

    A daemon can re-evaluate a rule only when one of these datasets changes.
    References computed at run time (``hpcp(get(...))``) cannot be known in
    advance and are not included; :func:`has_dynamic_references` says whether
    there are any.
    """
    return frozenset(ref.genesis for ref in _hpcp_literals(expr) if isinstance(ref, Ref))


def has_dynamic_references(expr: Expr) -> bool:
    """True when ``expr`` calls ``hpcp()`` on a computed value (not a string literal)."""
    return any(not isinstance(ref, Ref) for ref in _hpcp_literals(expr))


def reads_work(expr: Expr) -> bool:
    """True when ``expr`` calls ``task_state()`` or ``failures()``: its value may
    change whenever the queue does, not only when a dataset it names does."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            if node.name in WORK_FUNCTIONS:
                return True
            stack.extend(node.args)
        elif isinstance(node, Not):
            stack.append(node.operand)
        elif isinstance(node, (And, Or)):
            stack.extend(node.operands)
        elif isinstance(node, Compare):
            stack.extend((node.left, node.right))
    return False


def _hpcp_literals(expr: Expr) -> list[Ref | None]:
    """One entry per hpcp() call: its literal Ref, or None when the argument is computed.

    ``dataset()`` of a CID adds nothing: blocks are immutable, so a rule only
    changes value when a dataset read through ``hpcp()`` does.
    """
    found: list[Ref | None] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            if node.name == "hpcp":
                arg = node.args[0] if node.args else None
                ref = None
                if isinstance(arg, Literal) and isinstance(arg.value, str):
                    try:
                        ref = parse_location(arg.value)
                    except ValueError:
                        ref = None
                found.append(ref)
            stack.extend(node.args)
        elif isinstance(node, Not):
            stack.append(node.operand)
        elif isinstance(node, (And, Or)):
            stack.extend(node.operands)
        elif isinstance(node, Compare):
            stack.extend((node.left, node.right))
    return found
