"""A hostile member's forged queue records change nothing on an honest node
(issue 14, finding 1).

Before the queue's writing rules were enforced, one delta from any member
could take any task's lease for ever (in its own or anyone's name), complete
a task it never ran, or fail it for good.  Here a real peer process (a daemon
whose queue holds its own signed forgeries, see ``tests._forge_queue``)
serves them to a real honest daemon over HPCP.  The honest node must refuse
the deltas that break a rule readable from the delta alone (counted), ignore
the conclusions of a peer that never claimed the task, and run all four tasks
itself with correct outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .._daemons import REPO, Daemon, wait_for

pytestmark = pytest.mark.slow


def _forge(home, engine: str, victim: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests._forge_queue", str(home), engine, victim], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _refused(d: Daemon) -> int:
    rejected = d.get("/v1/node").json()["rejected"]
    return sum(v for k, v in rejected.items() if k.startswith("hpcp_"))


def test_forged_leases_and_conclusions_are_refused_or_ignored(daemon_factory) -> None:
    victim = daemon_factory("victim", roles=("manager", "runner"))
    victim.start()
    engine = victim.add_echo_engine()
    victim.stop()

    hostile = daemon_factory("hostile", roles=("manager",), bootstrap=[victim.multiaddr])
    forged = _forge(hostile.home, engine, victim.peer_id)
    tasks, inputs = forged["tasks"], forged["inputs"]

    victim.start()
    hostile.start()
    # The forged tasks reach the victim through HPCP, like any update; the
    # two deltas that break a writing rule are refused, with a count.
    wait_for(lambda: victim.get("/v1/queue").json()["total"] >= len(tasks), timeout=90,
             what="the forged tasks to reach the victim's queue")
    wait_for(lambda: _refused(victim) >= 2, timeout=60,
             what=f"the forged deltas to be refused (rejected: {victim.get('/v1/node').json()['rejected']})")
    # Every task runs on the victim and completes with its real output: no
    # lease held for ever, no completion or failure by a peer that never claimed it.
    for cid, value in zip(tasks, inputs):
        st = victim.wait_state(cid, "completed", timeout=90)
        assert [c["by"] for c in st.get("completions", [])] in ([], [victim.peer_id]), st
        results = wait_for(lambda c=cid: [r for r in victim.get(f"/v1/results/{c}").json()["results"]
                                          if r["output"] is not None], timeout=60, what=f"output of {cid}")
        assert [r["output"] for r in results] == [value], results
        assert {r["runner"] for r in results} == {victim.peer_id}
    assert victim.get("/v1/node").json()["health"]["healthy"] is True
