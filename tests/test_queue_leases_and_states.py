"""The Manager protocol over the queue GOHO: Enqueue, Next, Assign, Complete, Status."""

from __future__ import annotations

import pytest

from lattice import codec, dataset, goho, queue, records, results, signing, task
from lattice.blockstore import MemoryBlockStore
from lattice.errors import BadInput

from ._queue_fixture import fresh_queue, task_cid
from ._result_records import signed_v1

SIGNER = signing.Signer.from_seed(b"\x01" * 32)
OTHER = signing.Signer.from_seed(b"\x02" * 32)


_queue = fresh_queue
_task = task_cid


def test_enqueue_is_idempotent_and_content_addressed() -> None:
    rep, view = _queue()
    t = _task(1)
    assert t == _task(1) and t != _task(2)
    rep.update(queue.enqueue_ops([t]), SIGNER)
    rep.update(queue.enqueue_ops([t]), SIGNER)
    assert len(view) == 1
    assert view.counts(0)["available"] == 1


def test_next_skips_leased_and_returns_after_expiry_with_next_attempt() -> None:
    rep, view = _queue()
    a, b = _task(1), _task(2)
    rep.update(queue.enqueue_ops([a, b]), SIGNER)
    assert view.next(1_000, limit=5) == [a, b]
    rep.update([queue.assign_op(a, "p1", 1_000, 5_000, view.next_attempt(a))], SIGNER)
    assert view.next(2_000, limit=5) == [b]
    assert view.status(a, 2_000).state == "assigned"
    # Lease expired: the task can be stolen, with attempt 2.
    assert view.status(a, 6_001).state == "available"
    assert a in view.next(6_001, limit=5)
    assert view.next_attempt(a) == 2


def test_complete_and_final_failure_are_terminal() -> None:
    rep, view = _queue()
    a, b = _task(1), _task(2)
    rep.update(queue.enqueue_ops([a, b]), SIGNER)
    rep.update([queue.assign_op(a, "p1", 0, 10_000, 1), queue.complete_op(a, "p1", 5, codec.cid_of("r"))], SIGNER)
    rep.update([queue.assign_op(b, "p1", 0, 10_000, 1), queue.fail_op(b, "p1", 5, 1, "exit status 1", False)], SIGNER)
    assert view.status(b, 10).state == "available"
    assert view.failures(b) == 1
    rep.update([queue.assign_op(b, "p2", 6, 10_000, 2), queue.fail_op(b, "p2", 6, 2, "exit status 1", True)], SIGNER)
    assert view.status(a, 10).state == "completed"
    assert view.status(b, 10).state == "failed"
    assert view.next(10, limit=5) == []
    assert view.counts(10) == {"available": 0, "assigned": 0, "completed": 1, "failed": 1, "cancelled": 0, "total": 2}


def test_failed_attempt_voids_its_lease() -> None:
    rep, view = _queue()
    a = _task(1)
    rep.update(queue.enqueue_ops([a]) + [queue.assign_op(a, "p1", 0, 60_000, 1)], SIGNER)
    assert view.next(10) == []
    rep.update([queue.fail_op(a, "p1", 20, 1, "boom", False)], SIGNER)
    assert view.next(30) == [a]


def test_concurrent_assignments_resolve_to_one_winner_in_any_merge_order() -> None:
    g = records.make_genesis("queue", "race")[0]
    reps = [goho.Replica.empty(g, MemoryBlockStore()) for _ in range(2)]
    a = _task(1)
    blocks = [reps[0].update(queue.enqueue_ops([a]), SIGNER)]
    reps[1].receive_untrusted(*blocks[0])
    b1 = reps[0].update([queue.assign_op(a, "pA", 100, 5_000, 1)], SIGNER)
    b2 = reps[1].update([queue.assign_op(a, "pB", 100, 5_000, 1)], OTHER)
    reps[0].receive_untrusted(*b2)
    reps[1].receive_untrusted(*b1)
    holders = [queue.QueueView(r).holder(a, 200) for r in reps]
    assert holders[0] == holders[1] and holders[0].by == "pA"


def test_malformed_records_from_peers_are_ignored_by_the_view() -> None:
    rep, view = _queue()
    a = _task(1)
    rep.update(queue.enqueue_ops([a]) + [["add", "assigned", {"task": "nope"}], ["add", "available", "x"]], SIGNER)
    assert view.next(0) == [a]
    assert len(view) == 1


def test_results_view_keeps_only_correctly_signed_records() -> None:
    # v1 records (old peers) carry their own signature; v2 ones are covered by
    # tests/test_result_records_are_authenticated_by_their_delta.py.
    g = records.make_genesis("results", "t")[0]
    rep = goho.Replica.empty(g, MemoryBlockStore())
    view = results.ResultsView(rep)
    a = _task(1)
    me = signing.peer_id_of(SIGNER.public)
    good = signed_v1(SIGNER, a, codec.cid_of({"out": 1}), me, 5)
    forged = dict(good, output=codec.cid_of({"out": 2}))
    # Correctly signed, but in another runner's name.
    impostor = signed_v1(OTHER, a, codec.cid_of({"out": 3}), me, 6)
    rep.update([results.result_op(good), results.result_op(forged), results.result_op(impostor)], SIGNER)
    assert [r["output"] for r in view.results(a)] == [good["output"]]
    assert view.statistics().rejected == 2


def test_dataset_set_and_append_paths() -> None:
    g = records.make_genesis("dataset", "d")[0]
    rep = goho.Replica.empty(g, MemoryBlockStore())
    rep.update([dataset.set_op("split/input", {"n": 10}), dataset.append_op("map/results", 3), dataset.append_op("map/results", 1)], SIGNER)
    rep.update([dataset.set_op("split/input", {"n": 20})], OTHER)
    assert dataset.get(rep, "split/input") == {"n": 20}
    assert dataset.get(rep, "map/results") == [1, 3]
    assert dataset.get(rep, "split") == {"input": {"n": 20}}
    assert dataset.get(rep, "reduce/results") is None
    with pytest.raises(ValueError):
        dataset.set_op("../x", 1)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"input": {"value": 1}},
        {"input": {"dataset": "x", "path": "p"}, "taskDefinition": {"runner": {"type": "bin-json-runner"}}},
        {"input": {"value": 1}, "taskDefinition": {"runner": {"type": "sh"}}},
        {"input": {"value": 1}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": "bafyNOTACID"}}}},
        {"input": {"value": 1}, "taskDefinition": {"runner": {"type": "bin-json-runner"}}, "result": {"action": "replace"}},
        {"input": {"value": float("nan")}, "taskDefinition": {"runner": {"type": "bin-json-runner"}}},
    ],
)
def test_bad_tasks_are_rejected_with_bad_input(bad) -> None:
    with pytest.raises(BadInput):
        task.task_from_json_untrusted(bad)


def test_listing2_form_with_base58_links_is_accepted() -> None:
    link = codec.cid_of({"d": 1})
    cid, _, rec = task.task_from_json_untrusted({
        "input": {"dataset": {"/": link.encode("base58btc")}, "path": "split/input"},
        "taskDefinition": {"runner": {"type": "docker-json-runner", "metadata": {"image": "computes/fibonacci-sum-split:latest"}}},
        "result": {"action": "set", "destination": {"dataset": {"/": str(link)}, "path": "split/results"}},
    })
    assert rec["input"]["dataset"] == link
    assert cid == task.task_from_json_untrusted(codec.to_json(rec))[0]
