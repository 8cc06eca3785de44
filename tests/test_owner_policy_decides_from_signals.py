"""The owner policy's state machine, fed readings and a clock (no I/O, no event loop).

HTCondor's desktop policy: start after 15 idle minutes with the owner's load
under 0.3, suspend on a touch of the keyboard or a busy CPU, continue after
5 idle minutes, vacate after 10 minutes suspended, then kill what the
vacate left after its deadline.  Unreadable signals never count as idle.
"""

from __future__ import annotations

import dataclasses

import pytest

from meshd.owner.policy import (CONTINUE, KILL, PRESETS, RUNNING, START, SUSPEND, SUSPENDED, VACATE, WAITING,
                                OwnerMachine, OwnerPolicyOptions, Readings, in_windows)

DESKTOP = PRESETS["desktop"]


def idle(input_s: float, load: float = 0.0, pressure: float = 0.0, battery: bool = False,
         minute: int = 600) -> Readings:
    return Readings(input_idle_s=input_s, owner_load=load, pressure_pct=pressure, on_battery=battery, minute=minute)


def test_server_preset_always_runs_and_reads_nothing() -> None:
    m = OwnerMachine(PRESETS["server"])
    for t in range(5):
        d = m.step(Readings(), float(t))
        assert (d.state, d.actions) == (RUNNING, ())


def test_a_server_with_windows_starts_as_a_window_opens() -> None:
    opts = dataclasses.replace(PRESETS["server"], windows=("09:00-17:00",), signals=("window",))
    m = OwnerMachine(opts)
    assert m.step(Readings(minute=20 * 60), 0.0).state == WAITING
    d = m.step(Readings(minute=10 * 60), 1.0)
    assert (d.state, d.actions) == (RUNNING, (START,)), d


def test_desktop_starts_after_15_idle_minutes_with_low_owner_load() -> None:
    m = OwnerMachine(DESKTOP)
    assert m.step(idle(60.0), 0.0).state == WAITING
    d = m.step(idle(899.0), 839.0)
    assert d.state == WAITING and "wait" in d.why
    assert m.step(idle(950.0, load=0.5), 890.0).state == WAITING  # the owner's own load
    d = m.step(idle(960.0), 900.0)
    assert (d.state, d.actions) == (RUNNING, (START,)), d
    # Without an input signal, the machine must be quiet that long.
    quiet = OwnerMachine(OwnerPolicyOptions(signals=("load",)))
    assert quiet.step(idle(0.0), 0.0).state == WAITING
    assert quiet.step(idle(0.0), 899.0).state == WAITING
    assert quiet.step(idle(0.0), 900.0).actions == (START,)


def test_a_touch_or_load_suspends_idleness_continues_and_a_long_suspension_vacates_then_kills() -> None:
    m = OwnerMachine(DESKTOP)
    assert m.step(idle(2900.0), 900.0).actions == (START,)
    assert m.step(idle(2901.0), 901.0).actions == ()  # still idle: nothing to do
    d = m.step(idle(0.2), 902.0)  # a key was pressed since the last poll
    assert (d.state, d.actions) == (SUSPENDED, (SUSPEND,)) and "owner active" in d.why
    d = m.step(idle(100.0), 1002.0)
    assert (d.state, d.actions) == (SUSPENDED, ())
    d = m.step(idle(300.0), 1202.0)  # 5 idle minutes
    assert (d.state, d.actions) == (RUNNING, (CONTINUE,))
    d = m.step(idle(301.0, load=0.9), 1203.0)  # the owner's own CPU load
    assert (d.state, d.actions) == (SUSPENDED, (SUSPEND,)) and "owner load 0.90" in d.why
    d = m.step(idle(400.0, load=0.9), 1203.0 + 600.0)
    assert (d.state, d.actions) == (WAITING, (VACATE,))
    assert m.step(idle(401.0, load=0.9), 1803.0 + 10.0).actions == ()
    assert m.step(idle(402.0, load=0.9), 1803.0 + 30.0).actions == (KILL,)
    assert m.step(idle(403.0, load=0.9), 1803.0 + 60.0).actions == ()


@pytest.mark.parametrize("readings, why", [
    (Readings(input_idle_s=None, owner_load=0.0, pressure_pct=0.0, on_battery=False, minute=0), "unreadable"),
    (Readings(input_idle_s=5000.0, owner_load=None, pressure_pct=0.0, on_battery=False, minute=0), "unreadable"),
    (Readings(input_idle_s=5000.0, owner_load=0.0, pressure_pct=None, on_battery=False, minute=0), "unreadable"),
    (Readings(input_idle_s=5000.0, owner_load=0.0, pressure_pct=0.0, on_battery=None, minute=0), "unreadable"),
    (idle(5000.0, pressure=80.0), "pressure 80%"),
    (idle(5000.0, battery=True), "on battery"),
])
def test_an_unreadable_or_busy_signal_never_counts_as_idle(readings: Readings, why: str) -> None:
    m = OwnerMachine(DESKTOP)
    for t in (0.0, 1000.0, 5000.0):
        d = m.step(readings, t)
        assert d.state == WAITING and why in d.why, d


def test_time_windows_gate_the_start_and_suspend_outside_them() -> None:
    opts = dataclasses.replace(DESKTOP, windows=("22:00-06:00",), start_idle_s=0.0, continue_idle_s=0.0)
    m = OwnerMachine(opts)
    assert m.step(idle(5000.0, minute=12 * 60), 0.0).state == WAITING
    assert m.step(idle(5000.0, minute=23 * 60), 1.0).actions == (START,)
    d = m.step(idle(5001.0, minute=6 * 60), 2.0)
    assert (d.state, d.actions) == (SUSPENDED, (SUSPEND,)) and "outside the time windows" in d.why
    assert in_windows(("22:00-06:00",), 0) and in_windows(("08:00-09:00",), 8 * 60)
    assert not in_windows(("08:00-09:00",), 9 * 60) and in_windows((), 5)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        OwnerPolicyOptions(signals=("telepathy",))
    with pytest.raises(ValueError):
        OwnerPolicyOptions(windows=("25:00-26:00",))
    with pytest.raises(ValueError):
        OwnerPolicyOptions(max_owner_load=2.0)
