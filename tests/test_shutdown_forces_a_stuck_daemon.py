"""A stop that does not finish is forced: ``[node] shutdown_grace_s`` and meshd.runtime.shutdown.

The graceful path (tests/test_daemon_stops_on_one_sigterm.py) relies on every
task honouring cancellation.  These tests run a small program that does not
(a shielded sleep, or a blocking ``time.sleep`` on the trio thread) and owns
an engine-like process group, under :class:`meshd.runtime.shutdown.Shutdown`, and
check that one SIGTERM still ends it after the grace period, and that a
second one ends it at once: exit status ``FORCED_EXIT_STATUS``, a
``shutdown_forced`` log line, and the engine's process group gone.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meshd.config import NodeConfig
from meshd.errors import ConfigError
from meshd.runtime.shutdown import FORCED_EXIT_STATUS

from ._daemons import REPO, wait_for

# --- [node] shutdown_grace_s is validated -------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, math.inf, math.nan, 600.5, 1e9, True, "8"])
def test_shutdown_grace_s_out_of_range_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="shutdown_grace_s"):
        NodeConfig(shutdown_grace_s=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [0.5, 8, 600])
def test_shutdown_grace_s_in_range_is_accepted(good: float) -> None:
    assert NodeConfig(shutdown_grace_s=good).shutdown_grace_s == float(good)


def test_shutdown_grace_s_defaults_to_8_s() -> None:
    assert NodeConfig().shutdown_grace_s == 8.0


# --- the forced path, in a real process ----------------------------------------

# argv: grace_s, how the trio task is stuck ("shielded" or "blocked").
STUCK = textwrap.dedent("""
    import subprocess, sys, time
    import trio
    from engines.sandbox import kill_group
    from meshd.runtime.logs import configure_logging
    from meshd.runtime.shutdown import Shutdown, ShutdownOptions

    class Engines:  # what Shutdown.own expects (meshd.runtime.shutdown.EngineOwner)
        docker = None
        def __init__(self, groups):
            self.groups = groups
        def process_groups(self):
            return tuple(self.groups)
        def kill_engines(self):
            return tuple(g for g in self.groups if kill_group(g))

    async def main(shutdown, how):
        with trio.CancelScope() as scope:
            shutdown.attach(scope)
            # An engine-like child leading its own process group, with a grandchild in it.
            child = subprocess.Popen([sys.executable, "-c",
                                      "import subprocess, sys, time; "
                                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                                      "time.sleep(600)"], start_new_session=True)
            shutdown.own(Engines([child.pid]))
            print(f"engine_group={child.pid}", flush=True)
            if how == "shielded":
                with trio.CancelScope(shield=True):
                    await trio.sleep(600)
            else:
                time.sleep(600)  # blocks the event loop itself
        print("unreachable: the stuck task ended", flush=True)

    configure_logging("info", sys.stdout)
    shutdown = Shutdown(ShutdownOptions(grace_s=float(sys.argv[1])))
    shutdown.install()
    trio.run(main, shutdown, sys.argv[2])
    sys.exit(0)
""")


def _pgid_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


class Stuck:
    """The stuck program, its output file and its engine's process group."""

    def __init__(self, tmp_path: Path, grace_s: float, how: str) -> None:
        self.out_path = tmp_path / "stuck.log"
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", STUCK, str(grace_s), how], cwd=REPO,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        self.group = int(wait_for(lambda: self._field("engine_group="), timeout=30, what="the engine to start"))
        wait_for(lambda: _pgid_alive(self.group), timeout=10, what="the engine group to exist")

    def _field(self, prefix: str) -> str | None:
        for line in self.out().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):]
        if self.proc.poll() is not None:
            raise AssertionError(f"the program exited early ({self.proc.returncode}):\n{self.out()}")
        return None

    def out(self) -> str:
        return self.out_path.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:g} s later (the stop was not forced):\n{self.out()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if _pgid_alive(self.group):
            os.killpg(self.group, signal.SIGKILL)
        self._out.close()


@pytest.fixture
def stuck(tmp_path: Path):
    made: list[Stuck] = []

    def make(grace_s: float, how: str) -> Stuck:
        s = Stuck(tmp_path, grace_s, how)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["shielded", "blocked"])
def test_one_sigterm_forces_after_the_grace(stuck, how: str) -> None:
    grace = 1.0
    s = stuck(grace, how)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait(grace + 5)
    elapsed = time.monotonic() - t0
    out = s.out()
    assert rc == FORCED_EXIT_STATUS, out
    assert elapsed >= grace, f"forced after {elapsed:.2f} s, before the {grace:g} s grace:\n{out}"
    assert "shutting_down" in out and "shutdown_forced" in out, out
    assert "still running" in out and str(s.group) in out, out  # the reason, and the group it killed
    assert "unreachable" not in out
    wait_for(lambda: not _pgid_alive(s.group), timeout=5, what=f"engine group {s.group} to be gone")


@pytest.mark.slow
def test_a_second_sigterm_forces_at_once(stuck) -> None:
    grace = 60.0  # far longer than the test may wait: only the second signal can end it in time
    s = stuck(grace, "shielded")
    s.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting_down" in s.out(), timeout=10, what="the first signal to be handled")
    assert s.proc.poll() is None, s.out()
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait(5)
    out = s.out()
    assert rc == FORCED_EXIT_STATUS, out
    assert time.monotonic() - t0 < 5
    assert "shutdown_forced" in out and "second signal" in out, out
    wait_for(lambda: not _pgid_alive(s.group), timeout=5, what=f"engine group {s.group} to be gone")
