"""A real daemon completes a second identical task from the result cache, without running its engine.

Two tasks that differ only in name and nonce give the same (engine, input)
pair.  With a deterministic engine the second completes from the first's
result: the engine host's run count does not move, the task's status names
the source result, and the hit is counted in the queue status and in
``GET /metrics``.  An opted-out task and a non-deterministic engine run.
A verified task runs its replica while only an unverified result exists, and
completes from the cache once a verdict with its quorum does.
"""

from __future__ import annotations

import re
from typing import Any

from ._daemons import Daemon, echo_task, wait_for


def _runs(d: Daemon) -> int:
    return d.get("/v1/engines/policy").json()["host"]["runs"]


def _enqueue(d: Daemon, task: dict[str, Any]) -> str:
    r = d.post("/v1/tasks", task)
    assert r.status_code == 201, r.text
    return r.json()["cid"]


def _output(d: Daemon, cid: str) -> Any:
    return d.get(f"/v1/results/{cid}").json()["results"][0]["output"]


def _metric(d: Daemon, name: str) -> float:
    text = d.get("/metrics").text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_a_second_identical_task_completes_from_the_cache(daemon: Daemon) -> None:
    engine = daemon.add_echo_engine(deterministic=True)
    value = {"numbers": [1, 2, 3], "word": "mesh"}
    first = _enqueue(daemon, echo_task(engine, value, name="first"))
    done = daemon.wait_state(first, "completed", timeout=90)
    assert "cache" not in done
    runs = _runs(daemon)
    assert runs >= 1

    second = _enqueue(daemon, echo_task(engine, value, name="second", nonce="again"))
    assert second != first
    st = daemon.wait_state(second, "completed", timeout=90)
    assert _runs(daemon) == runs, "the engine ran for a task the cache should have completed"
    assert st["cache"]["hit"] is True
    assert st["cache"]["task"] == {"/": first}
    src = daemon.get(f"/v1/results/{first}").json()["results"][0]
    assert _output(daemon, second) == src["output"]
    assert daemon.get("/v1/queue").json()["cache_hits"] == 1
    assert _metric(daemon, "meshd_cache_hits_total") == 1

    # Opted out: it runs, and its own result is not a hit.
    third = _enqueue(daemon, echo_task(engine, value, name="third", cache=False))
    st = daemon.wait_state(third, "completed", timeout=90)
    assert "cache" not in st
    wait_for(lambda: _runs(daemon) == runs + 1, timeout=30, what="the opted-out task's engine run")


def test_a_non_deterministic_engine_always_runs(daemon: Daemon) -> None:
    engine = daemon.add_echo_engine(name="echo-plain")
    value = {"word": "again"}
    first = _enqueue(daemon, echo_task(engine, value, name="first"))
    daemon.wait_state(first, "completed", timeout=90)
    runs = _runs(daemon)
    second = _enqueue(daemon, echo_task(engine, value, name="second"))
    st = daemon.wait_state(second, "completed", timeout=90)
    assert "cache" not in st
    wait_for(lambda: _runs(daemon) == runs + 1, timeout=30, what="the second task's engine run")
    assert daemon.get("/v1/queue").json()["cache_hits"] == 0


def test_a_verified_task_uses_only_a_result_verified_to_its_quorum(daemon_factory: Any) -> None:
    """One node runs, verifies and caches: a quorum-1 verdict serves quorum-1 and plain tasks, not quorum 2."""
    d: Daemon = daemon_factory("node", roles=("manager", "runner", "verifier")).start()
    engine = d.add_echo_engine(deterministic=True)
    value = {"verified": True}
    plain = _enqueue(d, echo_task(engine, value, name="plain"))
    d.wait_state(plain, "completed", timeout=90)
    runs = _runs(d)
    # A plain task's result is not verified: a verify task runs its replica instead.
    first = _enqueue(d, echo_task(engine, value, name="v1", verify={"replicas": 1, "quorum": 1}))
    st = d.wait_state(first, "completed", timeout=90)
    assert "cache" not in st and st["verification"]["verdict"] is not None, st
    wait_for(lambda: _runs(d) == runs + 1, timeout=30, what="the verified task's replica run")
    # Now a verdict with one agreeing runner exists: a quorum-1 task completes from it.
    second = _enqueue(d, echo_task(engine, value, name="v1-again", verify={"replicas": 1, "quorum": 1}))
    st = d.wait_state(second, "completed", timeout=90)
    assert st["cache"]["task"] == {"/": first}, st
    assert _runs(d) == runs + 1
