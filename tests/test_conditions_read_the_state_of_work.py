"""Conditions read the state of work: ``task_state()`` and ``failures()``.

The state comes through the resolver's ``work`` attribute (a
:class:`conditions.WorkState`); here a dict-backed one stands behind that
protocol.  Also: which rules read work (:func:`conditions.reads_work`), that
the Evaluator's rule book re-evaluates them when the queue changes, and the
daemon's index of a job's failed tasks over a real queue view.
"""

from __future__ import annotations

from typing import Any

import pytest

from conditions import ConditionOptions, EvaluationError, LimitExceeded, Rule, evaluate, parse_untrusted, reads_work
from conditions.testing import MemoryResolver
from lattice import codec, goho, queue, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from meshd.roles import jobs
from meshd.roles.evaluator import RuleBook
from meshd.roles.workstate import QueueWork

G = codec.cid_of({"job": 1})
T1, T2 = codec.cid_of({"task": 1}), codec.cid_of({"task": 2})


class _Work:
    """A :class:`conditions.WorkState` over dicts."""

    def __init__(self) -> None:
        self.states: dict[CID, str] = {}
        self.failed: dict[CID, list[dict[str, Any]]] = {}

    def task_state(self, task: CID) -> str | None:
        return self.states.get(task)

    def job_failures(self, dataset: CID) -> list[dict[str, Any]]:
        return list(self.failed.get(dataset, []))


def _resolver(work: _Work | None) -> MemoryResolver:
    r = MemoryResolver()
    r.work = work  # type: ignore[attr-defined]
    return r


def run(text: str, resolver: MemoryResolver, **limits: int) -> object:
    options = ConditionOptions(**limits)
    return evaluate(parse_untrusted(text, options), resolver, options)


def test_task_state_reads_the_queue_by_cid_string_or_link() -> None:
    work = _Work()
    work.states[T1] = "failed"
    r = _resolver(work)
    assert run(f"task_state('{T1}')", r) == "failed"
    assert run(f"task_state('{T1}') == 'failed'", r) is True
    assert run(f"task_state('{T2}')", r) is None  # not in the queue
    assert run("task_state(null)", r) is None


def test_failures_lists_a_jobs_failed_tasks() -> None:
    work = _Work()
    work.failed[G] = [{"task": T1, "error": "exit status 3", "name": None}]
    r = _resolver(work)
    assert run(f"len(failures(hpcp('{G}/'))) > 0", r) is True
    assert run(f"get(get(failures('{G}'), 0), 'error')", r) == "exit status 3"
    assert run(f"failures('{T2}')", r) == []
    assert run("failures(null)", r) == []


def test_failures_is_bounded_by_the_collection_limit() -> None:
    work = _Work()
    work.failed[G] = [{"task": codec.cid_of({"t": i}), "error": "x", "name": None} for i in range(20)]
    with pytest.raises(LimitExceeded):
        run(f"failures('{G}')", _resolver(work), max_collection=10)


def test_bad_arguments_and_a_missing_work_state_are_evaluation_errors() -> None:
    with pytest.raises(EvaluationError, match="does not supply"):
        run(f"task_state('{T1}')", _resolver(None))
    with pytest.raises(EvaluationError, match="does not supply"):
        run(f"failures('{G}')", MemoryResolver())
    with pytest.raises(EvaluationError):
        run("task_state(42)", _resolver(_Work()))
    with pytest.raises(EvaluationError):
        run("failures('not a cid')", _resolver(_Work()))


def test_reads_work_finds_the_work_functions_anywhere() -> None:
    assert reads_work(parse_untrusted(f"true && !(len(failures('{G}')) == 0)"))
    assert reads_work(parse_untrusted(f"task_state('{T1}') == 'failed'"))
    assert not reads_work(parse_untrusted(f"exist(dataset(hpcp('{G}/a')))"))


def _rule(condition: str) -> jobs.RuleEntry:
    return jobs.RuleEntry(Rule.from_json_untrusted({
        "condition": condition, "action": "enqueue", "taskDefinition": {"/": str(T2)}, "input": {"x": 1},
        "result": {"action": "set", "destination": {"dataset": {"/": str(G)}, "path": "fallback/results"}}}))


def test_rules_reading_work_are_affected_by_queue_changes() -> None:
    book = RuleBook(ConditionOptions())
    work_origin, data_origin = codec.cid_of({"o": 1}), codec.cid_of({"o": 2})
    book.set_rules(work_origin, [(0, _rule(f"task_state('{T1}') == 'failed'"))])
    book.set_rules(data_origin, [(0, _rule(f"exist(dataset(hpcp('{G}/a')))"))])
    assert book.affected([], work=True) == {work_origin}
    assert book.affected([G]) == {data_origin}  # a dataset change alone leaves the work rule be
    book.set_rules(work_origin, [])
    assert book.affected([], work=True) == set()


class _QueueNode:
    """What :class:`QueueWork` reads: a real queue view and task bodies."""

    def __init__(self, view: queue.QueueView, bodies: dict[CID, dict[str, Any]]) -> None:
        self.queue = view
        self._bodies = bodies

    def task_record(self, cid: CID) -> dict[str, Any]:
        return self._bodies[cid]


def test_queue_work_reads_a_datasets_failed_tasks_from_the_queue() -> None:
    signer = signing.Signer.from_seed(b"\x61" * 32)
    me = signing.peer_id_of(signer.public)
    rep = goho.Replica.empty(records.make_genesis("queue", "work")[0], MemoryBlockStore())
    view = queue.QueueView(rep)
    dest = {"action": "set", "destination": {"dataset": G, "path": "work/results"}}
    bodies = {T1: {"input": {"value": 1}, "result": dest, "name": "first"},
              T2: {"input": {"dataset": G, "path": "work/input"}}}
    work = QueueWork(_QueueNode(view, bodies))
    for t, rec in bodies.items():
        work.index(t, rec)

    def commit(ops: list[list[Any]]) -> None:
        parents, height = rep.tip()
        cid, data = records.sign_delta(signer, rep.genesis, parents, height, ops)
        assert rep.receive_untrusted(cid, data).applied

    commit(queue.enqueue_ops([T1, T2]) + [queue.assign_op(T1, me, 1000, 10_000, 1),
                                           queue.assign_op(T2, me, 1000, 10_000, 1)])
    assert work.job_failures(G) == []
    commit([queue.fail_op(T1, me, 1100, 1, "exit status 3", True), queue.fail_op(T2, me, 1100, 1, "again", False)])
    assert work.job_failures(G) == [{"task": T1, "error": "exit status 3", "name": "first"}]
    assert work.task_state(T1) == "failed"
    assert work.task_state(codec.cid_of({"task": 9})) is None
    assert work.job_failures(codec.cid_of({"other": 1})) == []
