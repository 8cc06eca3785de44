"""``bench membership``: argument parsing and report assembly, without daemons (the bench itself starts a mesh)."""

from __future__ import annotations

import sys

import pytest

from meshd.bench import membership
from meshd.cli import main


def test_the_report_gives_the_worst_round_and_whether_each_goal_is_met() -> None:
    rounds = [{"detect_ms": 250, "start_ms": 2400, "rejoin_ms": 900},
              {"detect_ms": 310, "start_ms": 2600, "rejoin_ms": 1400}]
    out = membership.summarize(rounds, {"false_suspicions": 0, "suspicions": [], "reads": 40}, nodes=4, load_s=20)
    assert out["detect_ms"] == 310 and out["detect_ms_rounds"] == [250, 310]
    assert out["rejoin_ms"] == 1400 and out["start_ms"] == 2600
    assert out["met"] == {"detect_ms": True, "rejoin_ms": False, "false_suspicions": True}
    assert out["goals"] == {"detect_ms": 3000, "rejoin_ms": 1000, "false_suspicions": 0}


def test_arguments_are_checked() -> None:
    ns = membership.parse_args(["--nodes", "5", "--rounds", "2", "--load-s", "0"])
    assert (ns.nodes, ns.rounds, ns.load_s) == (5, 2, 0)
    with pytest.raises(SystemExit):
        membership.parse_args(["--nodes", "1"])


def test_cli_offers_bench_membership(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(membership, "run", lambda *a, **k: seen.append(a) or {"detect_ms": 1})
    monkeypatch.setitem(sys.modules, "meshd.bench.membership", membership)
    assert main(["bench", "membership", "--rounds", "1", "--json"]) == 0
    assert seen == [(4, 1, 20.0)]
