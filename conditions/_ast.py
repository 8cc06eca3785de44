"""Expression trees and reference values.

Parsing produces a tree of frozen :class:`Expr` nodes.  Nodes compare equal by
structure only (their source positions are excluded), so a condition and its
canonical rendering (:func:`unparse`) parse to equal trees; the property tests
rely on that.  ``&&`` and ``||`` are n-ary nodes so that a long chain of
clauses costs one level of depth, not one per clause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lattice.cid import CID
from lattice.errors import BadCID


@dataclass(frozen=True, slots=True, kw_only=True)
class Expr:
    """Base of every expression node; ``line``/``column`` are 1-based (0 = unknown)."""

    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal(Expr):
    """A string, number, boolean or null written in the condition."""

    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Expr):
    """A call of one of the built-in functions, e.g. ``len(x)``."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Not(Expr):
    """``!operand``: true when the operand is falsy."""

    operand: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class And(Expr):
    """``a && b && ...``: short-circuits on the first falsy operand."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Or(Expr):
    """``a || b || ...``: short-circuits on the first truthy operand."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare(Expr):
    """``left op right`` with ``op`` one of ``== != < <= > >=``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to the value at ``path`` in the dataset whose genesis is ``genesis``.

    ``hpcp('G/split/results')`` evaluates to ``Ref(G, 'split/results')``; it
    names a location and reads nothing until passed to ``dataset()``.  The
    path has no leading or trailing ``/``; ``''`` names the dataset's root.
    """

    genesis: CID
    path: str

    def __str__(self) -> str:
        return f"{self.genesis}/{self.path}" if self.path else str(self.genesis)


def parse_location(text: str) -> Ref:
    """Split ``'<genesis>/<path>'`` into a :class:`Ref`.

    Raises:
        ValueError: when the genesis is not a CID we support or the path has
            an empty segment (``a//b``).  Callers map this to their own error.
    """
    genesis_text, _, path = text.partition("/")
    try:
        genesis = CID.parse_untrusted(genesis_text)
    except BadCID as exc:
        raise ValueError(f"invalid genesis CID {genesis_text[:80]!r}: {exc}") from None
    return Ref(genesis, normalize_path(path))


def normalize_path(path: str) -> str:
    """Strip one leading and trailing ``/`` and reject empty segments.

    Raises:
        ValueError: for an empty segment such as ``'map//results'``.
    """
    path = path.strip("/") if path in ("", "/") else path.removeprefix("/").removesuffix("/")
    if path and any(segment == "" for segment in path.split("/")):
        raise ValueError(f"path {path[:80]!r} has an empty segment")
    return path


_PRECEDENCE = {Or: 1, And: 2, Compare: 3, Not: 4}


def _wrap(node: Expr, parent_level: int) -> str:
    text = unparse(node)
    # Equal precedence also gets parentheses: `a || (b || c)` must keep its
    # shape, and comparisons do not chain.
    if _PRECEDENCE.get(type(node), 5) <= parent_level and type(node) is not Not:
        return f"({text})"
    return text


def unparse(node: Expr) -> str:
    """Render ``node`` as canonical condition text that parses back to an equal tree."""
    if isinstance(node, Literal):
        return _literal_text(node.value)
    if isinstance(node, Call):
        return f"{node.name}({', '.join(unparse(arg) for arg in node.args)})"
    if isinstance(node, Not):
        return "!" + _wrap(node.operand, 3)
    if isinstance(node, And):
        return " && ".join(_wrap(op, 2) for op in node.operands)
    if isinstance(node, Or):
        return " || ".join(_wrap(op, 1) for op in node.operands)
    if isinstance(node, Compare):
        return f"{_wrap(node.left, 3)} {node.op} {_wrap(node.right, 3)}"
    raise TypeError(f"not an expression node: {type(node).__name__}")


def _literal_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return "'" + "".join(_escape(ch) for ch in value) + "'"
    return repr(value)


_SHORT_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\b": "\\b", "\f": "\\f"}


def _escape(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if ch < " " or ch == "\x7f":
        return f"\\u{ord(ch):04x}"
    return ch
