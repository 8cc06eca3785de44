"""Engines yield the machine to its owner: nice 19, SCHED_IDLE, idle I/O class (issue 16).

A real daemon runs a cold engine and a warm (pool) engine that stay busy;
the test reads their scheduling from ``/proc/<pid>/stat`` (nice, policy)
and ``/proc/<pid>/sched``, and their I/O class with ``ionice`` where it is
installed.  The daemon itself keeps its normal priority.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

SLOW_COLD = "import json, sys, time\njson.load(sys.stdin)\ntime.sleep(600)\nprint(1)\n"
SLOW_WARM = ("import sys, time\nfor line in sys.stdin:\n    time.sleep(600)\n"
             "    sys.stdout.write(line)\n    sys.stdout.flush()\n")
SCHED_IDLE = 5


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def _nice(pid: int) -> int:
    return int(_stat(pid)[19 - 3])


def _policy(pid: int) -> int:
    return int(_stat(pid)[41 - 3])


def _engine_pids(daemon_pid: int, name: bytes) -> list[int]:
    """Processes in the daemon's children's groups whose command line names ``name``."""
    procs = {}
    for e in Path("/proc").iterdir():
        if e.name.isdigit():
            try:
                f = _stat(int(e.name))
                procs[int(e.name)] = (int(f[1]), int(f[2]), (e / "cmdline").read_bytes())
            except (OSError, ValueError):
                continue
    groups = {pgid for pid, (ppid, pgid, _) in procs.items() if ppid == daemon_pid and pgid == pid}
    return [pid for pid, (_, pgid, cmd) in procs.items() if pgid in groups and name in cmd]


def test_cold_and_warm_engines_run_at_idle_priority(daemon_factory) -> None:
    d: Daemon = daemon_factory()
    cfg = d.home / "config.toml"
    cfg.write_text(re.sub(r"(?m)^task_timeout_s = [0-9.]+", "task_timeout_s = 900.0", cfg.read_text()))
    d.start()
    cold = d.add_script_engine("slowcold", SLOW_COLD)
    warm = d.add_script_engine("slowwarm", SLOW_WARM, protocol="jsonl")
    r = d.post("/v1/tasks", {"tasks": [echo_task(cold, {"c": 1}), echo_task(warm, {"w": 1})]})
    assert r.status_code == 201, r.text
    assert d.proc is not None
    pid = d.proc.pid
    pids = wait_for(lambda: (_engine_pids(pid, b"slowcold.py") and _engine_pids(pid, b"slowwarm.py")
                             and _engine_pids(pid, b"slowcold.py") + _engine_pids(pid, b"slowwarm.py")),
                    timeout=60, what="both engines to run")
    for p in pids:
        assert _nice(p) == 19, (p, _stat(p))
        assert _policy(p) == SCHED_IDLE, (p, _stat(p))
        assert re.search(r"(?m)^policy\s*:\s*5$", Path(f"/proc/{p}/sched").read_text())
        if shutil.which("ionice"):
            out = subprocess.run(["ionice", "-p", str(p)], capture_output=True, text=True, check=True).stdout
            assert out.strip().startswith("idle"), out
    # The daemon itself is not demoted.
    assert _nice(pid) == os.getpriority(os.PRIO_PROCESS, 0) and _policy(pid) == 0
