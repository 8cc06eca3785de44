"""``GET /metrics`` on real daemons: every family moves when the mesh works.

Two ``meshd run`` daemons: A (manager, runner, verifier, archivist) and B
(manager, runner; the desktop owner policy, reading its signals from a file
the test writes), B bootstrapped to A.  A is scraped alone first; then B
joins and a workload runs: plain echo tasks, echo tasks replicated on both
runners (so the verifier judges them), a task that runs for a few seconds
(so a runner's free slots drop while it runs), a task of a deterministic
engine and, once it completed, its twin (the result cache: a miss, then a
hit), a task whose engine always fails (retried, then failed for good) and
one request with a wrong token;
then B's owner presses a key (the policy suspends) and A drains.  Both nodes
are scraped all along, and every family in :data:`MOVED_BY_WORKLOAD` must
have changed on at least one of them in some scrape (work spreads over both
runners, so which node ran what is not fixed).  Every family the endpoint
serves is either there or in :data:`NOT_MOVED_HERE`, with the reason, and
docs/operations.md lists every one.  The scrape uses the read-scope token, as
Prometheus would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._daemons import REPO, Daemon, echo_task, wait_for

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
    "meshd_gossip_received": "B's presence and announcements",
    "meshd_object_heads": "objects followed once the workload made them",
    "meshd_runner_slots_free": "the slow task holds a slot while it runs",
    "meshd_owner_state": "B's owner pressed a key: running, then suspended",
    "meshd_owner_actions": "B's policy suspended its engines",
    "meshd_runner_gate_closed": "B's policy closed its gate; A drained",
    "meshd_cache_misses": "the deterministic task's first run",
    "meshd_cache_hits": "its twin, completed from the cache",
}

#: Families this workload does not move, and why (each is a fault or a constant).
NOT_MOVED_HERE = {
    "meshd_info": "constant: the node's version, peer id and mesh",
    "meshd_runner_slots": "constant: the configured capacity",
    "meshd_runner_backlog": "transient: tasks claimed but not started last a few ms here",
    "meshd_object_pending_deltas": "transient: deltas wait for their parents only while a sync is under way",
    "meshd_object_peers_ahead": "transient: a peer's newer heads are applied within ms on loopback",
    "meshd_trusted_runners": "needs a streak of verdicts longer than this workload",
    "meshd_banned_peers": "needs a dishonest runner (tests/test_verifier_bans_dishonest_node.py)",
    "meshd_pin_failures": "needs a failing block store",
    "meshd_role_restarts": "needs a role to fail",
    "meshd_loop_stalls": "needs a stalled event loop (tests/test_loop_stalls_are_reported.py)",
    "meshd_runner_tasks_handed_back": "needs claimed or running work when the gate closes",
    **{f"meshd_store_{name}": "the storage budget is off here ([store] max_bytes = 0); "
                              "tests/test_a_node_over_its_store_budget_keeps_working_and_loses_nothing.py moves it"
       for name in ("used_bytes", "budget_bytes", "over_budget", "collected_blocks", "collected_bytes",
                    "refused_blocks")},
}

FAIL = "import sys\nsys.stdin.read()\nsys.exit(3)\n"
TWICE = "import json, sys\nprint(json.dumps(json.load(sys.stdin)))\n"
SLOW = "import json, sys, time\njson.load(sys.stdin)\ntime.sleep(4)\nprint(json.dumps(0))\n"
IDLE = {"input_idle_s": 5000.0, "owner_load": 0.0, "pressure_pct": 0.0, "on_battery": False, "minute": 600}
Scrape = dict[str, list[tuple[str, tuple[tuple[str, str], ...], float]]]


def _write_signals(path: Path, readings: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(readings))
    tmp.replace(path)  # atomic: the daemon never reads half a file


def scrape(d: Daemon) -> Scrape:
    r = httpx.get(d.url + "/metrics", headers=d.headers("read"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        if fam.name.endswith("_created"):
            continue  # prometheus_client's creation time of a counter or histogram's labels: part of that family
        out[fam.name] = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in fam.samples)
    return out


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, Path]]:
    signals = tmp_path / "signals.json"
    _write_signals(signals, IDLE)
    a = Daemon(tmp_path / "a", roles=("manager", "runner", "verifier", "archivist")).init()
    b = Daemon(tmp_path / "b", roles=("manager", "runner"), bootstrap=[a.multiaddr], trust=[a.public_hex]).init()
    cfg = b.home / "config.toml"
    text = re.sub(r'(?m)^preset = "server"$', 'preset = "desktop"', cfg.read_text())
    cfg.write_text(re.sub(r'(?m)^signal_file = ""$', f'signal_file = "{signals}"', text))
    try:
        yield a, b, signals
    finally:
        b.stop()
        a.stop()


class Watch:
    """Scrapes both nodes and remembers which families have changed in any scrape since the first."""

    def __init__(self, a: Daemon, b: Daemon, before_a: Scrape, before_b: Scrape) -> None:
        self.nodes = ((a, before_a), (b, before_b))
        self.moved: set[str] = set()
        self.served: set[str] = set(before_a)
        self.last: dict[str, Scrape] = {}

    def observe(self) -> Scrape:
        for d, before in self.nodes:
            now = self.last[d.peer_id] = scrape(d)
            self.served |= set(now)
            self.moved |= {name for name in set(now) | set(before) if now.get(name) != before.get(name)}
        return self.last[self.nodes[0][0].peer_id]

    def unmoved(self) -> list[str]:
        self.observe()
        return sorted(set(MOVED_BY_WORKLOAD) - self.moved)


def test_every_family_moves_with_a_workload(mesh: tuple[Daemon, Daemon, Path]) -> None:
    a, b, signals = mesh
    a.start()
    before_a = scrape(a)
    assert before_a["meshd_peers"][0][2] == 0
    b.start()
    before_b = scrape(b)
    watch = Watch(a, b, before_a, before_b)
    wait_for(lambda: watch.observe()["meshd_peers"][0][2] >= 1, timeout=60, what="A to see B")
    wait_for(lambda: b.get("/v1/owner").json()["policy"]["state"] == "running", timeout=30,
             what="B's owner policy to run (its owner is idle)")
    echo = a.add_echo_engine()
    fail = a.add_script_engine("always-fails", FAIL)
    slow = a.add_script_engine("slow", SLOW)
    det = a.add_script_engine("twice", TWICE, deterministic=True)
    wait_for(lambda: len(b.get("/v1/engines").json()["engines"]) >= 4, timeout=60, what="B to learn the engines")
    plain = [echo_task(echo, i) for i in range(12)]
    replicated = [echo_task(echo, f"r{i}", verify={"replicas": 2}) for i in range(3)]
    failing = {"input": {"value": 0}, "max_attempts": 2, "name": "fails",
               "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": fail}}}}
    r = a.post("/v1/tasks", {"tasks": plain + replicated + [echo_task(slow, "slow"), echo_task(det, "same"), failing]})
    assert r.status_code == 201, r.text
    cids = [t["cid"] for t in r.json()["tasks"]]
    ends = {cid: "completed" for cid in cids[:-1]} | {cids[-1]: "failed"}

    def all_ended() -> bool:
        watch.observe()  # scrapes while tasks run: a slot is taken by the slow task for seconds
        return all(a.get(f"/v1/tasks/{cid}").json()["state"] == state for cid, state in ends.items())

    wait_for(all_ended, timeout=180, what="every task to end", interval=0.3)
    # Both runners must hold the first result before its twin is enqueued: either may claim the twin.
    wait_for(lambda: all(d.get(f"/v1/results/{cids[-2]}").json()["results"] for d in (a, b)), timeout=30,
             what="both nodes to hold the deterministic task's result")
    r = a.post("/v1/tasks", {"tasks": [echo_task(det, "same", nonce="twin")]})  # identical work, once more
    assert r.status_code == 201, r.text
    twin = a.wait_state(r.json()["tasks"][0]["cid"], "completed", timeout=60)
    assert twin["cache"]["hit"] is True, twin
    assert httpx.get(a.url + "/v1/queue", headers={"Authorization": "Bearer wrong"}).status_code == 401
    _write_signals(signals, {**IDLE, "input_idle_s": 0.0})  # B's owner presses a key
    wait_for(lambda: b.get("/v1/owner").json()["policy"]["state"] == "suspended", timeout=30,
             what="B's policy to suspend")
    assert a.post("/v1/node/drain", {}).status_code == 200

    # Verdicts, pins and the other runner's last records may land after the tasks' states.
    try:
        wait_for(lambda: not watch.unmoved(), timeout=60, what="every family to move", interval=0.5)
    except AssertionError:
        pass
    assert watch.unmoved() == [], f"families that did not change: {watch.unmoved()}"
    assert watch.served == set(MOVED_BY_WORKLOAD) | set(NOT_MOVED_HERE), \
        f"served but not classified: {watch.served - set(MOVED_BY_WORKLOAD) - set(NOT_MOVED_HERE)}; " \
        f"classified but not served: {(set(MOVED_BY_WORKLOAD) | set(NOT_MOVED_HERE)) - watch.served}"

    after_a, after_b = watch.last[a.peer_id], watch.last[b.peer_id]
    both = after_a["meshd_tasks_run"] + after_b["meshd_tasks_run"]
    runs = sum(v for name, labels, v in both if name == "meshd_tasks_run_total")
    assert runs >= len(plain) + 2 * len(replicated) + 2 + 2  # every attempt counted once, by its runner
    engines = {dict(labels)["engine"] for name, labels, v in both if name == "meshd_tasks_run_total"}
    assert engines <= {"echo", "always-fails", "slow", "twice"} and "always-fails" in engines
    states = {dict(labels)["state"]: v for _, labels, v in after_a["meshd_queue_tasks"]}
    assert states["completed"] == len(plain) + len(replicated) + 3 and states["failed"] == 1
    reasons = {dict(labels)["reason"] for _, labels, _ in after_a["meshd_rejections"]}
    assert "unauthorized" in reasons
    owner = {dict(labels)["state"]: v for _, labels, v in after_b["meshd_owner_state"]}
    assert owner == {"waiting": 0, "running": 0, "suspended": 1}
    gate = {dict(labels)["by"]: v for _, labels, v in after_a["meshd_runner_gate_closed"]}
    assert gate == {"drain": 1, "owner": 0}


def test_operations_md_lists_every_family() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    table = text[text.index("| family | type | labels | what |"):text.index("## The single-instance lock")]
    listed = {name.removesuffix("_total") for name in re.findall(r"`(meshd_\w+)`", table)}
    assert listed == set(MOVED_BY_WORKLOAD) | set(NOT_MOVED_HERE)


def test_metrics_need_a_token(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "n").init().start()
    try:
        assert httpx.get(d.url + "/metrics", timeout=10).status_code == 401
        assert httpx.get(d.url + "/metrics", headers=d.headers("read"), timeout=10).status_code == 200
    finally:
        d.stop()
