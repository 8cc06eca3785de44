"""Several real daemons (separate processes on 127.0.0.1) form a mesh over libp2p."""

from __future__ import annotations

import re

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

SLOW = "import json, sys, time\nv = json.load(sys.stdin)\ntime.sleep(v.get('sleep', 0))\njson.dump(v, sys.stdout)\n"
FAST_LEASES = "\n"


def _mesh(factory, n: int, roles_first=("manager", "runner"), timeout_s: float = 10.0) -> list[Daemon]:
    first = factory("n0", roles=roles_first)
    _short_timeouts(first, timeout_s)
    first.start()
    rest = []
    for i in range(1, n):
        d = factory(f"n{i}", bootstrap=[first.multiaddr], trust=[first.public_hex])
        _short_timeouts(d, timeout_s)
        rest.append(d.start())
    nodes = [first, *rest]
    for d in nodes:
        wait_for(lambda d=d: sum(1 for p in d.get("/v1/peers").json()["peers"] if p["roles"]) >= n - 1,
                 timeout=60, what=f"{d.home.name} to see {n - 1} peers")
    return nodes


def _short_timeouts(d: Daemon, timeout_s: float) -> None:
    cfg = d.home / "config.toml"
    text = re.sub(r"task_timeout_s = [0-9.]+", f"task_timeout_s = {timeout_s}", cfg.read_text())
    cfg.write_text(re.sub(r"lease_s = [0-9.]+", "lease_s = 1.0", text))


def _queue(d: Daemon) -> dict:
    return d.get("/v1/queue").json()


@pytest.mark.parametrize("n", [3, 5])
def test_nodes_converge_and_work_enqueued_on_one_runs_on_others(daemon_factory, n: int) -> None:
    nodes = _mesh(daemon_factory, n, roles_first=("manager",))  # the submitter runs nothing itself
    a = nodes[0]
    # Each task takes a moment (0.2 s), so one node cannot take the whole
    # batch at once before the others' rendezvous turn comes.
    engine = a.add_script_engine("slow", SLOW)
    inputs = [{"i": i, "sleep": 0.2} for i in range(30)]
    cids = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, v) for v in inputs]}).json()["tasks"]]
    wait_for(lambda: _queue(a)["results"] == 30 and _queue(a)["completed"] == 30, timeout=90, what="30 results on A")

    def runners_seen() -> set[str]:
        seen = set()
        for i, c in enumerate(cids):
            for r in a.get(f"/v1/results/{c}").json()["results"]:
                if r["output"] is not None:
                    assert r["output"] == inputs[i]
                    seen.add(r["runner"])
        return seen

    # The output blocks travel separately from the result records: wait for them.
    runners = wait_for(lambda: (seen := runners_seen()) and len(seen) >= 2 and seen, timeout=60,
                       what="results from several runners on A")
    for i, c in enumerate(cids):
        res = wait_for(lambda c=c: [r for r in a.get(f"/v1/results/{c}").json()["results"] if r["output"] is not None],
                       timeout=60, what=f"output of task {i} on A")
        assert res[0]["output"] == inputs[i]
    assert a.peer_id not in runners
    # Every replica converges to the same queue.
    wait_for(lambda: all(_queue(d)["completed"] == 30 for d in nodes), timeout=60, what="all queues converge")
    heads = {d.get("/v1/node").json()["objects"]["queue"] for d in nodes}
    assert len(heads) == 1


def test_a_node_killed_mid_task_loses_nothing_and_its_tasks_run_elsewhere(daemon_factory) -> None:
    nodes = _mesh(daemon_factory, 3, roles_first=("manager",), timeout_s=3.0)
    a, b, c = nodes
    engine = a.add_script_engine("slow", SLOW)
    cids = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, {"i": i, "sleep": 0.3}) for i in range(12)]}).json()["tasks"]]
    # Wait until B holds a lease, then kill it mid-task.
    def b_running():
        for cid in cids:
            st = b.get(f"/v1/tasks/{cid}").json()
            if st["state"] == "assigned" and st["attempts"] and st["attempts"][-1]["runner"] == b.peer_id:
                return True
        return False

    wait_for(b_running, timeout=60, what="B to run a task")
    b.kill()
    wait_for(lambda: _queue(a)["results"] == 12, timeout=120, what="every task finished despite B's death")
    for cid in cids:
        st = a.get(f"/v1/tasks/{cid}").json()
        assert st["state"] == "completed"
        assert a.get(f"/v1/results/{cid}", params={"wait": 10}).json()["results"]

    # B restarts and catches up with everything that happened while it was down.
    b.start()
    try:
        wait_for(lambda: _queue(b)["completed"] == 12 and _queue(b)["results"] == 12, timeout=120, what="B to catch up")
    except AssertionError:
        print("B queue:", _queue(b), "A queue:", _queue(a), "\nB log:", b.log()[-3000:])
        raise
