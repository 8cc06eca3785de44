"""A job's rule reacts to the failure of one of its tasks, on a real daemon.

The job has two stages: ``work`` runs an engine that always fails, and
``fallback`` has a condition on the state of work,
``len(failures(hpcp('$JOB/'))) > 0``.  Once ``work`` has failed for good, the
Evaluator fires ``fallback``, whose echo engine writes its result into the
job's dataset.  Nothing else ever writes there, so the fallback's result can
only come from the rule reading the failure.
"""

from __future__ import annotations

from typing import Any

from ._daemons import Daemon, wait_for

FAILING = "import sys\nsys.stderr.write('no luck\\n')\nsys.exit(3)\n"


def test_a_job_falls_back_when_a_stage_fails(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory("node", roles=("manager", "runner", "evaluator")).start()
    fail = d.add_script_engine("fail", FAILING)
    echo = d.add_echo_engine()
    body = {"name": "fallback-demo", "input": {"word": "mesh"}, "stages": [
        {"name": "work", "engine": {"/": fail}},
        {"name": "fallback", "engine": {"/": echo}, "source": "work/input",
         "condition": "len(failures(hpcp('$JOB/'))) > 0 && !exist(dataset(hpcp('$JOB/fallback/results')))"},
    ]}
    r = d.post("/v1/jobs", body)
    assert r.status_code in (200, 201), r.text
    job = r.json()["job"]
    (work_task,) = r.json()["tasks"]
    # No fallback while the work stage has not failed for good (it is still running or retrying).
    st = d.wait_state(work_task, "failed", timeout=120)
    assert "exit status 3" in (st.get("reason") or ""), st

    def fallback_result() -> Any:
        got = d.get(f"/v1/datasets/{job}/fallback/results")
        return got.json() if got.status_code == 200 and got.json().get("value") is not None else None

    answer = wait_for(fallback_result, timeout=60, what="the fallback stage's result")
    assert answer["value"] == {"word": "mesh"}  # the echo engine ran on the job's input
    status = d.get(f"/v1/jobs/{job}").json()
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["work"]["failed"] == 1 and stages["fallback"]["done"] == 1, status
