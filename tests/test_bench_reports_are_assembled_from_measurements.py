"""``bench mesh`` and ``bench spread``: argument parsing and report assembly, without daemons.

The benchmarks themselves start real meshes and print figures; these tests
only check the pure pieces that turn measurements into the printed keys.
"""

from __future__ import annotations

import os
import sys

import pytest

from meshd.bench import mesh, spread
from meshd.bench.cputime import self_cpu_s, tree_cpu_s
from meshd.cli import main

A, B, C = "12D3KooWA", "12D3KooWB", "12D3KooWC"
NAMES = {A: "node-a", B: "node-b", C: "node-c"}


def test_mesh_parses_remote_and_defaults() -> None:
    ns = mesh.parse_args(["--nodes", "3", "--tasks", "5000", "--remote", "--json"])
    assert (ns.nodes, ns.tasks, ns.remote, ns.json, ns.slots, ns.latency_samples) == (3, 5000, True, True, 2, 200)
    assert mesh.parse_args([]).remote is False


def test_mesh_remote_needs_two_nodes() -> None:
    with pytest.raises(SystemExit):
        mesh.parse_args(["--nodes", "1", "--remote"])


def test_mesh_remote_submitter_is_manager_only() -> None:
    assert mesh.node_roles(3, remote=True) == [["manager"], ["manager", "runner"], ["manager", "runner"]]
    assert mesh.node_roles(2, remote=False) == [["manager", "runner"]] * 2


def test_mesh_counts_each_measured_task_on_every_runner_that_completed_it() -> None:
    runners = {"t1": {A}, "t2": {B, C}, "t3": set(), "warm": {A}, "t4": {"12D3KooWstranger-peer"}}
    counts, unattributed = mesh.ran_per_node(runners, NAMES, ["t1", "t2", "t3", "t4"])
    assert counts == {"node-a": 1, "node-b": 1, "node-c": 1, "12D3KooWstra": 1}
    assert unattributed == 1


def test_mesh_summary_has_every_key() -> None:
    out = mesh.summarize(nodes=3, tasks=1000, slots=2, remote=True, elapsed_s=2.0, cpu_s=3.0, client_cpu_s=0.5,
                         latencies_ms=[float(i) for i in range(1, 101)], results=1100, records=1111,
                         ran={"node-a": 0, "node-b": 400, "node-c": 600}, unattributed=0,
                         runner_names=["node-b", "node-c"], latency_timeouts=1)
    assert out["tasks_per_s"] == 500.0
    assert out["cpu_ms_per_task"] == 3.0
    assert out["client_cpu_ms_per_task"] == 0.5
    assert out["latency_p50_ms"] == 50.5
    assert out["latency_p99_ms"] == 100.0
    assert out["latency_timeouts"] == 1
    assert out["duplicate_runs"] == 0.01
    assert out["measured_duplicate_runs"] == 0.0  # 1000 completions for 1000 tasks
    assert out["min_node_share"] == 0.4  # node-a, the manager-only submitter, is left out
    assert out["ran_per_node"]["node-c"] == 600
    assert {"nodes", "tasks", "remote", "elapsed_s", "goals", "ran_unattributed"} <= set(out)


def test_spread_parses_variants() -> None:
    assert spread.parse_args([]).variants == list(spread.VARIANTS)
    ns = spread.parse_args(["--variants", "stall, base", "--stall-s", "2", "--json"])
    assert (ns.variants, ns.stall_s, ns.json, ns.tasks, ns.cpu_s) == (["stall", "base"], 2.0, True, 24, 0.5)
    with pytest.raises(SystemExit):
        spread.parse_args(["--variants", "base,nope"])


def test_spread_ideal_uses_the_fewer_of_cores_and_slots() -> None:
    assert spread.ideal_s(24, 0.5, total_slots=3, cores=2) == 6.0
    assert spread.ideal_s(24, 0.5, total_slots=3, cores=16) == 4.0


def test_spread_capacity_shares_within_ten_points() -> None:
    rep = spread.capacity_report({"node-a": 5, "node-b": 5, "node-c": 14}, {"node-a": 1, "node-b": 2, "node-c": 4})
    assert rep["capacity_share"] == {"node-a": 0.143, "node-b": 0.286, "node-c": 0.571}
    assert rep["within_10pct"] == {"node-a": True, "node-b": True, "node-c": True}
    assert rep["all_within"]
    rep = spread.capacity_report({"node-a": 24, "node-b": 0, "node-c": 0}, {"node-a": 1, "node-b": 2, "node-c": 4})
    assert rep["within_10pct"] == {"node-a": False, "node-b": False, "node-c": False}


def test_spread_counts_runs_and_duplicates() -> None:
    results = {"t1": [{"runner": A, "at": 5}], "t2": [{"runner": B, "at": 9}, {"runner": C, "at": 7}]}
    assert spread.count_runs(results, NAMES) == ({"node-a": 1, "node-b": 1, "node-c": 1}, 1)
    assert spread.first_results(results)["t2"]["runner"] == C


def test_spread_stall_report_separates_moved_kept_and_running_work() -> None:
    stop = 10_000
    results = {
        "running": [{"runner": C, "at": 16_000, "duration_s": 6.5}],  # began at 9.5 s, before the stop
        "moved": [{"runner": A, "at": 12_000, "duration_s": 0.5}],
        "kept": [{"runner": C, "at": 16_500, "duration_s": 7.0, "output": {"began": 16.0}}],  # waited for a slot
        "later": [{"runner": C, "at": 17_000, "duration_s": 0.5}],  # claimed after the stop
        "other": [{"runner": B, "at": 11_000, "duration_s": 0.5}],
    }
    attempts = {
        "running": [{"runner": C, "started": 9_400}],
        "moved": [{"runner": C, "started": 9_600}, {"runner": A, "started": 13_000}, {"runner": B, "started": 11_500}],
        "kept": [{"runner": C, "started": 9_700}],
        "later": [{"runner": C, "started": 15_500}],
        "other": [{"runner": B, "started": 10_100}],
    }
    rep = spread.stall_report(results, attempts, C, stop)
    assert rep == {"held_at_stop": 2, "moved": 1, "kept": 1, "move_s": 1.5}
    assert spread.stall_report({}, {}, C, stop)["move_s"] is None


def test_tree_cpu_counts_this_process() -> None:
    assert tree_cpu_s([os.getpid(), None]) >= self_cpu_s() > 0
    assert tree_cpu_s([2**22 + 12345]) == 0.0  # no such process


def test_cli_offers_bench_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(spread, "run", lambda *a, **k: seen.append(a) or {"makespan_s": 1.0})
    monkeypatch.setitem(sys.modules, "meshd.bench.spread", spread)
    assert main(["bench", "spread", "--variants", "base", "--json"]) == 0
    assert seen == [(24, 0.5, ["base"], 5.0)]


def test_owner_work_lost_counts_batches_computed_twice_at_the_median_batch_time() -> None:
    from meshd.bench import owner

    # Batches 1-5 on node-a, vacated after its checkpoint at 4; the resumed run recomputes 5, then 6-8.
    trace = ["1 100.0", "2 100.1", "3 100.2", "4 100.3", "5 100.4", "5 101.0", "6 101.1", "7 101.2", "8 101.3"]
    computed, per_batch, lost = owner.work_lost(trace, 8)
    assert computed == 9 and per_batch == pytest.approx(0.1) and lost == pytest.approx(0.1)
    assert owner.work_lost([], 8) == (0, 0.0, 0.0)


def test_owner_bench_refuses_bad_arguments() -> None:
    from meshd.bench import owner

    assert owner.parse_args(["--json"]).checkpoint_s == 2
    with pytest.raises(SystemExit):
        owner.parse_args(["--checkpoint-s", "0"])
