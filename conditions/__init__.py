"""The condition language and rules of the meshd Evaluator (whitepaper section 6).

A condition is a small expression compatible with Computes' syntax::

    len(dataset(hpcp('G/split/results'))) == len(dataset(hpcp('G/map/results')))
      && !exist(dataset(hpcp('G/reduce/results')))

Parse it once with :func:`parse_untrusted`, then :func:`evaluate` or
:func:`holds` it against a :class:`Resolver` whenever a dataset changes.  A
resolver whose ``work`` attribute is a :class:`WorkState` also lets conditions
read the state of work (``task_state()``, ``failures()``), so rules can react
to failures; :func:`reads_work` says which rules do.  A
:class:`Rule` pairs a condition with an action (``enqueue``, ``map`` or
``reduce``); :func:`fire` turns a rule and the current state into
deterministic task records, so every evaluator enqueues the same task CIDs.

The package imports only ``lattice``; ``docs/conditions.md`` is the language
reference.
"""

from ._ast import Expr, Ref, unparse
from ._evaluate import datasets_read, evaluate, has_dynamic_references, holds, reads_work
from ._functions import Resolver, WorkState
from ._parse import parse_untrusted
from .actions import TASK_TYPE, TASK_VERSION, ResultSpec, Rule, fire
from .errors import (
    BadCondition,
    BadRule,
    ConditionError,
    EvaluationError,
    InvalidOptions,
    LimitExceeded,
)
from .options import ConditionOptions

__all__ = [
    "TASK_TYPE",
    "TASK_VERSION",
    "BadCondition",
    "BadRule",
    "ConditionError",
    "ConditionOptions",
    "EvaluationError",
    "Expr",
    "InvalidOptions",
    "LimitExceeded",
    "Ref",
    "Resolver",
    "ResultSpec",
    "Rule",
    "WorkState",
    "datasets_read",
    "evaluate",
    "fire",
    "has_dynamic_references",
    "holds",
    "parse_untrusted",
    "reads_work",
    "unparse",
]
