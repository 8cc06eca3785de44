"""A daemon killed with SIGKILL mid-work restarts and loses no accepted work."""

from __future__ import annotations

import pytest

from ._daemons import echo_task, wait_for

pytestmark = pytest.mark.slow

SLOW_ECHO = "import json, sys, time\nv = json.load(sys.stdin)\ntime.sleep(0.05)\njson.dump(v, sys.stdout)\n"


def test_sigkill_mid_work_loses_nothing_and_restart_finishes_everything(daemon_factory) -> None:
    d = daemon_factory().start()
    engine = d.add_script_engine("slow", SLOW_ECHO)
    accepted: list[str] = []
    for batch in range(6):
        r = d.post("/v1/tasks", {"tasks": [echo_task(engine, {"b": batch, "i": i}) for i in range(10)]})
        assert r.status_code == 201
        accepted += [t["cid"] for t in r.json()["tasks"]]
    # Kill while work is in flight: some tasks done, some running, most waiting.
    wait_for(lambda: d.get("/v1/queue").json()["completed"] >= 3, what="a few completions")
    done_before = {c for c in accepted if d.get(f"/v1/tasks/{c}").json()["state"] == "completed"}
    d.kill()

    d.start()
    # Every task answered with 201 is still known after the crash ...
    for c in accepted:
        assert d.get(f"/v1/tasks/{c}").status_code == 200, c
    # ... results recorded before the kill are still there ...
    for c in done_before:
        assert d.get(f"/v1/results/{c}").json()["results"], c
    # ... and the restarted node finishes the rest (its own stale leases are voided).
    wait_for(lambda: d.get("/v1/queue").json()["completed"] == len(accepted), timeout=120, what="all tasks completed")
    for c in accepted:
        res = d.get(f"/v1/results/{c}").json()["results"]
        task = d.get(f"/v1/tasks/{c}").json()["task"]
        assert res and res[0]["output"] == task["input"]["value"]
    assert d.get("/v1/queue").json()["failed"] == 0
