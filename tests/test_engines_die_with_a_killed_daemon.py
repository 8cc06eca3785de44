"""Engines do not outlive a SIGKILLed daemon.

A SIGKILL runs no clean-up, so the daemon's engines become orphans.  Before
the fix a busy warm worker and a cold engine both ran on until their own end
(here: ten minutes of sleep), whoever restarted the node.  Now:

* a busy warm-pool worker notices that the daemon is gone and kills its own
  process group (worker and engine child) within about a second, with no
  restart (``engines.worker``);
* a cold engine is recorded in ``<home>/engines.pids`` and the next daemon on
  that home kills its group before it runs anything, logging
  ``orphaned_engines_killed`` (``engines.ledger``).
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from ._daemons import Daemon, echo_task, wait_for
from .test_daemon_stops_on_one_sigterm import (
    SLOW_COLD,
    SLOW_WARM,
    _cmdline,
    _engine_groups,
    _procs,
)

pytestmark = pytest.mark.slow


def _groups_running(daemon_pid: int, script: bytes) -> set[int]:
    """Process groups led by a child of the daemon in which ``script`` runs."""
    groups = _engine_groups(daemon_pid)
    return {g for p, (_, g) in _procs().items() if g in groups and script in _cmdline(p)}


def _alive(groups: set[int]) -> set[int]:
    """Live (non-zombie) processes in ``groups``."""
    return {p for p, (_, g) in _procs().items() if g in groups}


def test_engines_of_a_sigkilled_daemon_are_killed(daemon_factory) -> None:
    d: Daemon = daemon_factory()
    cfg = d.home / "config.toml"
    # Long enough that only the fix, not the engines' timeout, can end them.
    cfg.write_text(re.sub(r"(?m)^task_timeout_s = [0-9.]+", "task_timeout_s = 900.0", cfg.read_text()))
    d.start()
    slow_cold = d.add_script_engine("slowcold", SLOW_COLD)
    slow_warm = d.add_script_engine("slowwarm", SLOW_WARM, protocol="jsonl")
    r = d.post("/v1/tasks", {"tasks": [echo_task(slow_cold, {"cold": 1}), echo_task(slow_warm, {"warm": 1})]})
    assert r.status_code == 201, r.text
    assert d.proc is not None
    pid = d.proc.pid
    cold = wait_for(lambda: _groups_running(pid, b"slowcold.py"), timeout=120, what="the slow cold engine to run")
    warm = wait_for(lambda: _groups_running(pid, b"slowwarm.py"), timeout=120, what="the slow warm engine to run")
    # Every worker of that pool (busy or idle), not only the busy one.
    warm = {g for g in _engine_groups(pid) if g not in cold}
    try:
        d.kill()
        # No restart: the busy worker (blocked reading its engine) must go by itself.
        wait_for(lambda: not _alive(warm), timeout=15, what=f"warm worker groups {sorted(warm)} to die")
        if not _alive(cold):
            # Seen once in a loaded fresh-clone CI run since engines run jailed
            # (bubblewrap): the cold engine went with the daemon.  What the
            # title asks holds; the ledger's restart path was not exercised.
            pytest.skip("the cold engine died with the daemon (jailed): the ledger restart path was not exercised")
        d.start()
        wait_for(lambda: not _alive(cold), timeout=15, what=f"cold engine group {sorted(cold)} to be killed")
        logged = {int(g) for m in re.finditer(r"orphaned_engines_killed.*?engine_groups=\"?([0-9,]+)",
                                               d.log_path.read_text()) for g in m.group(1).split(",")}
        assert cold <= logged, d.log()
    finally:
        for p in _alive(cold | warm):  # never leave ten-minute sleepers behind a failed run
            os.kill(p, signal.SIGKILL)


def test_the_ledger_never_kills_a_recycled_pid(tmp_path) -> None:
    """A recorded group whose leader's start time differs is someone else's: left alone."""
    import subprocess
    import sys

    from engines.ledger import GroupLedger, kill_recorded, start_time

    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        ledger = GroupLedger(tmp_path / "engines.pids")
        ledger.record(ours.pid)
        ledger.record(other.pid)
        # As if ``other``'s pid had been recycled since it was recorded.
        (tmp_path / "engines.pids").write_text(
            f"{ours.pid} {start_time(ours.pid)}\n{other.pid} {start_time(other.pid) - 1}\nnot a line\n")
        assert kill_recorded(tmp_path / "engines.pids") == (ours.pid,)
        assert ours.wait(10) == -signal.SIGKILL
        assert other.poll() is None
        assert not (tmp_path / "engines.pids").exists()
    finally:
        for p in (ours, other):
            p.kill()
            p.wait(10)


def test_leftover_containers_of_this_home_are_removed() -> None:
    """Only containers labelled with this home's owner hash are asked for and removed."""
    from engines._docker_io import remove_labelled

    class FakeApi:  # the two docker-py APIClient calls remove_labelled makes
        def __init__(self) -> None:
            self.removed: list[str] = []
            self.filters: list[dict] = []

        def containers(self, *, all: bool, quiet: bool, filters: dict) -> list[dict]:
            assert all and quiet
            self.filters.append(filters)
            return [{"Id": "c1"}, {"Id": "c2"}]

        def remove_container(self, cid: str, *, force: bool) -> None:
            assert force
            self.removed.append(cid)

    api = FakeApi()
    assert remove_labelled(api, "org.meshd.home=abc") == ("c1", "c2")
    assert api.filters == [{"label": "org.meshd.home=abc"}] and api.removed == ["c1", "c2"]
