"""Failures say so (issue 17, "Silent failures"), on a real daemon (manager and runner, no evaluator).

* ``GET /v1/results/{cid}?wait=S`` on a task that fails answers as soon as it
  has failed, with ``state`` and ``reason``, instead of waiting out ``S``;
* ``meshd result --wait`` on a failed task prints the error only;
* ``meshd tasks`` shows the name, the runner and readable times;
* a ``verify: {replicas: 2}`` task on a one-runner mesh carries a warning, and
  ``meshd status`` prints it;
* ``meshd job submit`` on a mesh without an evaluator warns, with ``--watch`` too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from ._daemons import REPO, Daemon, echo_task

FAIL = "import sys\nsys.stdin.read()\nprint('boom: bad input', file=sys.stderr)\nsys.exit(3)\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("told") / "node").init().start()
    try:
        yield d
    finally:
        d.stop()


def _failing(engine: str, name: str) -> dict:
    return {"input": {"value": 1}, "max_attempts": 1, "name": name,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}


def test_waiting_on_a_failing_task_ends_when_it_fails(daemon: Daemon) -> None:
    engine = daemon.add_script_engine("fails", FAIL)
    cid = daemon.post("/v1/tasks", _failing(engine, "wait-fails")).json()["cid"]
    t0 = time.monotonic()
    r = httpx.get(f"{daemon.url}/v1/results/{cid}", params={"wait": 30}, headers=daemon.headers(), timeout=40)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] == [] and body["state"] == "failed" and "exit" in (body["reason"] or "")
    assert elapsed < 20, elapsed  # the engine fails within a few seconds; the long poll must not wait out 30 s
    # Already failed: at once.
    t0 = time.monotonic()
    again = httpx.get(f"{daemon.url}/v1/results/{cid}", params={"wait": 30}, headers=daemon.headers(), timeout=40)
    assert again.json()["state"] == "failed"
    assert time.monotonic() - t0 < 5


def test_result_wait_on_a_failed_task_prints_the_error_only(daemon: Daemon) -> None:
    engine = daemon.add_script_engine("fails", FAIL)
    cid = daemon.post("/v1/tasks", _failing(engine, "cli-fails")).json()["cid"]
    run = daemon.cli("result", cid, "--wait", "--timeout", "60", "--home", str(daemon.home), check=False)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "no results yet" not in run.stderr and "error: task failed:" in run.stderr


def test_tasks_list_shows_name_runner_and_readable_times(daemon: Daemon) -> None:
    echo = daemon.add_echo_engine()
    cid = daemon.post("/v1/tasks", echo_task(echo, "listed", name="my-task")).json()["cid"]
    daemon.wait_state(cid, "completed")
    out = daemon.cli("tasks", "--home", str(daemon.home)).stdout
    assert out.splitlines()[0].split() == ["cid", "state", "name", "runner", "updated"]
    line = next(ln for ln in out.splitlines() if ln.startswith(cid))
    assert "my-task" in line and "completed" in line and daemon.peer_id[-8:] in line
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", line), line
    status = daemon.cli("status", cid, "--home", str(daemon.home)).stdout
    assert "name:     my-task" in status and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", status)


def test_a_quorum_no_mesh_can_reach_is_warned(daemon: Daemon) -> None:
    echo = daemon.add_echo_engine()
    cid = daemon.post("/v1/tasks", echo_task(echo, "twice", verify={"replicas": 2})).json()["cid"]
    status = daemon.get(f"/v1/tasks/{cid}").json()
    assert "needs 2 distinct runners" in status["verification"]["warning"]
    out = daemon.cli("status", cid, "--home", str(daemon.home)).stdout
    assert "warning:  needs 2 distinct runners" in out


@pytest.mark.parametrize("watch", [False, True])
def test_a_job_with_no_evaluator_in_the_mesh_is_warned(daemon: Daemon, watch: bool) -> None:
    body = json.loads((REPO / "engines" / "examples" / "pipelines" / "wordcount.json").read_text())
    body["input"]["text"] = f"hello world {watch}"
    daemon.cli("job", "publish-examples", "--home", str(daemon.home))
    args = [sys.executable, "-m", "meshd.cli", "job", "submit", "-", "--home", str(daemon.home)]
    if watch:
        args += ["--watch", "--timeout", "3"]
    run = subprocess.run(args, input=json.dumps(body), capture_output=True, text=True, env=daemon.env, timeout=60)
    assert "warning: no node of the mesh runs the evaluator role" in run.stderr, run.stderr
