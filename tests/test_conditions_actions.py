"""Rules and their actions: decoding, enqueue/map/reduce, and deterministic tasks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conditions import (
    TASK_TYPE,
    BadCondition,
    BadRule,
    ConditionOptions,
    EvaluationError,
    LimitExceeded,
    Ref,
    Rule,
    fire,
)
from conditions.testing import MemoryResolver
from lattice.cid import CID
from lattice.codec import cid_of, encode

G = cid_of({"genesis": "actions tests"})
SPLIT_DEF = cid_of({"runner": "split"})
MAP_DEF = cid_of({"runner": "map"})
REDUCE_DEF = cid_of({"runner": "reduce"})


def loc(path: str) -> dict[str, Any]:
    return {"dataset": G.to_json(), "path": path}


DESTINATIONS = {"enqueue": "split/results", "map": "map/results", "reduce": "reduce/results"}


def rule_json(action: str, condition: str = "true", **extra: Any) -> dict[str, Any]:
    definition = {"enqueue": SPLIT_DEF, "map": MAP_DEF, "reduce": REDUCE_DEF}[action]
    out: dict[str, Any] = {"name": f"{action} rule", "condition": condition, "action": action,
                           "taskDefinition": definition.to_json(),
                           "result": {"action": "append" if action == "map" else "set",
                                      "destination": loc(DESTINATIONS[action])}}
    out.update({"enqueue": {"source": loc("split/input")},
                "map": {"source": loc("split/results")},
                "reduce": {"source": loc("map/results"), "split": loc("split/results")}}[action])
    out.update(extra)
    return out


def cids(tasks: list[dict[str, Any]]) -> list[CID]:
    return [cid_of(task) for task in tasks]


def test_whitepaper_listing_3_rule_decodes_with_base58_links() -> None:
    obj = rule_json("map", f"!exist(dataset(hpcp('{G.encode('base58btc')}/map/results')))")
    obj["taskDefinition"] = {"/": MAP_DEF.encode("base58btc")}
    rule = Rule.from_json_untrusted(obj)
    assert rule.action == "map"
    assert rule.task_definition == MAP_DEF
    assert rule.source == Ref(G, "split/results")
    assert rule.datasets() == {G}
    assert Rule.from_json_untrusted(rule.to_json()) == rule


def test_rule_json_with_decoded_cids_is_accepted() -> None:
    obj = rule_json("enqueue")
    obj["taskDefinition"] = SPLIT_DEF
    assert Rule.from_json_untrusted(obj).task_definition == SPLIT_DEF


BAD_RULES = [
    ("not a dict", ""),
    ({**rule_json("map"), "sorce": 1}, ""),
    ({**rule_json("map"), "name": 5}, "name"),
    ({k: v for k, v in rule_json("map").items() if k != "condition"}, "condition"),
    ({**rule_json("map"), "action": "explode"}, "action"),
    ({**rule_json("map"), "action": ["map"]}, "action"),
    ({**rule_json("map"), "taskDefinition": "bafy"}, "taskDefinition"),
    ({**rule_json("map"), "taskDefinition": {"/": "zzz"}}, "taskDefinition"),
    ({k: v for k, v in rule_json("map").items() if k != "source"}, "source"),
    ({**rule_json("map"), "source": {"dataset": G.to_json()}}, "source"),
    ({**rule_json("map"), "source": loc("a//b")}, "source.path"),
    ({**rule_json("map"), "source": {"dataset": {"/": 1}, "path": "x"}}, "source.dataset"),
    ({**rule_json("map"), "result": {"action": "set"}}, "result"),
    ({**rule_json("map"), "result": {"action": "merge", "destination": loc("x")}},
     "result.action"),
    ({**rule_json("map"), "result": {"action": {}, "destination": loc("x")}}, "result.action"),
    ({**rule_json("map"), "input": {"a": 1}}, "input"),
    ({**rule_json("map"), "split": loc("split/results")}, "split"),
    ({k: v for k, v in rule_json("reduce").items() if k != "split"}, "split"),
    ({k: v for k, v in rule_json("enqueue").items() if k != "source"}, "source"),
    ({**rule_json("enqueue"), "input": None}, "input"),
    ({**rule_json("enqueue"), "input": {"x": float("nan")}}, "input"),
    ({**rule_json("enqueue"), "input": {"x": {"/": "not-a-cid"}}}, "input"),
    ({**rule_json("enqueue"), "input": "lone \ud800 surrogate"}, "input"),
]


@pytest.mark.parametrize(("obj", "field"), BAD_RULES)
def test_malformed_rule_is_bad_rule_naming_the_field(obj: object, field: str) -> None:
    with pytest.raises(BadRule) as info:
        Rule.from_json_untrusted(obj)
    assert info.value.field == field


def test_rule_with_unparsable_condition_is_bad_condition() -> None:
    with pytest.raises(BadCondition):
        Rule.from_json_untrusted(rule_json("map", "len(("))


def test_false_condition_fires_nothing() -> None:
    for action in ("enqueue", "map", "reduce"):
        assert fire(Rule.from_json_untrusted(rule_json(action, "false")), MemoryResolver()) == []


def test_enqueue_makes_one_task_reading_the_source_location() -> None:
    tasks = fire(Rule.from_json_untrusted(rule_json("enqueue")), MemoryResolver())
    assert tasks == [{
        "t": TASK_TYPE, "v": 1,
        "input": {"dataset": G, "path": "split/input"},
        "taskDefinition": SPLIT_DEF,
        "result": {"action": "set", "destination": {"dataset": G, "path": "split/results"}},
    }]


def test_enqueue_with_literal_input_uses_it_and_decodes_links() -> None:
    obj = rule_json("enqueue", input={"n": 10, "engine": MAP_DEF.to_json()})
    (task,) = fire(Rule.from_json_untrusted(obj), MemoryResolver())
    assert task["input"] == {"n": 10, "engine": MAP_DEF}
    assert Rule.from_json_untrusted(Rule.from_json_untrusted(obj).to_json()).input == task["input"]


def test_map_makes_one_task_per_list_element_with_its_index() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", [5, 3, 3])
    tasks = fire(Rule.from_json_untrusted(rule_json("map")), r)
    assert [t["input"] for t in tasks] == [{"value": 5, "index": 0}, {"value": 3, "index": 1},
                                           {"value": 3, "index": 2}]
    assert len(set(cids(tasks))) == 3  # equal elements still give distinct tasks
    assert all(t["taskDefinition"] == MAP_DEF for t in tasks)


def test_map_over_dict_uses_canonical_key_order() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", {"10": "b", "2": "a", "x": "c"})
    tasks = fire(Rule.from_json_untrusted(rule_json("map")), r)
    # Shorter keys first, then bytewise: numeric keys sort numerically.
    assert [t["input"] for t in tasks] == [{"value": "a", "key": "2", "index": 0},
                                           {"value": "c", "key": "x", "index": 1},
                                           {"value": "b", "key": "10", "index": 2}]


def test_map_over_set_is_independent_of_iteration_order() -> None:
    first, second = MemoryResolver(), MemoryResolver()
    first.set(G, "split/results", {"pear", "apple", "fig"})
    second.set(G, "split/results", frozenset(["fig", "pear", "apple"]))
    rule = Rule.from_json_untrusted(rule_json("map"))
    assert cids(fire(rule, first)) == cids(fire(rule, second))


def test_map_over_absent_source_fires_nothing_and_over_scalar_is_an_error() -> None:
    rule = Rule.from_json_untrusted(rule_json("map"))
    assert fire(rule, MemoryResolver()) == []
    r = MemoryResolver()
    r.set(G, "split/results", 7)
    with pytest.raises(EvaluationError, match="map source"):
        fire(rule, r)


def test_map_refuses_more_tasks_than_max_collection() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", list(range(11)))
    rule = Rule.from_json_untrusted(rule_json("map"))
    assert len(fire(rule, r, ConditionOptions(max_collection=11))) == 11
    with pytest.raises(LimitExceeded):
        fire(rule, r, ConditionOptions(max_collection=10))


def test_map_element_that_is_not_dag_cbor_is_an_evaluation_error() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", [1.0, float("inf")])
    with pytest.raises(EvaluationError, match="DAG-CBOR"):
        fire(Rule.from_json_untrusted(rule_json("map")), r)


def test_map_element_with_lone_surrogate_is_an_evaluation_error() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", ["ok", "bad \udc00"])
    with pytest.raises(EvaluationError, match="DAG-CBOR"):
        fire(Rule.from_json_untrusted(rule_json("map")), r)


def test_tasks_are_independent_copies_of_resolver_data() -> None:
    r = MemoryResolver()
    element = {"words": ["a"]}
    r.set(G, "split/results", [element])
    (task,) = fire(Rule.from_json_untrusted(rule_json("map")), r)
    element["words"].append("b")
    assert task["input"]["value"] == {"words": ["a"]}


def test_reduce_waits_until_every_map_result_exists() -> None:
    rule = Rule.from_json_untrusted(rule_json("reduce"))
    r = MemoryResolver()
    assert fire(rule, r) == []  # no split yet: not "zero of zero results"
    r.set(G, "split/results", [1, 2, 3])
    r.set(G, "map/results", [1, 1])
    assert fire(rule, r) == []
    r.set(G, "map/results", [1, 1, None])
    assert fire(rule, r) == []  # null does not exist()
    r.set(G, "map/results", [2, 1, 1])
    (task,) = fire(rule, r)
    assert task["input"] == {"value": [1, 1, 2]}
    assert task["taskDefinition"] == REDUCE_DEF


def test_reduce_over_empty_split_fires_with_no_values() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", [])
    (task,) = fire(Rule.from_json_untrusted(rule_json("reduce")), r)
    assert task["input"] == {"value": []}


def test_reduce_task_does_not_depend_on_append_order() -> None:
    rule = Rule.from_json_untrusted(rule_json("reduce"))
    first, second = MemoryResolver(), MemoryResolver()
    for r, results in ((first, [{"w": 2}, "x", 7]), (second, [7, {"w": 2}, "x"])):
        r.set(G, "split/results", ["a", "b", "c"])
        r.set(G, "map/results", results)
    assert cids(fire(rule, first)) == cids(fire(rule, second))


def test_reduce_over_dict_results_uses_key_order() -> None:
    r = MemoryResolver()
    r.set(G, "split/results", ["a", "b"])
    r.set(G, "map/results", {"1": "second", "0": "first"})
    (task,) = fire(Rule.from_json_untrusted(rule_json("reduce")), r)
    assert task["input"] == {"value": ["first", "second"]}


def build_state(order: int) -> MemoryResolver:
    """Same logical state, built with different insertion orders and containers."""
    r = MemoryResolver()
    items = [("split/results", [{"n": 1, "s": "a"}, (2, 3), {"s": "b", "n": 4}]),
             ("map/results", [1, 2]), ("other", {"y": 1, "x": 2, "z": [3]})]
    for path, value in (items if order == 0 else reversed(items)):
        if order and isinstance(value, list):
            value = [dict(reversed(v.items())) if isinstance(v, dict) else list(v)
                     if isinstance(v, tuple) else v for v in value]
        r.set(G, path, copy.deepcopy(value))
    return r


@pytest.mark.parametrize("action", ["enqueue", "map", "reduce"])
def test_same_rule_over_same_state_gives_byte_identical_tasks(action: str) -> None:
    obj = rule_json(action, f"exist(dataset(hpcp('{G}/split/results')))")
    if action == "reduce":
        obj["source"] = loc("other")
    first = fire(Rule.from_json_untrusted(obj), build_state(0))
    second = fire(Rule.from_json_untrusted(copy.deepcopy(obj)), build_state(1))
    assert first, "the rule must fire for this test to mean anything"
    assert [encode(t) for t in first] == [encode(t) for t in second]
    assert cids(first) == cids(second)


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def run_to_quiescence(r: MemoryResolver, rules: list[Rule],
                      engines: dict[CID, Any]) -> list[CID]:
    """A toy evaluator + runner: fire every rule, run new tasks, until nothing is new.

    Tasks are deduplicated by CID exactly as the queue will do it; the loop is
    bounded so a rule that keeps generating new tasks fails the test.
    """
    done: list[CID] = []
    for _ in range(20):
        new = [t for rule in rules for t in fire(rule, r) if cid_of(t) not in done]
        if not new:
            return done
        for task in new:
            done.append(cid_of(task))
            output = engines[task["taskDefinition"]](task["input"], r)
            dest = task["result"]["destination"]
            current = r.resolve_path(dest["dataset"], dest["path"])
            if task["result"]["action"] == "append":
                r.set(dest["dataset"], dest["path"], (current or []) + [output])
            else:
                r.set(dest["dataset"], dest["path"], output)
    raise AssertionError("rules never quiesced")


def pipeline_rules(g: str) -> list[Rule]:
    return [Rule.from_json_untrusted(obj) for obj in (
        rule_json("enqueue", f"exist(dataset(hpcp('{g}/split/input')))"
                             f" && !exist(dataset(hpcp('{g}/split/results')))"),
        rule_json("map", f"exist(dataset(hpcp('{g}/split/results')))"
                         f" && !exist(dataset(hpcp('{g}/map/results')))"),
        rule_json("reduce", f"len(dataset(hpcp('{g}/split/results')))"
                            f" == len(dataset(hpcp('{g}/map/results')))"
                            f" && !exist(dataset(hpcp('{g}/reduce/results')))"),
    )]


def test_fibonacci_sum_runs_split_map_reduce_once_each() -> None:
    r = MemoryResolver()
    r.set(G, "split/input", 10)
    engines = {
        SPLIT_DEF: lambda inp, res: list(range(res.resolve_path(inp["dataset"], inp["path"]))),
        MAP_DEF: lambda inp, res: fib(inp["value"]),
        REDUCE_DEF: lambda inp, res: sum(inp["value"]),
    }
    # The map rule guards on !exist(map/results), so it fires once, for all 10
    # elements, before the first result lands; that is the whitepaper's shape.
    done = run_to_quiescence(r, pipeline_rules(G.encode("base58btc")), engines)
    assert len(done) == 1 + 10 + 1
    assert r.resolve_path(G, "reduce/results") == sum(fib(n) for n in range(10))


def test_word_count_runs_split_map_reduce() -> None:
    r = MemoryResolver()
    r.set(G, "split/input", "the cat saw the dog. the dog ran.")

    def count_words(inp: dict, res: MemoryResolver) -> dict[str, int]:
        counts: dict[str, int] = {}
        for word in inp["value"].replace(".", "").split():
            counts[word] = counts.get(word, 0) + 1
        return counts

    def merge(inp: dict, res: MemoryResolver) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in inp["value"]:
            for word, n in counts.items():
                total[word] = total.get(word, 0) + n
        return total

    engines = {
        SPLIT_DEF: lambda inp, res: [s for s in res.resolve_path(
            inp["dataset"], inp["path"]).split(". ") if s],
        MAP_DEF: count_words,
        REDUCE_DEF: merge,
    }
    run_to_quiescence(r, pipeline_rules(str(G)), engines)
    assert r.resolve_path(G, "reduce/results") == {"the": 3, "cat": 1, "saw": 1, "dog": 2, "ran": 1}
