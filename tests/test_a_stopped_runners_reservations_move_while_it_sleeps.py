"""A runner stopped with SIGSTOP loses its claims made ahead within ``reserve_s``, not a whole lease.

Issue 13: a claim not yet started is a reservation (docs/protocol.md,
*Claimed ahead vs running*).  It used to carry a whole lease, so a runner
stopped while holding claims made ahead kept them for ``lease_s`` and its
peers waited (``meshd bench spread``'s SIGSTOP variant: kept 2, moved 0).
Now a claim beyond the runner's idle slots is leased for ``reserve_s`` only,
and renewed when it starts.

Two real daemons with one slot each and tasks of one second.  ``lease_s`` is
60, so with the old lease nothing b held could move while it is stopped;
``reserve_s`` is its default, 3.  b is stopped while it holds a running task and a
reservation: a runs the reservation before b wakes up.  b is woken as soon as
that happened, with a view that misses it (and, often, a connection its peer
reset meanwhile): it must not run the task again, which it did before it
learned to hold its claims after a stall of its own (``claims_held_stale_view``).
Nothing runs twice, and b keeps at most its running task.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

SLEEP = "import json, sys, time\nv = json.load(sys.stdin)\ntime.sleep(1.0)\njson.dump(v, sys.stdout)\n"
STOP_S = 25.0


def _configure(d: Daemon) -> None:
    cfg = d.home / "config.toml"
    text = re.sub(r"(?m)^slots = .*$", "slots = 1", cfg.read_text())
    text = re.sub(r"(?m)^lease_s = [0-9.]+", "lease_s = 60.0", text, count=1)
    cfg.write_text(text)


def _attempts(d: Daemon, task: str) -> list[dict]:
    return d.get(f"/v1/tasks/{task}").json()["attempts"]


def test_a_stopped_runners_reservation_runs_on_its_peer_before_it_resumes(daemon_factory) -> None:
    a: Daemon = daemon_factory("a")
    _configure(a)
    a.start()
    engine = a.add_script_engine("sleeper", SLEEP)
    b: Daemon = daemon_factory("b", bootstrap=[a.multiaddr], trust=[a.public_hex])
    _configure(b)
    b.start()
    wait_for(lambda: b.peer_id in a.get("/v1/peers").json()["live_runners"]
             and a.peer_id in b.get("/v1/peers").json()["live_runners"], timeout=60, what="a and b to hear each other")

    r = a.post("/v1/tasks", {"tasks": [echo_task(engine, {"i": i}) for i in range(12)]})
    assert r.status_code == 201, r.text
    tasks = [t["cid"] for t in r.json()["tasks"]]

    def b_holds() -> list[str] | None:
        held = [t for t in tasks
                if any(x["runner"] == b.peer_id and x["finished"] is None for x in _attempts(b, t))
                and b.get(f"/v1/tasks/{t}").json()["state"] == "assigned"]
        return held if len(held) >= 2 else None

    held = wait_for(b_holds, timeout=60, what="b to hold a running task and a reservation")
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)
    stopped = time.time()
    try:
        def moved() -> bool:
            # All but (at most) b's one running task completed, by a.
            done = [t for t in held if a.get(f"/v1/tasks/{t}").json()["state"] == "completed"]
            return len(done) >= len(held) - 1
        wait_for(moved, timeout=STOP_S - 2, what="a to run b's reservations while b is stopped")
        assert time.time() - stopped < STOP_S
    finally:
        b.proc.send_signal(signal.SIGCONT)

    wait_for(lambda: all(a.get(f"/v1/tasks/{t}").json()["state"] == "completed" for t in tasks), timeout=120,
             what="every task to complete")
    # Nothing ran twice: one runner completed each task (an attempt is marked
    # ok when its runner completed the task).
    ran_by = {t: {x["runner"] for x in _attempts(a, t) if x["ok"]} for t in tasks}
    assert all(len(v) == 1 for v in ran_by.values()), {t: _attempts(a, t) for t, v in ran_by.items() if len(v) != 1}
    by_b = [t for t in held if ran_by[t] == {b.peer_id}]
    assert len(by_b) <= 1  # only its running task stayed with it
