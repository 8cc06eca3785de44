"""Parsing condition text into an expression tree.

The grammar lives in ``grammar.lark`` and is parsed by lark's LALR(1) parser
with its contextual lexer: a maintained library, linear time, and an explicit
parse stack, so hostile nesting cannot overflow the Python stack while parsing.
This module then

1. maps every lark error to :class:`BadCondition` with a 1-based line and
   column and a readable list of what was expected there;
2. measures the parse tree's depth iteratively and rejects it past
   ``max_depth`` *before* the (recursive) conversion to :class:`Expr` nodes;
3. decodes literals strictly: string escapes, 64-bit integers, finite floats;
4. checks calls against the built-in functions (name and arity) and checks
   ``hpcp('<genesis>/<path>')`` literals, so a broken rule is refused when it
   is submitted rather than failing on every later evaluation.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
)

from ._ast import And, Call, Compare, Expr, Literal, Not, Or, parse_location
from ._functions import FUNCTIONS
from .errors import BadCondition
from .options import ConditionOptions

_DEFAULT_OPTIONS = ConditionOptions()

# What to call each terminal in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "function name",
    "STRING": "string",
    "NUMBER": "number",
    "COMP_OP": "comparison operator",
    "$END": "end of input",
}

_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "/": "/", "b": "\b", "f": "\f",
                   "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
_INT_LIMIT = 2**64  # DAG-CBOR integers are 64-bit: -(2**64) .. 2**64 - 1


@lru_cache(maxsize=1)
def _parser() -> tuple[lark.Lark, dict[str, str]]:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text(encoding="utf-8")
    parser = lark.Lark(grammar, parser="lalr", lexer="contextual", start="start",
                       maybe_placeholders=False)
    names = dict(_TERMINAL_NAMES)
    for terminal in parser.terminals:
        if terminal.name not in names and terminal.pattern.type == "str":
            names[terminal.name] = repr(terminal.pattern.value)
    return parser, names


def grammar_text() -> str:
    """The grammar in lark's EBNF, for documentation and tooling."""
    return (Path(__file__).with_name("grammar.lark")).read_text(encoding="utf-8")


def parse_untrusted(text: object, options: ConditionOptions = _DEFAULT_OPTIONS) -> Expr:
    """Parse condition text from a task definition or the API.

    Args:
        text: The condition, e.g. ``"!exist(dataset(hpcp('bafy…/map/results')))"``.
        options: Limits; ``max_length`` and ``max_depth`` apply here.

    Returns:
        The expression tree, ready for :func:`~conditions.evaluate`.

    Raises:
        BadCondition: for anything that is not a valid condition within the
            limits.  Nothing else is raised, whatever ``text`` is.
    """
    if type(text) is not str:
        raise BadCondition(f"condition must be a string, got {type(text).__name__}")
    if len(text) > options.max_length:
        line, column = _position(text, options.max_length)
        raise BadCondition(f"condition is {len(text)} characters, more than "
                           f"max_length={options.max_length}", line=line, column=column)
    parser, names = _parser()
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        raise _bad_syntax(exc, text, names) from None
    except LarkError as exc:  # pragma: no cover - lark's other errors are grammar bugs
        raise BadCondition(f"cannot parse condition: {exc.__class__.__name__}") from None
    _check_depth(tree, options.max_depth)
    return _build(tree)



def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _bad_syntax(exc: LarkError, text: str, names: dict[str, str]) -> BadCondition:
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else ""
        expected = [names.get(t, t) for t in (exc.allowed or ())]
        if char in ("'", '"'):
            message = "unterminated string"
        else:
            message = f"unexpected character {char!r}"
        return BadCondition(message, line=exc.line, column=exc.column, expected=expected)
    if isinstance(exc, UnexpectedToken):
        expected_set = getattr(exc, "accepts", None) or exc.expected
        expected = [names.get(t, t) for t in expected_set]
        token = exc.token
        if token.type == "$END":
            line, column = _position(text, len(text))
            return BadCondition("unexpected end of input", line=line, column=column,
                                expected=expected)
        shown = str(token)[:40]
        return BadCondition(f"unexpected {names.get(token.type, token.type)} {shown!r}",
                            line=token.line, column=token.column, expected=expected)
    line, column = _position(text, len(text))  # UnexpectedEOF
    return BadCondition("unexpected end of input", line=line, column=column,
                        expected=[names.get(t, t) for t in exc.expected])


def _first_token(tree: Tree | Token) -> Token | None:
    node = tree
    while isinstance(node, Tree):
        if not node.children:
            return None
        node = node.children[0]
    return node


def _check_depth(tree: Tree, max_depth: int) -> None:
    # Iterative on purpose: the tree may be thousands of levels deep here, and
    # _build below recurses once per level.
    stack: list[tuple[Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            token = _first_token(node)
            line, column = (token.line, token.column) if token is not None else (0, 0)
            raise BadCondition(f"expression nested deeper than max_depth={max_depth}",
                               line=line, column=column)
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1))


def _start(tree: Tree) -> dict[str, int]:
    token = _first_token(tree)
    return {"line": token.line, "column": token.column} if token is not None else {}


def _build(node: Tree | Token) -> Expr:
    kind = node.data
    children = node.children
    if kind == "or_expr":
        return Or(operands=tuple(_build(child) for child in children), **_start(node))
    if kind == "and_expr":
        return And(operands=tuple(_build(child) for child in children), **_start(node))
    if kind == "comparison":
        left, op, right = children
        return Compare(op=str(op), left=_build(left), right=_build(right),
                       line=op.line, column=op.column)
    if kind == "not_":
        bang, operand = children
        return Not(operand=_build(operand), line=bang.line, column=bang.column)
    if kind == "call":
        return _build_call(children)
    (token,) = children
    where = {"line": token.line, "column": token.column}
    if kind == "string":
        return Literal(value=_decode_string(token), **where)
    if kind == "number":
        return Literal(value=_decode_number(token), **where)
    if kind == "true":
        return Literal(value=True, **where)
    if kind == "false":
        return Literal(value=False, **where)
    return Literal(value=None, **where)  # null


def _build_call(children: list) -> Call:
    name_token, *arg_trees = children
    name = str(name_token)
    where = {"line": name_token.line, "column": name_token.column}
    function = FUNCTIONS.get(name)
    if function is None:
        raise BadCondition(f"unknown function {name[:40]!r}", expected=list(FUNCTIONS), **where)
    args = tuple(_build(child) for child in arg_trees)
    if len(args) != function.arity:
        plural = "" if function.arity == 1 else "s"
        raise BadCondition(f"{name}() takes {function.arity} argument{plural}, got {len(args)}",
                           expected=[f"{function.arity} argument{plural}"], **where)
    if name == "hpcp" and isinstance(args[0], Literal) and isinstance(args[0].value, str):
        try:
            parse_location(args[0].value)
        except ValueError as exc:
            raise BadCondition(f"hpcp(): {exc}", line=args[0].line, column=args[0].column,
                               expected=["'<genesis CID>/<path>'"]) from None
    return Call(name=name, args=args, **where)


def _decode_string(token: Token) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        escape = body[i + 1]  # the STRING terminal guarantees a character follows
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
            continue
        if escape == "u" and _is_hex4(body, i + 2):
            code = int(body[i + 2:i + 6], 16)
            i += 6
            # A JSON-style surrogate pair \ud83d\ude00 is one character.
            if 0xD800 <= code < 0xDC00 and body.startswith("\\u", i) and _is_hex4(body, i + 2):
                low = int(body[i + 2:i + 6], 16)
                if 0xDC00 <= low < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            out.append(chr(code))
            continue
        raise BadCondition(f"invalid escape {body[i:i + 2]!r} in string", line=token.line,
                           column=token.column + 1 + i,
                           expected=["\\\\", "\\'", '\\"', "\\n", "\\t", "\\uXXXX"])
    return "".join(out)


def _is_hex4(text: str, start: int) -> bool:
    chunk = text[start:start + 4]
    return len(chunk) == 4 and all(c in _HEX for c in chunk)


def _decode_number(token: Token) -> int | float:
    text = str(token)
    where = {"line": token.line, "column": token.column}
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise BadCondition(f"number {text[:40]} is too large", **where)
        return value
    # Check the digit count first: int() of a huge string is slow and Python
    # refuses more than 4300 digits with ValueError.
    if len(text.lstrip("-")) > 20 or not -_INT_LIMIT <= int(text) < _INT_LIMIT:
        raise BadCondition(f"integer {text[:40]} is outside the 64-bit range", **where)
    return int(text)
