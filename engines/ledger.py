"""The engine ledger: which engine process groups this daemon started, on disk.

Why: a daemon that dies by SIGKILL (or OOM, or a crash) runs no clean-up, and
its cold engines are nobody's children any more: nothing enforces their
timeout, and one that sleeps or waits on input runs until the machine
reboots.  (Warm pool workers notice a dead parent themselves, see
:mod:`engines.worker`.)  So every engine process group is written to
``<home>/engines.pids`` while it runs, and the next daemon on that home kills
the groups still there before it starts any engine (:func:`kill_recorded`).

Why not ``PR_SET_PDEATHSIG`` in the child: it fires when the *thread* that
forked the child exits, not the process, and trio forks in its thread cache
(``trio.lowlevel.open_process`` calls ``Popen`` via ``trio.to_thread``), whose
threads exit after 10 s idle: healthy engines would be killed mid-run.

Each line is ``<pgid> <starttime>``: the group leader's start time in clock
ticks since boot (``/proc/<pid>/stat`` field 22), so that a recycled pid
(another program's group with the same number) is never killed.  A group
whose leader has exited but whose members live on is killed when every
member started no earlier than the recorded leader (the kernel does not
reuse a pid while it still names a process group).

The file is rewritten whole (temporary file, then ``rename``) on each change,
so a crash at any point leaves either the old or the new list, never a torn
one.  There is no ``fsync``: the file only matters after a crash of the
daemon, not of the machine (after a reboot no engine survives anyway).

Linux only (``/proc``); elsewhere recording and killing do nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

#: File name of the ledger inside a home directory.
LEDGER_NAME = "engines.pids"


def start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot; None if gone
    (or a zombie, which can no longer run anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class GroupLedger:
    """The on-disk list of engine process groups one daemon runs now.

    Not thread-safe: call it from the event loop's thread only.  Constructing
    one does no I/O; the file appears with the first :meth:`record`.

    Args:
        path: The ledger file (``<home>/engines.pids``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._groups: dict[int, int] = {}

    def record(self, pgid: int) -> None:
        """Add group ``pgid`` (its leader must be alive: call right after the
        start).  A group whose leader is already gone is not recorded."""
        started = start_time(pgid)
        if started is None:
            return
        self._groups[pgid] = started
        self._write()

    def forget(self, pgid: int) -> None:
        """Drop group ``pgid`` once it has been killed and reaped."""
        if self._groups.pop(pgid, None) is not None:
            self._write()

    def _write(self) -> None:
        # Write-then-rename: a crash leaves the old list or the new one.
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text("".join(f"{g} {t}\n" for g, t in self._groups.items()))
            os.replace(tmp, self.path)
        except OSError:
            pass  # best effort: a full disk must not fail engine runs


def _members(pgid: int) -> list[int]:
    """Start times of the live processes in group ``pgid``."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(fields[19]))
    return out


def kill_recorded(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """SIGKILL the groups a previous daemon recorded in ``path`` that still
    run, then empty the file.  Call at start-up, before any engine starts.

    Returns:
        The process groups killed.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        return ()
    killed = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            continue  # not ours: never kill on a guess
        pgid, started = int(parts[0]), int(parts[1])
        if pgid <= 1:
            continue
        leader = start_time(pgid)
        if leader is not None:
            ours = leader == started  # else a recycled pid: someone else's process
        else:
            members = _members(pgid)
            ours = bool(members) and min(members) >= started
        if ours:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            killed.append(pgid)
    try:
        path.unlink()
    except OSError:
        pass
    return tuple(killed)


__all__ = ["LEDGER_NAME", "GroupLedger", "kill_recorded", "start_time"]
