"""A fresh ``meshd init`` chooses the owner preset from the machine's signals and says which (issue 16, item 1).

A machine with a readable keyboard/mouse or a battery is a workstation or a
laptop (``desktop``); anything else is a server (``server``: the desktop
preset would wait for ever on signals it cannot read).  ``--preset`` overrides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshd.cli import main
from meshd.owner.policy import choose_preset
from meshd.owner.signals import has_battery


@pytest.mark.parametrize(("input_readable", "battery", "preset"), [
    (True, False, "desktop"), (False, True, "desktop"), (True, True, "desktop"), (False, False, "server"),
])
def test_a_readable_keyboard_or_a_battery_makes_a_desktop(input_readable: bool, battery: bool, preset: str) -> None:
    chosen, why = choose_preset(input_readable, battery)
    assert chosen == preset and why


def test_a_battery_is_a_supply_of_type_battery(tmp_path: Path) -> None:
    assert has_battery(str(tmp_path / "none")) is False
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    assert has_battery(str(tmp_path)) is False
    (tmp_path / "BAT0").mkdir()
    (tmp_path / "BAT0" / "type").write_text("Battery\n")
    assert has_battery(str(tmp_path)) is True


def test_init_writes_and_says_the_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--home", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert "owner preset: " in said
    written = next(line for line in (tmp_path / "a" / "config.toml").read_text().splitlines()
                   if line.startswith("preset = "))
    assert said.split("owner preset: ")[1].split(" ")[0] in written
    assert main(["init", "--home", str(tmp_path / "b"), "--preset", "desktop", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["owner_preset"] == "desktop" and out["owner_preset_why"] == "chosen with --preset"
    assert 'preset = "desktop"' in (tmp_path / "b" / "config.toml").read_text()
    with pytest.raises(SystemExit):
        main(["init", "--home", str(tmp_path / "c"), "--preset", "laptop"])
