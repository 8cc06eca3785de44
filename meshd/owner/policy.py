"""The owner policy's decisions, sans I/O: signal readings and the time in, actions out.

A workstation belongs to its owner; meshd may use it only while the owner
does not.  This module decides *when*, HTCondor-style, from readings that
something else takes (:mod:`meshd.owner.signals`) and a monotonic time::

    machine = OwnerMachine(PRESETS["desktop"])
    d = machine.step(Readings(input_idle_s=1200.0, owner_load=0.05), now=0.0)
    d.state, d.actions, d.why   # "running", ("start",), "idle for 1200 s ..."

States: ``waiting`` (claims nothing), ``running``, ``suspended`` (engines
stopped in place, no claims) and, after a suspension that lasts too long,
back to ``waiting`` through a ``vacate`` (engines killed, leases released
so that peers take the tasks at once) and, if the vacate has not finished
by its deadline, a ``kill``.

A signal the policy uses but that could not be read (None) never counts as
idle: a desktop whose keyboard cannot be seen (Wayland without logind, no
access to ``/dev/input``) stays ``waiting``.  ``meshd init`` picks the
``server`` preset (no signals, always run) on a machine without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WAITING, RUNNING, SUSPENDED = "waiting", "running", "suspended"
START, SUSPEND, CONTINUE, VACATE, KILL = "start", "suspend", "continue", "vacate", "kill"
SIGNALS = ("input", "load", "pressure", "battery", "window")
#: Input this much older than the previous poll still counts as "since it".
_TOUCH_SLACK_S = 1.0
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Readings:
    """One poll of the machine's signals; None: could not be read.

    Attributes:
        input_idle_s: Seconds since the last keyboard or mouse event.
        owner_load: CPU use of processes other than meshd's, as a fraction
            of all CPUs (0..1).
        pressure_pct: The highest of the memory and I/O pressure
            (PSI ``some avg10``), percent.
        on_battery: The machine runs on battery.
        minute: Local minute of the day (0..1439), for time windows.
    """

    input_idle_s: float | None = None
    owner_load: float | None = None
    pressure_pct: float | None = None
    on_battery: bool | None = None
    minute: int | None = None


@dataclass(frozen=True)
class OwnerPolicyOptions:
    """When meshd may use the machine (``[owner]``; the presets below).

    Attributes:
        preset: Its name (shown by ``meshd owner``).
        signals: The signals consulted (of :data:`SIGNALS`); none: always run.
        start_idle_s: The owner must be idle this long before work starts.
        continue_idle_s: ... and this long before suspended work continues.
        max_owner_load: Busier than this (non-meshd CPU, fraction) is "in use".
        max_pressure_pct: Memory or I/O pressure above this is "in use".
        vacate_after_s: Suspended this long: vacate (release to peers).
        kill_after_s: A vacate not finished after this long: kill.
        windows: Daily ``HH:MM-HH:MM`` local windows in which work may run
            (one may wrap midnight); none: any time.
    """

    preset: str = "server"
    signals: tuple[str, ...] = ()
    start_idle_s: float = 900.0
    continue_idle_s: float = 300.0
    max_owner_load: float = 0.3
    max_pressure_pct: float = 40.0
    vacate_after_s: float = 600.0
    kill_after_s: float = 30.0
    windows: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = set(self.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown owner signal(s) {sorted(unknown)}; choose from {list(SIGNALS)}")
        for name in ("start_idle_s", "continue_idle_s", "max_pressure_pct", "vacate_after_s", "kill_after_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.max_owner_load <= 1:
            raise ValueError("max_owner_load must be in [0, 1]")
        for w in self.windows:
            if not _WINDOW.match(w):
                raise ValueError(f"time window {w!r} is not HH:MM-HH:MM")


#: ``server``: always run.  ``desktop``: HTCondor's desktop policy (start
#: after 15 idle minutes with the owner's load under 0.3, suspend on any
#: input or load, continue after 5 idle minutes, vacate after 10 suspended),
#: plus memory/I/O pressure and battery.
PRESETS: dict[str, OwnerPolicyOptions] = {
    # No idle waits: with [owner] windows (its only signal then) a server
    # starts when a window opens and continues when the next one does.
    "server": OwnerPolicyOptions(start_idle_s=0.0, continue_idle_s=0.0),
    "desktop": OwnerPolicyOptions(preset="desktop", signals=("input", "load", "pressure", "battery", "window")),
}


def in_windows(windows: tuple[str, ...], minute: int) -> bool:
    """Whether ``minute`` (of the day) falls in one of ``windows`` (none: always)."""
    if not windows:
        return True
    for w in windows:
        m = _WINDOW.match(w)
        assert m is not None  # validated by the options
        a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if (a <= minute < b) if a <= b else (minute >= a or minute < b):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Decision:
    """One step's outcome: the state after it, what to do now, and why."""

    state: str
    actions: tuple[str, ...]
    why: str


class OwnerMachine:
    """The policy's state machine.  Feed it every poll; it keeps no clock of its own."""

    def __init__(self, options: OwnerPolicyOptions) -> None:
        self.options = options
        self.state = RUNNING if not options.signals else WAITING
        self.since: float | None = None  # when the state began
        self._quiet_since: float | None = None  # since when load, pressure, battery and window allow work
        self._vacated_at: float | None = None
        self._last_step: float | None = None

    def _busy(self, r: Readings) -> str | None:
        """Why the machine is in use now (load, pressure, battery, window), or None."""
        o, s = self.options, self.options.signals
        if "load" in s:
            if r.owner_load is None:
                return "owner load unreadable"
            if r.owner_load > o.max_owner_load:
                return f"owner load {r.owner_load:.2f} > {o.max_owner_load:g}"
        if "pressure" in s:
            if r.pressure_pct is None:
                return "pressure unreadable"
            if r.pressure_pct > o.max_pressure_pct:
                return f"memory/io pressure {r.pressure_pct:g}% > {o.max_pressure_pct:g}%"
        if "battery" in s:
            if r.on_battery is None:
                return "power supply unreadable"
            if r.on_battery:
                return "on battery"
        if "window" in s and o.windows:
            if r.minute is None:
                return "local time unknown"
            if not in_windows(o.windows, r.minute):
                return "outside the time windows " + ",".join(o.windows)
        return None

    def idle_for(self, r: Readings, now: float) -> tuple[float, str]:
        """How long the owner has left the machine alone (-1 while in use or
        unreadable: below any threshold), and why."""
        busy = self._busy(r)
        if busy is not None:
            self._quiet_since = None
            return -1.0, busy
        if self._quiet_since is None:
            self._quiet_since = now
        if "input" in self.options.signals:
            # As HTCondor: the time is the keyboard's; load and pressure
            # (themselves averages) need only be low now.
            if r.input_idle_s is None:
                return -1.0, "keyboard/mouse idle time unreadable"
            idle = r.input_idle_s
        else:
            idle = now - self._quiet_since  # no input signal: quiet for how long
        return idle, f"idle for {idle:.0f} s"

    def step(self, r: Readings, now: float) -> Decision:
        """Advance on one poll's readings at monotonic time ``now``."""
        o = self.options
        if self.since is None:
            self.since = now
        last = self._last_step if self._last_step is not None else now
        self._last_step = now
        if not o.signals:
            return Decision(RUNNING, (), "server preset: always run")
        idle, why = self.idle_for(r, now)
        actions: list[str] = []
        if self._vacated_at is not None and now - self._vacated_at >= o.kill_after_s:
            actions.append(KILL)  # the vacate had its time: whatever still runs is killed
            self._vacated_at = None
        if self.state == WAITING:
            if idle >= o.start_idle_s:
                self._go(RUNNING, now)
                actions.append(START)
                why += f" >= {o.start_idle_s:g} s: start"
            else:
                why += f" < {o.start_idle_s:g} s: wait"
        elif self.state == RUNNING:
            # In use: busy, unreadable, or a key or the mouse moved since the last poll.
            touched = r.input_idle_s is not None and r.input_idle_s <= now - last + _TOUCH_SLACK_S
            if idle < 0 or ("input" in o.signals and touched):
                self._go(SUSPENDED, now)
                actions.append(SUSPEND)
                why += ": owner active, suspend"
        elif self.state == SUSPENDED:
            if idle >= o.continue_idle_s:
                self._go(RUNNING, now)
                actions.append(CONTINUE)
                why += f" >= {o.continue_idle_s:g} s: continue"
            elif now - self.since >= o.vacate_after_s:
                self._go(WAITING, now)
                actions.append(VACATE)
                self._vacated_at = now
                why += f"; suspended {o.vacate_after_s:g} s: vacate"
            else:
                why += f"; suspended, continue after {o.continue_idle_s:g} s idle"
        return Decision(self.state, tuple(actions), why)

    def _go(self, state: str, now: float) -> None:
        self.state, self.since = state, now


def choose_preset(input_readable: bool, has_battery: bool) -> tuple[str, str]:
    """The preset a fresh ``meshd init`` writes, and why, from what the machine has.

    A machine whose keyboard or mouse times can be read, or that has a
    battery, is someone's workstation or laptop: ``desktop``.  Anything else
    (no input devices, or none readable, and no battery: a server, a VM, a
    container) gets ``server``: the desktop preset would wait for ever on
    signals it cannot read.
    """
    if input_readable:
        return "desktop", "keyboard/mouse event times are readable: a workstation"
    if has_battery:
        return "desktop", "it has a battery: a laptop"
    return "server", "no readable keyboard or mouse and no battery: a server"


__all__ = ["CONTINUE", "KILL", "PRESETS", "choose_preset", "RUNNING", "START", "SIGNALS", "SUSPEND", "SUSPENDED", "VACATE",
           "WAITING", "Decision", "OwnerMachine", "OwnerPolicyOptions", "Readings", "in_windows"]
