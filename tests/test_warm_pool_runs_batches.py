"""Warm pools run a batch of inputs per message: in order, each input failing alone, through EngineHost too."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from engines import (AuthPolicy, EngineHost, EngineMissing, HostOptions, PoolOptions, WarmPool, WorkerSpec,
                     publish_native)
from engines.examples import EXAMPLES_DIR
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, DAG_CBOR

from . import test_warm_pool
from .test_example_engines import fib_sum
from .test_warm_pool import ECHO_JSONL, ECHO_PY, once_spec, python_spec, wait_until

engine_dir = test_warm_pool.engine_dir  # the fixture: a directory holding its test engine, testengine.py
FIB_MAP = WorkerSpec("python", str(EXAMPLES_DIR), entry="fibsum:map_range")
#: A fibsum input that keeps a worker busy for about a second.
SLOW = {"start": 0, "stop": 200_000}


@pytest.mark.parametrize("spec", [ECHO_PY, ECHO_JSONL], ids=["python", "jsonl"])
async def test_a_batch_of_fifty_returns_fifty_outcomes_in_order(spec):
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(spec, PoolOptions(workers=2)).serve)
        inputs = [{"i": i, "s": "x" * (i % 7)} for i in range(50)]
        outcomes = await pool.run_batch(inputs)
        assert [o.output for o in outcomes] == inputs
        assert all(o.ok and o.runner == "native-warm" for o in outcomes)
        stats = pool.statistics()
        assert (stats.tasks_ok, stats.tasks_failed, stats.pending) == (50, 0, 0)
        assert await pool.run_batch([]) == []
        nursery.cancel_scope.cancel()


async def test_one_bad_input_fails_only_that_input():
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(FIB_MAP, PoolOptions(workers=1)).serve)
        inputs = [{"start": 0, "stop": 10}, {"stop": 3}, {"start": 0, "stop": 90}, float("nan"),
                  {"start": 5, "stop": 6}]
        outcomes = await pool.run_batch(inputs)
        assert [o.ok for o in outcomes] == [True, False, True, False, True]
        assert outcomes[1].error == "engine raised KeyError: 'start'"
        assert outcomes[3].error.startswith("input is not JSON")
        assert [o.output["sum"] for o in outcomes if o.ok] == [str(fib_sum(10)), str(fib_sum(90)), "5"]
        stats = pool.statistics()
        assert (stats.tasks_ok, stats.tasks_failed, stats.workers_started) == (3, 1, 1)
        nursery.cancel_scope.cancel()


async def test_a_batch_is_split_across_idle_workers_in_contiguous_chunks(engine_dir):
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(python_spec(engine_dir, "testengine:pid"), PoolOptions(workers=2)).serve)
        pids = [o.output for o in await pool.run_batch([{}] * 10)]
        assert len(set(pids[:5])) == len(set(pids[5:])) == 1 and pids[0] != pids[5]
        nursery.cancel_scope.cancel()


async def test_each_input_of_a_batch_counts_towards_recycling(engine_dir):
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(
            WarmPool(python_spec(engine_dir, "testengine:pid"), PoolOptions(workers=1, recycle_after=10)).serve)
        first = {o.output for o in await pool.run_batch([{}] * 10)}
        second = {o.output for o in await pool.run_batch([{}] * 10)}
        assert len(first) == len(second) == 1 and first != second
        assert pool.statistics().workers_recycled >= 1
        nursery.cancel_scope.cancel()


async def test_a_jsonl_engine_exiting_mid_batch_fails_the_rest_and_is_replaced(tmp_path):
    spec = once_spec(tmp_path)
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(spec, PoolOptions(workers=1)).serve)
        first, second, third = await pool.run_batch([[1], [2], [3]])
        assert first.ok and first.output == [1]
        assert not second.ok and second.error.startswith("engine exited")
        assert not third.ok and third.error.startswith("not run")
        again = await pool.run_batch([[4]])
        assert again[0].ok and again[0].output == [4]
        assert pool.statistics().workers_died == 1
        nursery.cancel_scope.cancel()


async def test_a_worker_killed_mid_batch_fails_the_batch_and_the_pool_recovers():
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(FIB_MAP, PoolOptions(workers=1)).serve)
        result = {}

        async def submit():
            result["outcomes"] = await pool.run_batch([{"start": 0, "stop": 5}] + [SLOW] * 8)

        nursery.start_soon(submit)
        await wait_until(lambda: pool.statistics().busy == 1)
        (worker,) = pool.process_groups()
        os.kill(worker, signal.SIGKILL)
        await wait_until(lambda: "outcomes" in result)
        outcomes = result["outcomes"]
        # The answers are one message: the input that ran first is lost too.
        assert len(outcomes) == 9
        assert all(not o.ok and o.error.startswith("worker died") and "SIGKILL" in o.error for o in outcomes)
        await wait_until(lambda: pool.statistics().idle == 1)
        assert [o.output for o in await pool.run_batch([{"start": 0, "stop": 10}] * 3)] == [
            {"sum": str(fib_sum(10))}] * 3
        stats = pool.statistics()
        assert (stats.workers_died, stats.workers_started, stats.tasks_failed, stats.tasks_ok) == (1, 2, 9, 3)
        nursery.cancel_scope.cancel()


async def test_a_batch_over_its_deadline_fails_and_the_worker_is_replaced(engine_dir):
    spec = python_spec(engine_dir, "testengine:hang", timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(spec, PoolOptions(workers=1)).serve)
        outcomes = await pool.run_batch([{}] * 3)
        # The deadline is timeout_s per input, for the batch as a whole.
        assert [o.error for o in outcomes] == ["timeout after 0.6 s (a batch of 3, 0.2 s per input)"] * 3
        await wait_until(lambda: pool.statistics().idle == 1)
        assert pool.statistics().workers_started == 2
        nursery.cancel_scope.cancel()


async def test_cancelling_a_batch_leaves_the_pool_usable():
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(FIB_MAP, PoolOptions(workers=1)).serve)
        running, queued = trio.CancelScope(), trio.CancelScope()

        async def submit(scope, inputs):
            with scope:
                await pool.run_batch(inputs)

        nursery.start_soon(submit, running, [SLOW] * 8)
        await wait_until(lambda: pool.statistics().busy == 1)
        nursery.start_soon(submit, queued, [SLOW] * 4)
        await wait_until(lambda: pool.statistics().pending == 4)
        queued.cancel()  # a queued batch is dropped; the busy worker is left alone
        await wait_until(lambda: pool.statistics().pending == 0)
        assert pool.statistics().workers_died == 0 and pool.statistics().busy == 1
        running.cancel()  # a batch on a worker kills that worker, which is replaced
        await wait_until(lambda: pool.statistics().idle == 1)
        assert pool.statistics().workers_started == 2
        outcomes = await pool.run_batch([{"start": 0, "stop": 90}, {"start": 90, "stop": 90}])
        assert [o.output for o in outcomes] == [{"sum": str(fib_sum(90))}, {"sum": "0"}]
        nursery.cancel_scope.cancel()


async def test_engine_host_runs_a_batch_on_a_warm_python_engine_and_cold_one_by_one():
    store = MemoryBlockStore()
    cid = publish_native(store, EXAMPLES_DIR, "examples", executable="fibsum.py", protocol="python",
                         entry="fibsum:map_range")
    ranges = [{"start": i * 10, "stop": i * 10 + 10} for i in range(20)]
    expected = [{"sum": str(fib_sum(r["stop"]) - fib_sum(r["start"]))} for r in ranges]
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        warm = await host.run_batch(cid, ranges, warm=True)
        assert [o.output for o in warm] == expected and {o.runner for o in warm} == {"native-warm"}
        cold = await host.run_batch(cid, ranges[:2] + [{}], warm=False)
        assert [o.output for o in cold[:2]] == expected[:2] and {o.runner for o in cold} == {"native-cold"}
        assert not cold[2].ok
        stats = host.statistics()
        assert (stats.runs, stats.warm, stats.cold, stats.pools) == (23, 20, 3, 1)
        nursery.cancel_scope.cancel()


async def test_engine_host_batch_refuses_and_raises_as_run_does():
    store = MemoryBlockStore()
    cid = publish_native(store, EXAMPLES_DIR / "echo.py", "echo", interpreter="python3", serve_args=["--jsonl"])
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        absent = CID.for_block(DAG_CBOR, b"absent")
        with pytest.raises(EngineMissing) as info:
            await host.run_batch(absent, [1, 2])
        assert info.value.missing == [absent]
        untrusted = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy()).serve)
        refused = await untrusted.run_batch(cid, [1, 2])
        assert [o.ok for o in refused] == [False, False] and refused[0].error.startswith("not authorized")
        chunks = [c for c in store.cids() if c.codec == 0x55]
        store.delete(chunks[-1])
        with pytest.raises(EngineMissing) as info:
            await host.run_batch(cid, [1, 2], warm=True)
        assert info.value.missing == [chunks[-1]]
        nursery.cancel_scope.cancel()
