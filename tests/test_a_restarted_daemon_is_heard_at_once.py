"""A daemon restarted with the same identity is heard by its peer at once (issue 15 item 2).

py-libp2p numbers a node's gossip from the clock in seconds, so a node that
gossiped more than once a second reused its numbers after a restart, and its
peers took its new messages for ones already seen (or for equivocation) for
a minute.  Here B gossips a burst, restarts on the same home, and a task
enqueued on B right after is known on A well within that time.
"""

from __future__ import annotations

import time

import pytest

from ._daemons import echo_task, wait_for

pytestmark = pytest.mark.slow


def _sees(d, other) -> bool:
    return any(p["roles"] and p["peer_id"] == other.peer_id for p in d.get("/v1/peers").json()["peers"])


def test_a_restarted_daemon_is_heard_at_once(daemon_factory) -> None:
    # Managers only: the tasks stay queued, what travels is B's gossip.
    a = daemon_factory("a", roles=("manager",)).start()
    b = daemon_factory("b", roles=("manager",), bootstrap=[a.multiaddr]).start()
    wait_for(lambda: _sees(a, b) and _sees(b, a), timeout=60, what="A and B to see each other")
    engine = b.add_echo_engine()
    # A burst of commits on B: one announcement each, far more than one a second.
    burst = [b.post("/v1/tasks", {"tasks": [echo_task(engine, i)]}).json()["tasks"][0]["cid"] for i in range(150)]
    wait_for(lambda: a.get(f"/v1/tasks/{burst[-1]}").status_code == 200, timeout=60, what="A to see B's burst")

    b.stop()
    b.start()
    t0 = time.monotonic()
    cid = b.post("/v1/tasks", {"tasks": [echo_task(engine, "after the restart")]}).json()["tasks"][0]["cid"]
    wait_for(lambda: a.get(f"/v1/tasks/{cid}").status_code == 200, timeout=20,
             what="A to know the task B enqueued after its restart")
    print(f"A knew B's new task {time.monotonic() - t0:.2f} s after B's restart")
    assert "Equivocation detected" not in a.log()
