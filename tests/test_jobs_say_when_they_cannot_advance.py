"""A job whose rules can no longer fire says so, in its status, in the listing and in the CLI.

One real daemon (manager, runner, evaluator):

* a two-stage job whose first stage always fails is ``failed``, and its
  second stage is ``blocked`` because the stage before it failed; the
  listing shows it as failed too (it used to list every unfinished job as
  ``running``);
* a two-stage job whose second stage has a condition that never holds is
  ``stalled`` once the first stage is done: the stage names its condition;
  ``meshd job list`` and ``meshd job watch`` print why;
* a job that completes is listed ``completed`` with its progress.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ._daemons import Daemon, wait_for

FAIL = "import sys\nsys.stdin.read()\nsys.exit(3)\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, str]]]:
    d = Daemon(tmp_path_factory.mktemp("jobs") / "node", roles=("manager", "runner", "evaluator")).init().start()
    try:
        echo = d.add_echo_engine()
        fail = d.add_script_engine("always-fails", FAIL)
        ids = {}
        for name, first, condition in (("doomed", fail, None), ("waits", echo, "exist(dataset(hpcp('$JOB/never')))"),
                                       ("fine", echo, None)):
            second: dict = {"name": "second", "engine": {"/": echo}}
            if condition:
                second["condition"] = condition
            r = d.post("/v1/jobs", {"name": name, "input": {"value": 1},
                                    "stages": [{"name": "first", "engine": {"/": first}}, second]})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["job"]
        yield d, ids
    finally:
        d.stop()


def _state(d: Daemon, job: str, state: str) -> dict:
    return wait_for(lambda: (s := d.get(f"/v1/jobs/{job}").json())["state"] == state and s, timeout=60,
                    what=f"job {job} to be {state}")


def test_a_failed_stage_blocks_the_next_and_the_job_is_listed_failed(node: tuple[Daemon, dict[str, str]]) -> None:
    d, ids = node
    status = _state(d, ids["doomed"], "failed")
    first, second = status["stages"]
    assert first["failed"] == 1 and first["blocked"] is None
    assert second["blocked"] == "stage first failed, so this stage's rule can no longer fire"
    listed = {j["job"]: j for j in d.get("/v1/jobs").json()["jobs"]}
    assert listed[ids["doomed"]]["state"] == "failed"
    assert listed[ids["doomed"]]["blocked"] == [f"second: {second['blocked']}"]
    assert listed[ids["doomed"]]["stages"] == "first 0/1 (1 failed)  second 0/1"


def test_a_condition_that_never_holds_leaves_the_job_stalled_not_running(node: tuple[Daemon, dict[str, str]]) -> None:
    d, ids = node
    status = _state(d, ids["waits"], "stalled")
    first, second = status["stages"]
    assert first["done"] == 1 and first["blocked"] is None
    assert second["enqueued"] == 0 and "does not hold and no task of the job is pending" in second["blocked"]
    assert f"hpcp('{ids['waits']}/never')" in second["blocked"]  # the condition, $JOB substituted
    fine = _state(d, ids["fine"], "completed")
    assert all(s["blocked"] is None for s in fine["stages"])
    listed = {j["job"]: j for j in d.get("/v1/jobs").json()["jobs"]}
    assert listed[ids["waits"]]["state"] == "stalled" and listed[ids["fine"]]["state"] == "completed"
    assert listed[ids["fine"]]["blocked"] is None and listed[ids["fine"]]["stages"] == "first 1/1  second 1/1"

    text = d.cli("job", "list", "--home", str(d.home)).stdout
    assert f"{ids['waits']}  stalled" in text and "  blocked: second: its condition" in text
    watch = subprocess.run([sys.executable, "-m", "meshd.cli", "job", "watch", ids["waits"], "--timeout", "3",
                            "--home", str(d.home)], capture_output=True, text=True, env=d.env, timeout=60)
    assert watch.returncode == 1  # timed out: a stalled job may still resume, so watch keeps waiting
    assert f"job {ids['waits']} is stalled: second: its condition" in watch.stderr
