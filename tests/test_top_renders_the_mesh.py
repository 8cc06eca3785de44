"""``meshd top``: one frame from recorded API answers, and from a real daemon.

``tests/vectors/top_snapshot.json`` holds two snapshots (``prev``, ``snap``)
recorded from two real daemons while 23 tasks ran (20 echo, 3 that sleep):
``render`` is a pure function of them, so its text is checked exactly where
it matters (queue, throughput, peers with roles and slots, running tasks).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.cli.top import render

from ._daemons import Daemon, echo_task

SNAPSHOT = Path(__file__).parent / "vectors" / "top_snapshot.json"


def test_render_a_recorded_snapshot() -> None:
    recorded = json.loads(SNAPSHOT.read_text())
    snap, prev = recorded["snap"], recorded["prev"]
    lines = render(snap, prev).splitlines()
    me, other = snap["node"]["peer_id"], snap["peers"]["peers"][0]["peer_id"]
    assert lines[0].startswith(f"meshd top  node {snap['node']['name']} (…{me[-8:]})  mesh default  roles manager,runner")
    q = snap["queue"]
    done = q["completed"] + q["failed"] - prev["queue"]["completed"] - prev["queue"]["failed"]
    rate = done / (snap["at"] - prev["at"])
    assert lines[1] == (f"queue  available {q['available']}  assigned {q['assigned']}  completed {q['completed']}  "
                        f"failed {q['failed']}  total {q['total']}  throughput {rate:.1f}/s")
    assert lines[3] == "peers (2 with this node)"
    assert lines[4].split() == ["peer", "roles", "slots", "backlog", "seen"]
    inv = snap["node"]["inventory"]
    assert lines[5].split() == [f"…{me[-8:]}", "manager,runner", f"{inv['free']}/{inv['slots']}", str(inv["backlog"]),
                                "-", "this", "node"]
    assert lines[6].split()[:2] == [f"…{other[-8:]}", "manager,runner"] and "live runner" in lines[6]
    running = snap["running"]["tasks"]
    assert lines[8] == f"running ({q['assigned']})" and lines[9].split() == ["task", "name", "runner", "for"]
    assert len(lines) == 10 + len(running)
    names = {t["name"] for t in running}
    assert {line.split()[1] for line in lines[10:]} == names


def test_render_without_a_previous_snapshot_or_peers() -> None:
    snap = {"at": 1.0, "node": {"peer_id": "12D3KooWxyz", "roles": ["manager"], "inventory": {"slots": 0}},
            "peers": {"peers": []}, "queue": {}, "running": {"tasks": []}}
    text = render(snap)
    assert "throughput -" in text and "nothing running" in text and "peers (1 with this node)" in text


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "node").init().start()
    try:
        yield d
    finally:
        d.stop()


def test_top_once_against_a_daemon(daemon: Daemon) -> None:
    echo = daemon.add_echo_engine()
    cid = daemon.post("/v1/tasks", echo_task(echo, 1)).json()["cid"]
    daemon.wait_state(cid, "completed")
    run = subprocess.run([sys.executable, "-m", "meshd.cli", "top", "--once", "--home", str(daemon.home)],
                         capture_output=True, text=True, env=daemon.env, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert f"(…{daemon.peer_id[-8:]})" in lines[0]
    assert lines[1].startswith("queue  available 0  assigned 0  completed 1  failed 0  total 1")
    assert "nothing running" in run.stdout and "\x1b" not in run.stdout
