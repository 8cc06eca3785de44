"""Short tasks on a warm engine run many per engine call (one warm-pool
message per batch), and each still gets its own result: the runner's batch
path, on a real daemon with the jsonl echo engine."""

from __future__ import annotations

import random

from ._daemons import echo_task, wait_for


def test_short_tasks_run_in_batches_and_each_gets_its_own_output(daemon_factory) -> None:
    node = daemon_factory("batcher")
    node.start()
    engine = node.add_echo_engine()
    n = 400
    posted = node.post("/v1/tasks", {"tasks": [echo_task(engine, {"i": i}) for i in range(n)]})
    assert posted.status_code == 201, posted.text
    cids = [t["cid"] for t in posted.json()["tasks"]]
    wait_for(lambda: node.get("/v1/queue").json()["completed"] >= n, timeout=180, what=f"{n} tasks to complete")
    counters = node.get("/v1/node").json()["counters"]
    assert counters.get("tasks_batched", 0) > 0, counters  # a run of short tasks went the batch path
    assert counters.get("tasks_completed", 0) == n, counters  # each once
    for i in random.Random(7).sample(range(n), 40):
        results = node.get(f"/v1/results/{cids[i]}").json()["results"]
        assert [r["output"] for r in results] == [{"i": i}], (i, results)
