"""A hostile member's invalid task bodies never stop a node (issue 11, finding 1).

Before peer blocks were validated, one task body such as the bytes ``ff`` or
``{"constraints": [1]}`` in the shared queue crashed every runner, the
Evaluator and ``QueueView.next`` — and crashed them again on every restart,
since the queue replays.  Here a real peer process (a daemon whose queue was
poisoned with its own signed delta) feeds the poison to a real daemon that
runs every role; that daemon must keep serving, run the good work, count and
remember the bad bodies, and never decode them again after a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ._daemons import REPO, Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

ALL_ROLES = ("manager", "runner", "evaluator", "verifier")


def _poison(home, engine: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests._poison_queue", str(home), engine], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rejected(d: Daemon) -> dict:
    return d.get("/v1/node").json()["rejected"]


def test_poisoned_queue_from_a_peer_is_skipped_counted_and_remembered(daemon_factory) -> None:
    victim = daemon_factory("victim", roles=ALL_ROLES)
    victim.start()
    engine = victim.add_echo_engine()
    victim.stop()

    hostile = daemon_factory("hostile", roles=("manager",), bootstrap=[victim.multiaddr])
    poison = _poison(hostile.home, engine)
    bad = set(poison["bad_tasks"])
    bad_def_task = poison["bad_definition_tasks"][0]

    victim.start()
    hostile.start()
    # The poison reaches the victim's queue through HPCP, like any update.
    wait_for(lambda: victim.get("/v1/queue").json()["total"] >= len(bad) + 1, timeout=90,
             what="the poisoned tasks to reach the victim's queue")

    good = [t["cid"] for t in victim.post("/v1/tasks", {"tasks": [echo_task(engine, i) for i in range(5)]})
            .json()["tasks"]]
    for cid in good:
        victim.wait_state(cid, "completed", timeout=90)
    # Every bad body was rejected (four bodies and one definition), counted, and the node is healthy.
    wait_for(lambda: _rejected(victim).get("bad_task", 0) >= 4 and _rejected(victim).get("bad_definition", 0) >= 1,
             timeout=60, what=f"the bad bodies to be rejected (rejected: {_rejected(victim)})")
    assert victim.proc is not None and victim.proc.poll() is None, victim.log()
    node = victim.get("/v1/node").json()
    assert node["health"]["healthy"] is True, node["health"]
    assert all(r["restarts"] == 0 for r in node["health"]["roles"].values()), node["health"]
    for cid in bad:
        st = victim.get(f"/v1/tasks/{cid}").json()
        assert st["state"] == "available" and not st["attempts"], st  # never claimed, never run
    assert "rejected" in victim.get(f"/v1/tasks/{sorted(bad)[0]}").json()
    # A valid body whose linked definition is invalid fails at once, with the reason.
    st = victim.wait_state(bad_def_task, "failed", timeout=60)
    assert len(st["attempts"]) == 1 and "invalid task definition" in st["reason"], st

    # After a restart the queue replays the poison: it is skipped from the
    # persistent record, never decoded again (no new rejection is logged).
    victim.stop()
    before = victim.log_path.read_text().count("event=block_rejected")
    victim.start()
    more = [t["cid"] for t in victim.post("/v1/tasks", {"tasks": [echo_task(engine, i) for i in range(5, 8)]})
            .json()["tasks"]]
    for cid in more:
        victim.wait_state(cid, "completed", timeout=90)
    assert _rejected(victim).get("bad_task", 0) >= 4
    assert victim.log_path.read_text().count("event=block_rejected") == before
    assert victim.get("/v1/node").json()["health"]["healthy"] is True
