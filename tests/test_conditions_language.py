"""The condition language: syntax, errors with positions, semantics and limits."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import conditions
from conditions import (
    BadCondition,
    ConditionOptions,
    EvaluationError,
    InvalidOptions,
    LimitExceeded,
    Ref,
    datasets_read,
    evaluate,
    has_dynamic_references,
    holds,
    parse_untrusted,
    unparse,
)
from conditions._ast import And, Call, Compare, Literal, Not, Or
from conditions.testing import MemoryResolver
from lattice.codec import cid_of

G = cid_of({"genesis": "language tests"})
G58 = G.encode("base58btc")
BLOCK_VALUE = {"hello": "world", "n": [1, 2]}


@pytest.fixture
def resolver() -> MemoryResolver:
    r = MemoryResolver()
    block = r.put_block(BLOCK_VALUE)
    r.set(G, "split/results", [1, 2, 3])
    r.set(G, "map/results", [1, 1, 2])
    r.set(G, "meta", {"name": "fib", "10": "ten", "2": "two", "zero": 0, "empty": "",
                      "flags": [True, False], "none": None, "link": block,
                      "nested": {"a": [1, {"b": 2.5}]}})
    return r


def run(text: str, resolver: MemoryResolver, **limits: int) -> object:
    options = ConditionOptions(**limits)
    return evaluate(parse_untrusted(text, options), resolver, options)


def test_package_exports_exactly_the_public_api() -> None:
    expected = {
        "BadCondition", "BadRule", "ConditionError", "ConditionOptions", "EvaluationError",
        "Expr", "InvalidOptions", "LimitExceeded", "Ref", "Resolver", "ResultSpec", "Rule",
        "TASK_TYPE", "TASK_VERSION", "datasets_read", "evaluate", "fire",
        "has_dynamic_references", "holds", "parse_untrusted", "reads_work", "unparse", "WorkState",
    }
    assert set(conditions.__all__) == expected
    public = {name for name, value in vars(conditions).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == expected


def test_computes_example_fires_only_between_map_and_reduce(resolver: MemoryResolver) -> None:
    text = (f"len(dataset(hpcp('{G58}/split/results'))) == len(dataset(hpcp('{G58}/map/results')))"
            f" && !exist(dataset(hpcp('{G58}/reduce/results')))")
    expr = parse_untrusted(text)
    assert holds(expr, resolver)
    resolver.set(G, "reduce/results", 4)
    assert not holds(expr, resolver)
    resolver.set(G, "map/results", [1])
    resolver.set(G, "reduce/results", None)
    assert not holds(expr, resolver)


def test_hpcp_accepts_base32_and_base58_genesis_alike(resolver: MemoryResolver) -> None:
    assert run(f"hpcp('{G58}/split/results')", resolver) == Ref(G, "split/results")
    assert run(f"hpcp('{G}/split/results') == hpcp('{G58}/split/results/')", resolver) is True
    assert run(f"hpcp('{G}')", resolver) == Ref(G, "")


VALID = [
    # literals and logic
    ("true", True), ("false", False), ("null", None), ("42", 42), ("-1.5e2", -150.0),
    ("'it\\'s'", "it's"), ('"tab\\there"', "tab\there"), ("'\\u00e9\\ud83d\\ude00'", "é😀"),
    ("true && false || true", True), ("true && (false || true)", True),
    ("!true || !!true", True), ("!0", True), ("!''", True), ("!'x'", False),
    ("1 == 1.0", True), ("1 != 2", True), ("'a' < 'b'", True), ("2 >= 2", True),
    ("'b' > 'ab'", True), ("null == null", True), ("null == 0", False), ("0 != null", True),
    # precedence: ! binds tighter than comparison, && tighter than ||
    ("!false == true", True), ("true || false && false", True),
    # functions
    (f"len(dataset(hpcp('{G}/split/results')))", 3),
    (f"len(dataset(hpcp('{G}/absent')))", 0),
    ("len('héllo')", 5),
    (f"exist(dataset(hpcp('{G}/meta')))", True),
    (f"exist(get(dataset(hpcp('{G}/meta')), 'zero'))", True),
    (f"exist(get(dataset(hpcp('{G}/meta')), 'empty'))", False),
    (f"exist(get(dataset(hpcp('{G}/meta')), 'none'))", False),
    (f"exist(get(get(dataset(hpcp('{G}/meta')), 'flags'), 1))", True),
    (f"keys(dataset(hpcp('{G}/meta')))",
     ["2", "10", "link", "name", "none", "zero", "empty", "flags", "nested"]),
    (f"get(values(dataset(hpcp('{G}/meta'))), 0)", "two"),
    (f"count(dataset(hpcp('{G}/meta')))", 7),
    (f"count(dataset(hpcp('{G}/split/results')))", 3),
    (f"all(get(dataset(hpcp('{G}/meta')), 'flags'))", False),
    (f"any(get(dataset(hpcp('{G}/meta')), 'flags'))", True),
    ("all(null)", False), ("any(null)", False), ("count(null)", 0), ("keys(null)", []),
    (f"get(get(get(get(dataset(hpcp('{G}/meta')), 'nested'), 'a'), 1), 'b') == 2.5", True),
    (f"get(dataset(hpcp('{G}/split/results')), 7)", None),
    (f"get(dataset(get(dataset(hpcp('{G}/meta')), 'link')), 'hello')", "world"),
    (f"dataset(hpcp('{G}/meta/nested')) == dataset(hpcp('{G}/meta/nested'))", True),
    (f"dataset(hpcp('{G}/split/results')) == dataset(hpcp('{G}/map/results'))", False),
    # whitespace and newlines anywhere between tokens
    ("\n  len ( 'ab' )\n\t==\r\n 2 ", True),
]


@pytest.mark.parametrize(("text", "value"), VALID)
def test_valid_condition_evaluates_to_expected_value(text: str, value: object,
                                                     resolver: MemoryResolver) -> None:
    assert run(text, resolver) == value


def test_dataset_reads_a_block_by_cid_string_or_link(resolver: MemoryResolver) -> None:
    block = cid_of(BLOCK_VALUE)
    assert run(f"dataset('{block}')", resolver) == BLOCK_VALUE
    assert run(f"dataset('{block.encode('base58btc')}')", resolver) == BLOCK_VALUE
    resolver.set(G, "linkjson", block.to_json())
    assert run(f"dataset(dataset(hpcp('{G}/linkjson')))", resolver) == BLOCK_VALUE


INVALID = [
    # text, line, column, one of the expected descriptions (or None)
    ("", 1, 1, "function name"),
    ("len(1", 1, 6, "')'"),
    ("len(1))", 1, 7, "end of input"),
    ("1 == 2 == 3", 1, 8, "'&&'"),
    ("a", 1, 2, "'('"),
    ("len()", 1, 1, "1 argument"),
    ("get(1)", 1, 1, "2 arguments"),
    ("nosuch(1)", 1, 1, "len"),
    ("__import__('os')", 1, 1, "exist"),
    ("1 = 1", 1, 3, None),
    ("1 & 2", 1, 3, None),
    ("'open", 1, 1, None),
    ("'bad \\q escape'", 1, 6, "\\uXXXX"),
    ("'\\u12'", 1, 2, "\\uXXXX"),
    ("true\n&& len(\n  @)", 3, 3, "string"),
    ("1e400", 1, 1, None),
    ("18446744073709551616", 1, 1, None),
    ("-18446744073709551617", 1, 1, None),
    ("hpcp('not-a-cid/x')", 1, 6, "'<genesis CID>/<path>'"),
    (f"hpcp('{G}/a//b')", 1, 6, None),
    ("01", 1, 2, None),
    ("trueish", 1, 8, "'('"),
]


@pytest.mark.parametrize(("text", "line", "column", "expected"), INVALID)
def test_invalid_condition_reports_position_and_expectation(text: str, line: int, column: int,
                                                            expected: str | None) -> None:
    with pytest.raises(BadCondition) as info:
        parse_untrusted(text)
    assert (info.value.line, info.value.column) == (line, column)
    if expected is not None:
        assert expected in info.value.expected
    assert info.value.expected == sorted(info.value.expected)


def test_non_string_condition_is_bad_condition() -> None:
    with pytest.raises(BadCondition):
        parse_untrusted(b"true")  # type: ignore[arg-type]


def test_boundary_integers_are_accepted() -> None:
    assert evaluate(parse_untrusted("18446744073709551615"), MemoryResolver()) == 2**64 - 1
    assert evaluate(parse_untrusted("-18446744073709551616"), MemoryResolver()) == -(2**64)


ERRORS = [
    ("len(1)", 1, 1, "len() needs"),
    ("1 < 'a'", 1, 3, "cannot order"),
    ("true == 1", 1, 6, "cannot compare bool with number"),
    ("'3' == 3", 1, 5, "cannot compare string with number"),
    ("null < 1", 1, 6, "cannot order"),
    (f"len(hpcp('{G}/x'))", 1, 1, "dataset()"),
    ("dataset('nope')", 1, 1, "multibase"),
    ("dataset(1)", 1, 1, "dataset() needs"),
    ("hpcp(1)", 1, 1, "hpcp() needs"),
    ("keys(1)", 1, 1, "keys() needs"),
    ("count('abc')", 1, 1, "count() argument needs"),
    ("get(1, 1)", 1, 1, "get() needs"),
    ("get(keys(null), 'a')", 1, 1, "integer index"),
    ("true &&\n  1 >= 'x'", 2, 5, "cannot order"),
]


@pytest.mark.parametrize(("text", "line", "column", "reason"), ERRORS)
def test_runtime_type_error_is_evaluation_error_with_position(
        text: str, line: int, column: int, reason: str, resolver: MemoryResolver) -> None:
    with pytest.raises(EvaluationError) as info:
        run(text, resolver)
    assert (info.value.line, info.value.column) == (line, column)
    assert reason in info.value.reason


def test_mismatched_kinds_inside_collections_are_unequal_not_errors(
        resolver: MemoryResolver) -> None:
    resolver.set(G, "a", [1, "x", {"k": True}])
    resolver.set(G, "b", [1, "x", {"k": 1}])
    assert run(f"dataset(hpcp('{G}/a')) == dataset(hpcp('{G}/b'))", resolver) is False
    assert run(f"dataset(hpcp('{G}/a')) != dataset(hpcp('{G}/b'))", resolver) is True


def test_and_or_short_circuit_skip_reads_and_errors(resolver: MemoryResolver) -> None:
    assert run("false && len(1) == 0", resolver) is False
    assert run("true || len(1) == 0", resolver) is True
    before = resolver.calls
    assert run(f"false && exist(dataset(hpcp('{G}/split/results')))", resolver) is False
    assert resolver.calls == before


def test_holds_uses_truthiness_of_the_result(resolver: MemoryResolver) -> None:
    assert holds(parse_untrusted(f"dataset(hpcp('{G}/split/results'))"), resolver)
    assert not holds(parse_untrusted(f"dataset(hpcp('{G}/absent'))"), resolver)
    assert not holds(parse_untrusted("0"), resolver)
    assert holds(parse_untrusted(f"hpcp('{G}/absent')"), resolver)


def test_unsupported_resolver_values_are_evaluation_errors(resolver: MemoryResolver) -> None:
    resolver.set(G, "nan", float("nan"))
    resolver.set(G, "obj", object())
    for path in ("nan", "obj"):
        with pytest.raises(EvaluationError):
            holds(parse_untrusted(f"dataset(hpcp('{G}/{path}'))"), resolver)
        with pytest.raises(EvaluationError):
            run(f"exist(dataset(hpcp('{G}/{path}')))", resolver)


def test_text_longer_than_max_length_is_refused() -> None:
    with pytest.raises(BadCondition, match="max_length"):
        parse_untrusted("true" + " " * 4093)
    assert parse_untrusted("true" + " " * 4092) == Literal(value=True)


@pytest.mark.parametrize("text", ["(" * 2000 + "1" + ")" * 2000, "!" * 4000 + "1",
                                  "len(" * 800 + "1" + ")" * 800])
def test_hostile_nesting_is_refused_without_recursion_error(text: str) -> None:
    options = ConditionOptions(max_length=10_000)
    if text.startswith("("):
        assert parse_untrusted(text, options) == Literal(value=1)  # parentheses cost nothing
        return
    with pytest.raises(BadCondition, match="max_depth") as info:
        parse_untrusted(text, options)
    assert info.value.line == 1


def test_depth_limit_counts_nesting_not_chain_length() -> None:
    chain = " && ".join(["true"] * 500)
    assert isinstance(parse_untrusted(chain), And)
    assert parse_untrusted("!" * 31 + "true", ConditionOptions(max_depth=32))
    with pytest.raises(BadCondition):
        parse_untrusted("!" * 32 + "true", ConditionOptions(max_depth=32))


def test_hand_built_deep_tree_hits_depth_limit_at_evaluation() -> None:
    expr = Literal(value=True)
    for _ in range(5000):
        expr = Not(operand=expr)
    with pytest.raises(LimitExceeded):
        evaluate(expr, MemoryResolver())


def test_unknown_function_in_hand_built_tree_is_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="unknown function"):
        evaluate(Call(name="eval", args=(Literal(value="1"),)), MemoryResolver())


def test_step_limit_bounds_work(resolver: MemoryResolver) -> None:
    text = " || ".join(["false"] * 50)
    assert run(text, resolver, max_steps=51) is False
    with pytest.raises(LimitExceeded, match="max_steps"):
        run(text, resolver, max_steps=50)


def test_collection_elements_cost_steps_and_respect_max_collection(
        resolver: MemoryResolver) -> None:
    resolver.set(G, "big", list(range(1000)))
    big = f"dataset(hpcp('{G}/big'))"
    assert run(f"len({big})", resolver, max_steps=10, max_collection=10) == 1000
    with pytest.raises(LimitExceeded, match="max_collection"):
        run(f"count({big})", resolver, max_collection=999)
    with pytest.raises(LimitExceeded, match="max_steps"):
        run(f"count({big})", resolver, max_steps=999)
    with pytest.raises(LimitExceeded, match="max_steps"):
        run(f"{big} == {big}", resolver, max_steps=999)
    assert run(f"count({big})", resolver) == 1000


def test_deeply_nested_data_compares_without_recursion_error(resolver: MemoryResolver) -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    resolver.set(G, "deep", deep)
    assert run(f"dataset(hpcp('{G}/deep')) == dataset(hpcp('{G}/deep'))", resolver) is True


@pytest.mark.parametrize("field", ["max_length", "max_depth", "max_steps", "max_collection"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_options_reject_out_of_range_values(field: str, value: object) -> None:
    with pytest.raises(InvalidOptions):
        ConditionOptions(**{field: value})


def test_options_cap_depth_below_python_recursion_limit() -> None:
    with pytest.raises(InvalidOptions):
        ConditionOptions(max_depth=201)


def test_options_defaults_match_the_documented_limits() -> None:
    assert ConditionOptions() == ConditionOptions(max_length=4096, max_depth=32,
                                                  max_steps=10_000, max_collection=100_000)


def test_trees_compare_by_structure_and_unparse_round_trips() -> None:
    text = f"!exist(dataset(hpcp('{G58}/map/results'))) && (1 < 2 || 'a\\n' == \"b\")"
    expr = parse_untrusted(text)
    assert parse_untrusted(unparse(expr)) == expr
    assert parse_untrusted("a(1)".replace("a", "len")) == Call(name="len", args=(Literal(value=1),))
    nested = Or(operands=(Literal(value=1), Or(operands=(Literal(value=2), Literal(value=3)))))
    assert parse_untrusted(unparse(nested)) == nested
    compare = Compare(op="==", left=Not(operand=Literal(value=1)),
                      right=Compare(op="<", left=Literal(value=1), right=Literal(value=2)))
    assert parse_untrusted(unparse(compare)) == compare


def test_datasets_read_lists_literal_genesis_cids() -> None:
    other = cid_of({"other": 1})
    expr = parse_untrusted(f"exist(dataset(hpcp('{G58}/a'))) || len(dataset(hpcp('{other}/b'))) > 1")
    assert datasets_read(expr) == {G, other}
    assert not has_dynamic_references(expr)
    dynamic = parse_untrusted(f"exist(dataset(hpcp(get(dataset(hpcp('{G}/a')), 'where'))))")
    assert datasets_read(dynamic) == {G}
    assert has_dynamic_references(dynamic)


def test_docs_show_the_grammar_exactly_as_the_parser_uses_it() -> None:
    root = Path(__file__).resolve().parents[1]
    grammar = (root / "conditions" / "grammar.lark").read_text(encoding="utf-8")
    docs = (root / "docs" / "conditions.md").read_text(encoding="utf-8")
    assert grammar.strip() in docs
