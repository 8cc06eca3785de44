"""Time windows are honoured by a real daemon (issue 16, item 5).

A node with ``[owner] windows = ["09:00-17:00"]`` (the server preset plus
the window signal) reads the local time from a scripted signal file: at
20:00 it claims nothing and says why, and the enqueued task stays
available; at 10:00 it runs the task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

QUICK = "import json, sys\njson.dump(json.load(sys.stdin), sys.stdout)\n"


def _write(path: Path, readings: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(readings))
    tmp.replace(path)


def test_work_waits_outside_the_time_windows_and_runs_inside(daemon_factory, tmp_path: Path) -> None:
    signals = tmp_path / "signals.json"
    _write(signals, {"minute": 20 * 60})  # 20:00, outside
    d: Daemon = daemon_factory()
    cfg = d.home / "config.toml"
    text = re.sub(r'(?m)^signal_file = ""$', f'signal_file = "{signals}"', cfg.read_text())
    text, n = re.subn(r"(?m)^windows = \[\]$", 'windows = ["09:00-17:00"]', text)
    assert n == 1, text
    cfg.write_text(text)
    d.start()
    engine = d.add_script_engine("quick", QUICK)
    r = d.post("/v1/tasks", echo_task(engine, {"x": 1}))
    assert r.status_code == 201, r.text
    task = r.json()["cid"]

    owner = wait_for(lambda: (o := d.get("/v1/owner").json())["policy"]["state"] == "waiting"
                     and "outside the time windows" in o["policy"]["why"] and o, timeout=30,
                     what="the policy to wait outside the window")
    assert owner["gate"]["owner_closed"] is True, owner
    assert d.get(f"/v1/tasks/{task}").json()["state"] == "available"

    _write(signals, {"minute": 10 * 60})  # 10:00, inside
    d.wait_state(task, "completed", timeout=60)
    assert d.get("/v1/owner").json()["policy"]["state"] == "running"
