"""The conditions package's one exception tree.

Everything this package raises derives from :class:`ConditionError`, so the
daemon can catch one class around parsing, evaluating and firing a rule.
Parse errors (:class:`BadCondition`) carry where the text went wrong and what
the parser expected there; evaluation errors carry the position of the
expression that failed when it is known.  Exceptions raised by a caller's
:class:`~conditions.Resolver` are not wrapped: they are the caller's own.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConditionError(Exception):
    """Base class of every error raised by the conditions package."""


class InvalidOptions(ConditionError, ValueError):
    """A :class:`~conditions.ConditionOptions` field is out of range."""


class BadCondition(ConditionError):
    """Condition text is not a valid expression; says where and what was expected.

    Attributes:
        line: 1-based line of the offending character (0 when unknown).
        column: 1-based column of the offending character (0 when unknown).
        expected: Human-readable descriptions of what would have been accepted
            there, sorted (``["')'", "','"]``); empty when not applicable.
    """

    def __init__(self, message: str, *, line: int = 0, column: int = 0,
                 expected: Iterable[str] = ()) -> None:
        self.line = line
        self.column = column
        self.expected = sorted(set(expected))
        where = f" at line {line}, column {column}" if line else ""
        hint = f"; expected {', '.join(self.expected)}" if self.expected else ""
        super().__init__(f"{message}{where}{hint}")
        self.reason = message


class BadRule(ConditionError):
    """A rule (the JSON around a condition) is malformed; ``field`` names where."""

    def __init__(self, message: str, *, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class EvaluationError(ConditionError):
    """Evaluating a condition or firing a rule failed at run time.

    Attributes:
        line: 1-based line of the failing sub-expression (0 when unknown).
        column: 1-based column of the failing sub-expression (0 when unknown).
    """

    def __init__(self, message: str, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{message}{where}")
        self.reason = message


class LimitExceeded(EvaluationError):
    """Evaluation ran past a limit of :class:`~conditions.ConditionOptions`."""
