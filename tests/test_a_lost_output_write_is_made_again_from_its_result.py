"""A runner that dies after its completion reached its peers but before its dataset write did does not stall the job.

The runner commits the result record, the write to the task's destination and
the completion separately (meshd/roles/runner.py).  SIGKILLed in between, its
peers can hold the completion and the result but never the write: the map
stage reads 24/24 done, the reduce's condition never holds, and the job is
``stalled`` for good (seen in tests/test_pipeline_across_daemons.py).

In process, virtual time: an Evaluator node follows a fibsum job; the test
plays the runner, completing the split and every map task with signed result
records, but leaves one map output's write out.  The Evaluator's sweep
(meshd/roles/outputrepair.py) re-makes that write from the completion's result
record once the job has sat idle for the grace period, and the reduce fires.
A ``set`` path that already holds a value is never rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from conditions import ConditionOptions
from lattice import codec, dataset, queue, results
from lattice.cid import CID
from lattice.task import result_of
from meshd.roles import jobs
from meshd.roles.evaluator import Evaluator, EvaluatorOptions
from meshd.roles.outputrepair import RepairOptions, lost_writes

from ._inprocess_node import make_node, submit_fibsum

SEED = bytes([77]) * 32
GRACE_S = 15.0


async def run_task(node: Any, t: CID, output: Any, *, write: bool) -> None:
    """What the Runner commits for one task, optionally without its dataset write."""
    me, now = node.peer_id, 1_000
    out_cid, out_data = codec.encode_block(output)
    rec = results.result_record(node.objects.signer, t, out_cid, me, now)
    rcid, rdata = codec.encode_block(rec)
    await node.objects.commit(node.results_obj, [results.result_op(rec)], [(out_cid, out_data), (rcid, rdata)])
    dest = result_of(node.task_record(t), node.task_definition(node.task_record(t)))
    if write:
        ds = node.dataset_obj(dest["destination"]["dataset"], create=True)
        await node.objects.commit(ds, [dataset.write_op(dest["action"], dest["destination"]["path"], output)])
    await node.objects.commit(node.queue_obj, [queue.assign_op(t, me, now, 600_000, 1),
                                               queue.complete_op(t, me, now + 1, rcid)])


async def until(predicate: Any, timeout: float = 600) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_a_map_output_whose_write_never_arrived_is_rewritten_and_the_reduce_fires(
        tmp_path: Path, autojump_clock: Any) -> None:
    node = make_node(tmp_path, seed=SEED, mesh="repair-mesh")
    evaluator = Evaluator(node, EvaluatorOptions(repair=RepairOptions(interval_s=2.0, grace_s=GRACE_S)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        await nursery.start(evaluator.serve)
        job = await submit_fibsum(node)
        (split,) = node.queue.tasks()
        chunks = [{"start": 20 * i, "count": 20} for i in range(4)]
        await run_task(node, split, chunks, write=True)
        await until(lambda: len(node.queue) == 5)  # the split, then its 4 map tasks
        maps = list(node.queue.tasks())[1:]
        lost = maps[2]
        for i, t in enumerate(maps):
            await run_task(node, t, {"sum": str(100 + i)}, write=t != lost)
        job_data = node.objects.get(job).replica.state
        assert job_data.register_entry("map/results/2") is None  # the write that never arrived
        status = jobs.job_status(node, job, options=ConditionOptions(), now_ms=2_000)
        assert [s["done"] for s in status["stages"]] == [1, 4, 0] and status["state"] == "stalled"

        started = trio.current_time()
        await until(lambda: len(node.queue) == 6)  # the reduce fired
        waited = trio.current_time() - started
        nursery.cancel_scope.cancel()

    assert GRACE_S <= waited <= GRACE_S + 3 * 2.0  # not before the grace period, and at the next sweeps after it
    assert node.objects.get(job).replica.state.register("map/results/2") == {"sum": "102"}
    assert evaluator.repair.rewritten == 1 and node.counters["outputs_rewritten"] == 1
    reduce_rec = node.task_record(list(node.queue.tasks())[5])
    assert reduce_rec["input"]["value"] == [{"sum": str(100 + i)} for i in range(4)]  # the lost output included


async def test_a_set_path_that_holds_a_value_is_never_rewritten_and_an_append_is_idempotent(
        tmp_path: Path, autojump_clock: Any) -> None:
    node = make_node(tmp_path, seed=SEED, mesh="repair-mesh")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        job = await submit_fibsum(node)
        (split,) = node.queue.tasks()
        await run_task(node, split, [{"start": 0, "count": 5}], write=False)
        assert lost_writes(node, [split], 2_000) == {job: [dataset.set_op("split/results", [{"start": 0, "count": 5}])]}

        # Someone wrote the path since (a newer value): the old output is not put back over it.
        await node.objects.commit(node.objects.get(job), [dataset.set_op("split/results", [{"start": 0, "count": 9}])])
        assert lost_writes(node, [split], 2_000) == {}

        # An append re-made over an element already there leaves one element.
        obj = node.objects.get(job)
        for _ in range(2):
            await node.objects.commit(obj, [dataset.append_op("out", {"sum": "7"})])
        assert dataset.get(obj.replica, "out") == [{"sum": "7"}]
        nursery.cancel_scope.cancel()


def test_repair_options_are_validated() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        RepairOptions(interval_s=0)
    with pytest.raises(ValueError, match="grace_s"):
        RepairOptions(grace_s=-1)
    with pytest.raises(ValueError, match="max_jobs"):
        RepairOptions(max_jobs=0)
    with pytest.raises(ValueError, match="repair"):
        EvaluatorOptions(repair=object())  # type: ignore[arg-type]
