"""Cancelling a job on a real daemon (issue 17 item 6): ``meshd job cancel``
cancels its running task (the engine process stops) and its rules stop
firing, so a later stage whose source appears is never enqueued; ``meshd job
watch`` then ends at once with the state."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from ._daemons import Daemon, wait_for
from .test_cancel_stops_a_running_engine_on_another_node import GATE_S, GATED, _alive, _engine_pids

pytestmark = pytest.mark.slow


def test_a_cancelled_job_stops_its_engine_and_fires_no_more_rules(daemon_factory, tmp_path: Path) -> None:
    d: Daemon = daemon_factory("node", roles=("manager", "runner", "evaluator"))
    cfg = d.home / "config.toml"
    cfg.write_text(re.sub(r"(?m)^task_timeout_s = [0-9.]+", "task_timeout_s = 120.0", cfg.read_text()))
    d.start()
    engine = d.add_script_engine("gated", GATED)
    pipeline = {"name": "gated", "input": {"gate": time.time() + GATE_S, "n": 1},
                "stages": [{"name": "wait", "engine": {"/": engine}}, {"name": "after", "engine": {"/": engine}}]}
    r = d.post("/v1/jobs", pipeline, scope="submit")
    assert r.status_code == 201, r.text
    job, [first] = r.json()["job"], r.json()["tasks"]
    assert d.proc is not None
    wait_for(lambda: _engine_pids(d.proc.pid), timeout=60, what="the first stage's engine to start")
    engines = _engine_pids(d.proc.pid)
    assert d.get("/v1/evaluator").json()["statistics"]["rules"] == 2

    t0 = time.monotonic()
    out = d.cli("job", "cancel", job, "--reason", "enough", "--json").stdout
    assert json.loads(out) == {"job": job, "state": "cancelled", "tasks_cancelled": 1}, out
    wait_for(lambda: not _alive(engines), timeout=10, what="the engine to stop", interval=0.01)
    print(f"job_cancel_to_engine_stopped_s={time.monotonic() - t0:.3f}")
    assert time.monotonic() - t0 < 2.0
    status = d.get(f"/v1/tasks/{first}").json()
    assert status["state"] == "cancelled" and status["reason"] == "cancelled: enough", status
    # The evaluator dropped the job's rules; a source for the second stage fires nothing.
    wait_for(lambda: d.get("/v1/evaluator").json()["statistics"]["rules"] == 0, timeout=10,
             what="the evaluator to drop the cancelled job's rules")
    passes = d.get("/v1/evaluator").json()["statistics"]["passes"]
    r = d.put(f"/v1/datasets/{job}/wait/results", {"value": {"ran": 1}, "action": "set"}, scope="submit")
    assert r.status_code in (200, 201), r.text
    wait_for(lambda: d.get("/v1/evaluator").json()["statistics"]["passes"] > passes, timeout=10,
             what="an evaluator pass over the job's new value")
    assert d.get("/v1/queue").json()["total"] == 1
    job_status = d.get(f"/v1/jobs/{job}").json()
    assert job_status["state"] == "cancelled" and job_status["stages"][1]["enqueued"] == 0, job_status
    assert [j["state"] for j in d.get("/v1/jobs").json()["jobs"]] == ["cancelled"]
    watch = d.cli("job", "watch", job, "--timeout", "30", check=False)
    assert watch.returncode == 1 and f"job {job} cancelled" in watch.stderr, watch.stderr
