"""Where the owner policy's readings come from: pluggable signal sources.

Each source reads one part of :class:`~meshd.owner.policy.Readings` and
returns it as a dict; a part it cannot read is None (never "idle").  The
sources are blocking (files under ``/proc``, ``/sys``, ``/dev``): the
service reads them in a worker thread.

* :class:`InputIdle`: seconds since the newest access or change time of the
  ``/dev/input`` event devices (the kernel stamps them on keyboard and mouse
  events); None when none can be read (no devices, no permission, or a
  Wayland seat that hides them).
* :class:`OwnerLoad`: CPU use of processes other than meshd's (the daemon
  and its engine process groups), from ``/proc/stat`` and ``/proc/<pid>/stat``
  between two polls; None at the first poll.
* :class:`Pressure`: the higher ``some avg10`` of memory and I/O in
  ``/proc/pressure`` (PSI).
* :class:`Battery`: whether the machine runs on battery (sysfs power supplies;
  no supply at all reads as mains).
* :class:`LocalTime`: the local minute of the day.
* :class:`FileSource`: every reading from a JSON file (tests, machines with
  signals of their own: write the file from a script or a cron job).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from .policy import Readings

_FIELDS = ("input_idle_s", "owner_load", "pressure_pct", "on_battery", "minute")


class Source(Protocol):
    """One signal source: a partial reading (fields it owns; None: unreadable)."""

    def read(self) -> dict[str, Any]: ...


class InputIdle:
    """Seconds since the last keyboard/mouse event (``/dev/input/event*`` times)."""

    def __init__(self, pattern: str = "/dev/input/event*", clock: Callable[[], float] = time.time) -> None:
        self.pattern, self.clock = pattern, clock

    def read(self) -> dict[str, Any]:
        newest = None
        for path in glob.glob(self.pattern):
            try:
                st = os.stat(path)
            except OSError:
                continue
            t = max(st.st_atime, st.st_mtime)
            newest = t if newest is None else max(newest, t)
        return {"input_idle_s": None if newest is None else max(0.0, self.clock() - newest)}


def _jiffies(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])  # utime + stime


class OwnerLoad:
    """Non-meshd CPU use between two polls, as a fraction of all CPUs.

    Args:
        groups: The engine process groups now (``EngineHost.process_groups``).
    """

    def __init__(self, groups: Callable[[], Iterable[int]] = tuple) -> None:
        self.groups = groups
        self._last: tuple[int, int, int] | None = None  # jiffies: all CPUs, busy, meshd's

    def _meshd_pids(self) -> list[int]:
        groups = set(self.groups())
        out = [os.getpid()]
        if groups:
            for e in os.listdir("/proc"):
                if e.isdigit():
                    try:
                        if os.getpgid(int(e)) in groups:
                            out.append(int(e))
                    except OSError:
                        continue
        return out

    def read(self) -> dict[str, Any]:
        try:
            cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return {"owner_load": None}
        values = [int(v) for v in cpu[:8]]
        total, idle = sum(values), values[3] + values[4]
        mine = sum(j for j in (_jiffies(p) for p in self._meshd_pids()) if j is not None)
        last, self._last = self._last, (total, total - idle, mine)
        if last is None:
            return {"owner_load": None}
        d_total, d_busy, d_mine = total - last[0], (total - idle) - last[1], mine - last[2]
        if d_total <= 0:
            return {"owner_load": None}
        return {"owner_load": round(max(0.0, min(1.0, (d_busy - d_mine) / d_total)), 3)}


class Pressure:
    """The higher memory and I/O pressure (PSI ``some avg10``, percent)."""

    def __init__(self, root: str = "/proc/pressure") -> None:
        self.root = root

    def read(self) -> dict[str, Any]:
        worst = None
        for name in ("memory", "io"):
            try:
                line = Path(self.root, name).read_text().split("\n", 1)[0]
            except OSError:
                return {"pressure_pct": None}
            for part in line.split()[1:]:
                if part.startswith("avg10="):
                    v = float(part[6:])
                    worst = v if worst is None else max(worst, v)
        return {"pressure_pct": worst}


class Battery:
    """Whether the machine runs on battery (no power supply at all: mains)."""

    def __init__(self, root: str = "/sys/class/power_supply") -> None:
        self.root = root

    def read(self) -> dict[str, Any]:
        try:
            supplies = os.listdir(self.root)
        except FileNotFoundError:
            return {"on_battery": False}
        except OSError:
            return {"on_battery": None}
        mains = discharging = False
        for s in supplies:
            try:
                kind = Path(self.root, s, "type").read_text().strip()
                if kind == "Mains" and Path(self.root, s, "online").read_text().strip() == "1":
                    mains = True
                if kind == "Battery" and Path(self.root, s, "status").read_text().strip() == "Discharging":
                    discharging = True
            except OSError:
                continue
        return {"on_battery": discharging and not mains}


class LocalTime:
    """The local minute of the day, for time windows."""

    def read(self) -> dict[str, Any]:
        t = time.localtime()
        return {"minute": t.tm_hour * 60 + t.tm_min}


class FileSource:
    """Every reading from a JSON object in ``path`` (fields as in ``Readings``;
    a missing field, or a file that cannot be read or parsed, is None)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(Path(self.path).read_text())
        except (OSError, ValueError):
            return dict.fromkeys(_FIELDS)
        if not isinstance(data, dict):
            return dict.fromkeys(_FIELDS)
        out: dict[str, Any] = {}
        for k in _FIELDS:
            v = data.get(k)
            ok = isinstance(v, bool) if k == "on_battery" else (isinstance(v, (int, float)) and not isinstance(v, bool))
            out[k] = v if ok else None
        return out


def has_battery(root: str = "/sys/class/power_supply") -> bool:
    """Whether the machine has a battery (a power supply of type ``Battery``)."""
    try:
        supplies = os.listdir(root)
    except OSError:
        return False
    for s in supplies:
        try:
            if Path(root, s, "type").read_text().strip() == "Battery":
                return True
        except OSError:
            continue
    return False


def detect_preset() -> tuple[str, str]:
    """The preset for this machine and why (:func:`meshd.owner.policy.choose_preset`)."""
    from .policy import choose_preset

    return choose_preset(InputIdle().read()["input_idle_s"] is not None, has_battery())


def machine_sources(groups: Callable[[], Iterable[int]] = tuple) -> list[Source]:
    """The machine's own signals."""
    return [InputIdle(), OwnerLoad(groups), Pressure(), Battery(), LocalTime()]


def read_all(sources: Iterable[Source]) -> Readings:
    """One reading from every source (a source that fails reads as None)."""
    merged: dict[str, Any] = dict.fromkeys(_FIELDS)
    for s in sources:
        try:
            part = s.read()
        except (OSError, ValueError, IndexError):
            continue
        merged.update({k: v for k, v in part.items() if k in merged})
    return Readings(**merged)


__all__ = ["Battery", "FileSource", "InputIdle", "LocalTime", "OwnerLoad", "Pressure", "Source",
           "detect_preset", "has_battery", "machine_sources", "read_all"]
