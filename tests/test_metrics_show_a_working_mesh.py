"""``GET /metrics`` on real daemons: every family moves when the mesh works.

Two ``meshd run`` daemons: A (manager, runner, verifier, archivist) and B
(manager, runner), B bootstrapped to A.  A is scraped alone first; then B
joins and a workload runs: plain echo tasks, echo tasks replicated on both
runners (so the verifier judges them), a task whose engine always fails
(retried, then failed for good) and one request with a wrong token.  Both
nodes are scraped again and every listed family must have changed on at
least one of them (work spreads over both runners, so which node ran what
is not fixed).  The scrape uses the read-scope token, as Prometheus would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

#: Families that must change between the two scrapes, with what moves them.
MOVED_BY_WORKLOAD = {
    "meshd_queue_tasks": "tasks enqueued and completed",
    "meshd_tasks_enqueued": "tasks enqueued through A",
    "meshd_tasks_run": "attempts finished",
    "meshd_tasks_failed": "the failing task, failed for good",
    "meshd_tasks_retried": "the failing task's first attempt",
    "meshd_task_run_seconds": "run-time histogram per engine",
    "meshd_claim_latency_seconds": "claims",
    "meshd_object_deltas": "sync: deltas applied per object",
    "meshd_queue_propagation_lag_seconds": "sync lag of the other runner's claims",
    "meshd_peers": "B joined",
    "meshd_peers_live": "B joined",
    "meshd_blocks_fetched": "blocks fetched from the other node",
    "meshd_blocks_fetched_bytes": "bytes fetched",
    "meshd_block_requests_served": "blocks served",
    "meshd_blocks_served_bytes": "bytes served",
    "meshd_rejections": "the wrong token",
    "meshd_trust_judged_results": "verdicts on the replicated tasks",
    "meshd_pins": "the archivist pinned the new versions",
    "meshd_pinned_versions": "the archivist pinned the new versions",
    "meshd_uptime_seconds": "time",
}

FAIL = "import sys\nsys.stdin.read()\nsys.exit(3)\n"


def scrape(d: Daemon) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...], float]]]:
    r = httpx.get(d.url + "/metrics", headers=d.headers("read"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        out[fam.name] = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in fam.samples)
    return out


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    a = Daemon(tmp_path / "a", roles=("manager", "runner", "verifier", "archivist")).init()
    b = Daemon(tmp_path / "b", roles=("manager", "runner"), bootstrap=[a.multiaddr], trust=[a.public_hex]).init()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_every_family_moves_with_a_workload(mesh: tuple[Daemon, Daemon]) -> None:
    a, b = mesh
    a.start()
    before_a = scrape(a)
    assert before_a["meshd_peers"][0][2] == 0
    b.start()
    before_b = scrape(b)
    wait_for(lambda: scrape(a)["meshd_peers"][0][2] >= 1, timeout=60, what="A to see B")
    echo = a.add_echo_engine()
    fail = a.add_script_engine("always-fails", FAIL)
    wait_for(lambda: b.get("/v1/engines").json()["engines"] and len(b.get("/v1/engines").json()["engines"]) >= 2,
             timeout=60, what="B to learn the engines")
    plain = [echo_task(echo, i) for i in range(12)]
    replicated = [echo_task(echo, f"r{i}", verify={"replicas": 2}) for i in range(3)]
    failing = {"input": {"value": 0}, "max_attempts": 2, "name": "fails",
               "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": fail}}}}
    r = a.post("/v1/tasks", {"tasks": plain + replicated + [failing]})
    assert r.status_code == 201, r.text
    cids = [t["cid"] for t in r.json()["tasks"]]
    for cid in cids[:-1]:
        a.wait_state(cid, "completed", timeout=120)
    a.wait_state(cids[-1], "failed", timeout=120)
    assert httpx.get(a.url + "/v1/queue", headers={"Authorization": "Bearer wrong"}).status_code == 401

    def all_moved() -> list[str]:
        after_a, after_b = scrape(a), scrape(b)
        return [name for name in MOVED_BY_WORKLOAD
                if after_a.get(name) == before_a.get(name) and after_b.get(name) == before_b.get(name)]

    # Verdicts, pins and the other runner's last records may land after the tasks' states.
    left: list[str] = []
    try:
        wait_for(lambda: not all_moved(), timeout=60, what="every family to move", interval=0.5)
    except AssertionError:
        left = all_moved()
    assert left == [], f"families that did not change: {left}"

    after_a, after_b = scrape(a), scrape(b)
    both = after_a["meshd_tasks_run"] + after_b["meshd_tasks_run"]
    runs = sum(v for name, labels, v in both if name == "meshd_tasks_run_total")
    assert runs >= len(plain) + 2 * len(replicated) + 2  # every attempt counted once, by its runner
    engines = {dict(labels)["engine"] for name, labels, v in both if name == "meshd_tasks_run_total"}
    assert engines <= {"echo", "always-fails"} and "always-fails" in engines
    states = {dict(labels)["state"]: v for _, labels, v in after_a["meshd_queue_tasks"]}
    assert states["completed"] == len(plain) + len(replicated) and states["failed"] == 1
    reasons = {dict(labels)["reason"] for _, labels, _ in after_a["meshd_rejections"]}
    assert "unauthorized" in reasons


def test_metrics_need_a_token(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "n").init().start()
    try:
        assert httpx.get(d.url + "/metrics", timeout=10).status_code == 401
        assert httpx.get(d.url + "/metrics", headers=d.headers("read"), timeout=10).status_code == 200
    finally:
        d.stop()
