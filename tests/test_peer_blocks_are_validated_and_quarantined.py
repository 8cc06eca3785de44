"""Peer task bodies are validated once, rejected for good, and failing roles are restarted.

Unit-level companions of ``test_daemon_survives_poisoned_queue.py``: the
``_untrusted`` task decoders reject each poison with ``BadInput``; the
quarantine remembers rejections across a reopen; a role that keeps failing is
restarted with exponential backoff and marks the node unhealthy after more
than three restarts in five minutes.
"""

from __future__ import annotations

import pytest
import trio

from lattice import codec, task
from lattice.cid import CID
from lattice.codec import DAG_CBOR
from lattice.errors import BadInput
from meshd.runtime.supervisor import Health, SupervisorOptions, supervise
from meshd.store.quarantine import Quarantine

ENGINE = codec.cid_of({"engine": 1})
TD = {"runner": {"type": "bin-json-runner", "engine": ENGINE}}

POISON = [
    pytest.param(b"\xff", id="not-cbor"),
    pytest.param(codec.encode({"constraints": [1]}), id="not-a-task"),
    pytest.param(codec.encode({"t": "meshd/task", "v": 1, "input": {"value": 1}, "taskDefinition": TD,
                               "constraints": [1]}), id="constraint-not-an-object"),
    pytest.param(codec.encode({"t": "meshd/task", "v": 1, "input": {"value": 1},
                               "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": "x"}}}),
                 id="engine-not-a-link"),
    pytest.param(codec.encode({"t": "meshd/task", "v": 2, "input": {"value": 1}, "taskDefinition": TD}),
                 id="unknown-version"),
    pytest.param(codec.encode([1, 2, 3]), id="a-list"),
    pytest.param(b"\xa1\x61x\xff", id="truncated-map"),
    pytest.param(codec.encode({"t": "meshd/task", "v": 1, "input": {"value": 1}, "taskDefinition": TD}) + b"\x00",
                 id="trailing-bytes"),
]


@pytest.mark.parametrize("data", POISON)
def test_task_block_decoder_rejects_poison(data: bytes) -> None:
    with pytest.raises(BadInput):
        task.task_from_block_untrusted(data)


def test_task_block_decoder_accepts_what_the_api_writes() -> None:
    cid, data, rec = task.task_from_json_untrusted(
        {"input": {"value": 3}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": str(ENGINE)}}}})
    assert task.task_from_block_untrusted(data) == rec


@pytest.mark.parametrize("data", [codec.encode({"runner": 5}), codec.encode(ENGINE), b"\xff",
                                  codec.encode({"runner": {"type": "no-such-runner"}})])
def test_definition_block_decoder_rejects_poison(data: bytes) -> None:
    with pytest.raises(BadInput):
        task.definition_from_block_untrusted(data)


def test_quarantine_remembers_rejections_across_a_reopen(tmp_path) -> None:
    path = tmp_path / "rejected.db"
    bad = CID.for_block(DAG_CBOR, b"\xff")
    q = Quarantine.open(path)
    assert q.add(bad, "bad_task", "invalid CBOR") is True
    assert q.add(bad, "bad_task", "again") is False  # counted once
    q.close()
    again = Quarantine.open(path)
    assert bad in again and again.reason(bad) == "invalid CBOR"
    assert again.statistics().by_kind == {"bad_task": 1}
    again.close()


async def test_a_failing_role_is_restarted_with_backoff_and_marks_the_node_unhealthy(autojump_clock) -> None:
    # The autojump clock makes the backoff (1, 2, 4, 8, 8... s) cost no real time.
    starts: list[float] = []

    async def flaky(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        raise ValueError("defect on a bad item")

    health = Health(SupervisorOptions(backoff_initial_s=1.0, backoff_max_s=8.0), clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "runner", flaky, health)
        await trio.sleep(40)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:])]
    assert gaps[:4] == [1, 2, 4, 8] and all(g == 8 for g in gaps[4:]), gaps
    st = health.statistics()
    assert st.roles["runner"].restarts == len(starts)  # each run failed once, and was restarted
    assert st.healthy is False
    assert "ValueError: defect on a bad item" in (st.roles["runner"].last_error or "")


async def test_a_role_that_fails_before_starting_does_not_block_start_up() -> None:
    async def broken(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("cannot start")

    health = Health(SupervisorOptions(backoff_initial_s=0.01, backoff_max_s=0.02))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "verifier", broken, health)
            while health.statistics().roles["verifier"].restarts < 5:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert health.statistics().healthy is False


async def test_health_recovers_once_restarts_leave_the_window() -> None:
    now = [0.0]
    health = Health(SupervisorOptions(unhealthy_restarts=3, unhealthy_window_s=300.0), clock=lambda: now[0])
    for _ in range(4):
        health.record_restart("runner", "boom")
    assert health.statistics().healthy is False
    now[0] = 301.0
    assert health.statistics().healthy is True
    assert health.statistics().roles["runner"].restarts == 4
