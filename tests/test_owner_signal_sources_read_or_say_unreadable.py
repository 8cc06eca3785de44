"""Owner signal sources read the machine, or say they cannot: never a made-up "idle".

Each source reads a fake ``/proc``/``/sys``/``/dev`` tree in ``tmp_path``
(the paths are parameters), so what a missing or garbled file reads as is
checked without touching the host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from meshd.owner.signals import Battery, FileSource, InputIdle, OwnerLoad, Pressure, read_all


def test_input_idle_is_the_age_of_the_newest_device_time_and_none_without_devices(tmp_path: Path) -> None:
    assert InputIdle(str(tmp_path / "event*")).read() == {"input_idle_s": None}
    for name, t in (("event0", 1000.0), ("event1", 1500.0)):
        p = tmp_path / name
        p.write_text("")
        os.utime(p, (t, t))
    assert InputIdle(str(tmp_path / "event*"), clock=lambda: 1600.0).read() == {"input_idle_s": 100.0}


def test_pressure_is_the_worst_memory_or_io_avg10(tmp_path: Path) -> None:
    assert Pressure(str(tmp_path)).read() == {"pressure_pct": None}
    (tmp_path / "memory").write_text("some avg10=3.50 avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00\n")
    (tmp_path / "io").write_text("some avg10=12.25 avg60=2.00 avg300=0.00 total=9\n")
    assert Pressure(str(tmp_path)).read() == {"pressure_pct": 12.25}


def test_battery_reads_discharging_without_mains_and_no_supply_as_mains(tmp_path: Path) -> None:
    assert Battery(str(tmp_path / "none")).read() == {"on_battery": False}
    bat = tmp_path / "BAT0"
    bat.mkdir()
    (bat / "type").write_text("Battery\n")
    (bat / "status").write_text("Discharging\n")
    assert Battery(str(tmp_path)).read() == {"on_battery": True}
    ac = tmp_path / "AC"
    ac.mkdir()
    (ac / "type").write_text("Mains\n")
    (ac / "online").write_text("1\n")
    assert Battery(str(tmp_path)).read() == {"on_battery": False}


def test_owner_load_needs_two_polls_and_stays_within_zero_and_one() -> None:
    src = OwnerLoad()
    assert src.read() == {"owner_load": None}
    sum(i * i for i in range(200_000))  # some CPU between the polls
    load = src.read()["owner_load"]
    assert load is None or 0.0 <= load <= 1.0


def test_a_garbled_signal_file_reads_as_unreadable_never_idle(tmp_path: Path) -> None:
    path = tmp_path / "signals.json"
    for text in ("", "not json", "[1, 2]", json.dumps({"input_idle_s": "long", "on_battery": 1})):
        path.write_text(text)
        r = read_all([FileSource(str(path))])
        assert r.input_idle_s is None and r.on_battery is None, text
    path.write_text(json.dumps({"input_idle_s": 42, "on_battery": False, "owner_load": 0.1}))
    r = read_all([FileSource(str(path))])
    assert (r.input_idle_s, r.on_battery, r.owner_load, r.pressure_pct) == (42, False, 0.1, None)
    assert read_all([FileSource(str(tmp_path / "missing.json"))]).owner_load is None
