"""A node with an idle runner claims tasks submitted to it in the enqueue's own delta.

Three real daemons form a mesh.  A task enqueued alone on an idle node comes
back from ``POST /v1/tasks`` already ``assigned`` to that node, runs there,
and every peer sees it run exactly once: the claim travels in the same delta
as the task, so no peer ever sees the task unclaimed.  A batch larger than
the idle slots claims only what the slots hold at submit; the rest is left
to the claim planner, and spreads over the mesh as before.
"""

from __future__ import annotations

import re

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

SLOW = "import json, sys, time\nv = json.load(sys.stdin)\ntime.sleep(v.get('sleep', 0))\njson.dump(v, sys.stdout)\n"


def _one_slot(d: Daemon) -> Daemon:
    cfg = d.home / "config.toml"
    cfg.write_text(re.sub(r"(?m)^slots = [0-9]+", "slots = 1", cfg.read_text()))
    return d.start()


def _mesh(factory) -> list[Daemon]:
    a = _one_slot(factory("a"))
    rest = [_one_slot(factory(n, bootstrap=[a.multiaddr], trust=[a.public_hex])) for n in "bc"]
    nodes = [a, *rest]
    for d in nodes:
        wait_for(lambda d=d: sum(1 for p in d.get("/v1/peers").json()["peers"] if "runner" in p["roles"]) >= 2,
                 timeout=60, what=f"{d.home.name} to see the two other runners")
    return nodes


def _results(d: Daemon, cid: str) -> list[dict]:
    return d.get(f"/v1/results/{cid}").json()["results"]


def test_a_lone_task_is_claimed_by_its_idle_submitter_and_runs_once(daemon_factory) -> None:
    a, b, c = _mesh(daemon_factory)
    engine = a.add_echo_engine()
    cids = []
    for i in range(8):
        r = a.post("/v1/tasks", echo_task(engine, {"i": i}, name=f"alone-{i}"))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["state"] == "assigned", body  # claimed in the enqueue's delta
        got = a.get(f"/v1/results/{body['cid']}", params={"wait": 60}).json()["results"]
        assert [x["runner"] for x in got] == [a.peer_id]
        assert got[0]["output"] == {"i": i}
        cids.append(body["cid"])
    for d in (a, b, c):
        for cid in cids:
            wait_for(lambda d=d, cid=cid: d.get(f"/v1/tasks/{cid}").json().get("state") == "completed",
                     timeout=60, what=f"{d.home.name} to see {cid} completed")
            st = d.get(f"/v1/tasks/{cid}").json()
            # One claim, by the submitter: nobody else ever held the task.
            assert [x["runner"] for x in st["attempts"]] == [a.peer_id], st
            assert len(_results(d, cid)) == 1


def test_a_batch_claims_only_the_idle_slots_at_submit_and_the_rest_spreads(daemon_factory) -> None:
    a, b, c = _mesh(daemon_factory)
    engine = a.add_script_engine("slow", SLOW)
    inputs = [{"i": i, "sleep": 0.5} for i in range(12)]
    r = a.post("/v1/tasks", {"tasks": [echo_task(engine, v) for v in inputs]})
    assert r.status_code == 201, r.text
    tasks = r.json()["tasks"]
    # One slot: one task claimed with the batch, the rest left in the queue.
    assert [t["state"] for t in tasks].count("assigned") == 1, tasks
    wait_for(lambda: a.get("/v1/queue").json()["completed"] >= 12, timeout=120, what="12 completions on A")
    ran = {}
    for t, v in zip(tasks, inputs):
        got = _results(a, t["cid"])
        assert got and got[0]["output"] == v
        ran[t["cid"]] = got[0]["runner"]
    assert set(ran.values()) - {a.peer_id}, f"every task ran on the submitter: {ran}"
