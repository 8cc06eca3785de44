"""``meshd bench spread``: does one node's batch of CPU-bound work spread over the mesh?

Starts 3 real daemons on 127.0.0.1 (manager + runner each), publishes a
``burn`` engine (protocol ``python``, warm workers) whose task burns
``--cpu-s`` seconds (0.5) of its thread's CPU time, warms the pools with
``2 × total slots`` tasks that burn nothing, waits ``PROOF_S`` (8 s) for
the slots they proved to count on every runner, then enqueues ``--tasks`` (24)
burn tasks on node-a in one request.  Each variant starts a fresh mesh; all
three run by default (``--variants`` picks some):

``base`` — 1 slot per node.  Top-level keys:

* ``makespan_s`` — from just before the enqueue request until node-a's
  ``/v1/queue`` counts every task's result;
* ``ideal_s`` — ``tasks × cpu_s ÷ min(os.cpu_count(), total slots)``: the
  machine's cores (or the mesh's slots, if fewer) fully busy and nothing else
  using CPU; ``ratio`` — ``makespan_s ÷ ideal_s`` (goal ≤ 1.15);
* ``ran_per_node`` — result records per node (runner peer id mapped to the
  node name), read from node-a's ``/v1/results/{cid}``; ``duplicates`` —
  result records beyond one per task; ``first_result_per_node`` — tasks per
  node counting only each task's earliest result (sums to ``tasks``).

``capacity`` — nodes with 1, 2 and 4 slots.  Key ``capacity``: the same
figures, plus per node its ``share`` of the tasks (from
``first_result_per_node``, so a duplicate run earns no share), its
``capacity_share`` (slots ÷ total slots) and ``within_10pct``:
``|share − capacity_share| ≤ 0.10`` (ten percentage points; a relative ±10%
of 3.4 tasks is below one task), and ``all_within``.

``stall`` — 1 slot per node; node-c and its engine workers get SIGSTOP as
soon as node-c's own API shows it has claimed a task of the batch (at most 2 s
after the enqueue), and SIGCONT ``--stall-s`` (5) seconds later.  Key
``stall``: ``makespan_s``, ``ideal_s`` (of the unstalled mesh, for scale),
``ran_per_node``, ``stopped_after_s`` (enqueue to SIGSTOP),
``claimed_at_stop`` (batch tasks node-c's own API showed it had claimed, read
just before the stop; 0 means the 2 s ran out), and, from node-a's
task records after the run (attempt start times are the claiming node's
clock, the same host clock as the stop time):

* ``held_at_stop`` — batch tasks node-c had claimed before the stop and not
  yet started running (its claim-ahead: the work it could not do while
  stopped); a task node-c was running at the stop (the burn engine's output
  says when it began) is not counted;
* ``moved`` — of those, the tasks whose first result came from another node;
  ``kept`` — the rest, which waited for node-c to wake up;
* ``move_s`` — for the moved tasks, the latest of (the first claim by another
  node − the stop), 0 when another node had it claimed before the stop: the
  time until all of node-c's unstarted work that moved had been taken.
  ``null`` when nothing moved.  Goal: ``kept`` = 0 and ``move_s`` within one
  announce round (5 s).

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from .localmesh import LocalNode, start_mesh, wait_peers
from .mesh import PROOF_S, STALL_S, wait_results

VARIANTS = ("base", "capacity", "stall")
BASE_SLOTS = (1, 1, 1)
CAPACITY_SLOTS = (1, 2, 4)
GOALS = {"ratio": 1.15, "capacity_share_tolerance": 0.10, "kept": 0, "move_s": 5.0}
#: How long a batch may take before the variant gives up and reports what it has.
BATCH_DEADLINE_S = 180.0
#: How long to wait for the stall victim's first claim before stopping it anyway.
CLAIM_WAIT_S = 2.0

BURN_SRC = '''\
"""Burn a given amount of this thread's CPU time; output says how much."""
import time


def burn(value):
    cpu_s = float(value.get("cpu_s", 0.5))
    began = time.time()
    start = time.thread_time()
    n = 0
    while time.thread_time() - start < cpu_s:
        for _ in range(2000):
            n += 1
    return {"i": value.get("i"), "cpu_s": round(time.thread_time() - start, 4), "began": began}
'''


def say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def publish_burn(node: LocalNode) -> str:
    body = {"manifest": {"name": "burn", "executable": "burn.py", "protocol": "python", "entry": "burn:burn"},
            "files": {"burn.py": base64.b64encode(BURN_SRC.encode()).decode()}}
    return node.post("/v1/engines", body)["cid"]


def _task(engine: str, i: Any, cpu_s: float, salt: str) -> dict:
    return {"input": {"value": {"i": i, "cpu_s": cpu_s}}, "nonce": salt,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}


def ideal_s(tasks: int, cpu_s: float, total_slots: int, cores: int | None = None) -> float:
    """``tasks × cpu_s ÷ min(cores, total_slots)``; ``cores`` defaults to ``os.cpu_count()``."""
    cores = cores or os.cpu_count() or 1
    return tasks * cpu_s / max(1, min(cores, total_slots))


def capacity_report(ran: Mapping[str, int], slots: Mapping[str, int], tolerance: float = 0.10) -> dict[str, Any]:
    """Each node's share of the runs against its share of the slots.

    Args:
        ran: Node name -> result records it produced.
        slots: Node name -> its runner slots.
        tolerance: Allowed ``|share − capacity_share|`` (absolute).
    """
    runs = sum(ran.values())
    total = sum(slots.values())
    share = {n: round(ran.get(n, 0) / runs, 3) if runs else 0.0 for n in slots}
    cap = {n: round(s / total, 3) if total else 0.0 for n, s in slots.items()}
    within = {n: abs(share[n] - cap[n]) <= tolerance + 1e-9 for n in slots}
    return {"share": share, "capacity_share": cap, "within_10pct": within, "all_within": all(within.values())}


def first_results(results: Mapping[str, list[dict]]) -> dict[str, dict]:
    """Task CID -> its earliest result record (by ``at``); tasks with none are left out."""
    return {c: min(recs, key=lambda r: (r.get("at") or 0, r.get("runner") or "")) for c, recs in results.items() if recs}


def count_runs(results: Mapping[str, list[dict]], names: Mapping[str, str]) -> tuple[dict[str, int], int]:
    """``(runs per node name, duplicates)`` from every task's result records.

    Args:
        results: Task CID -> its result records (``runner`` peer id).
        names: Peer id -> node name; every named node gets a count, 0 if none.
    """
    ran = {n: 0 for n in names.values()}
    dup = 0
    for recs in results.values():
        dup += max(0, len(recs) - 1)
        for r in recs:
            name = names.get(r.get("runner") or "", (r.get("runner") or "?")[:12])
            ran[name] = ran.get(name, 0) + 1
    return ran, dup


def _began_ms(rec: Mapping[str, Any]) -> float:
    """When the engine began the task: the burn output's ``began``, else ``at − duration_s``.

    The fallback is earlier than the real start, because the runner's
    ``duration_s`` also counts the wait for a free slot.
    """
    out = rec.get("output")
    if isinstance(out, dict) and isinstance(out.get("began"), (int, float)):
        return 1000 * out["began"]
    return (rec.get("at") or 0) - 1000 * (rec.get("duration_s") or 0)


def stall_report(results: Mapping[str, list[dict]], attempts: Mapping[str, list[dict]], victim: str,
                 stop_ms: int) -> dict[str, Any]:
    """What happened to the work the stopped node held (see the module doc).

    Args:
        results: Task CID -> result records (``runner``, ``at`` ms, ``duration_s``).
        attempts: Task CID -> attempts from the task status (``runner``, ``started`` ms).
        victim: The stopped node's peer id.
        stop_ms: When SIGSTOP was sent, ms since the epoch.
    """
    first = first_results(results)
    held = moved = 0
    move_ms: list[int] = []
    for c, atts in attempts.items():
        claimed = [a for a in atts if a.get("runner") == victim and a.get("started") is not None
                   and a["started"] <= stop_ms]
        if not claimed:
            continue
        own = [r for r in results.get(c, []) if r.get("runner") == victim]
        if any(_began_ms(r) < stop_ms for r in own):
            continue  # running at the stop: it could not move
        held += 1
        if c in first and first[c].get("runner") != victim:
            moved += 1
            others = [a["started"] for a in atts if a.get("runner") not in (None, victim) and a.get("started") is not None]
            if others:
                move_ms.append(max(0, min(others) - stop_ms))
    return {"held_at_stop": held, "moved": moved, "kept": held - moved,
            "move_s": round(max(move_ms) / 1000, 2) if move_ms else None}


def _run_batch(mesh: list[LocalNode], engine: str, tasks: int, cpu_s: float, salt: str, progress: bool, *,
               victim: LocalNode | None = None, stall_s: float = 0.0) -> dict[str, Any]:
    first = mesh[0]
    client = httpx.Client(base_url=first.url, timeout=60, headers=first.headers)
    base = client.get("/v1/queue").json()["results"]
    t0 = time.perf_counter()
    cids = [c["cid"] for c in first.post("/v1/tasks", {"tasks": [_task(engine, i, cpu_s, salt) for i in range(tasks)]})["tasks"]]
    out: dict[str, Any] = {}
    stop_ms = None
    resumed = victim is None
    try:
        if victim is not None:
            wanted = set(cids)
            vclient = httpx.Client(base_url=victim.url, timeout=5, headers=victim.headers)
            claimed = 0
            while time.perf_counter() - t0 < CLAIM_WAIT_S:
                page = vclient.get("/v1/tasks", params={"limit": 1000}).json()
                claimed = sum(1 for t in page.get("tasks", []) if t["cid"] in wanted
                              and any(a.get("runner") == victim.peer_id for a in t.get("attempts", [])))
                if claimed:
                    break
                time.sleep(0.02)
            victim.signal_tree(signal.SIGSTOP)
            out["claimed_at_stop"] = claimed
            stop_ms = int(time.time() * 1000)
            out["stopped_after_s"] = round(time.perf_counter() - t0, 2)
            say(f"  SIGSTOP {victim.name} at {out['stopped_after_s']}s", progress)
            stop_at = time.perf_counter()
        last = -1.0
        while True:
            now = time.perf_counter()
            if not resumed and now - stop_at >= stall_s:
                victim.signal_tree(signal.SIGCONT)
                resumed = True
                say(f"  SIGCONT {victim.name} at {now - t0:.2f}s", progress)
            done = client.get("/v1/queue").json()["results"] - base
            if done >= tasks:
                break
            if now - t0 > BATCH_DEADLINE_S:
                out["timed_out"] = True
                break
            if now - last > 1.0:
                last = now
                say(f"  {done}/{tasks} results after {now - t0:.1f}s", progress)
            time.sleep(0.05)
        makespan = time.perf_counter() - t0
    finally:
        if not resumed:
            victim.signal_tree(signal.SIGCONT)
    results = {c: client.get(f"/v1/results/{c}").json().get("results", []) for c in cids}
    names = {n.peer_id: n.name for n in mesh}
    ran, dup = count_runs(results, names)
    delivered = {n: 0 for n in names.values()}
    for rec in first_results(results).values():
        name = names.get(rec.get("runner") or "", (rec.get("runner") or "?")[:12])
        delivered[name] = delivered.get(name, 0) + 1
    out.update({"makespan_s": round(makespan, 2), "ran_per_node": ran, "first_result_per_node": delivered,
                "duplicates": dup})
    if victim is not None and stop_ms is not None:
        attempts = {c: client.get(f"/v1/tasks/{c}").json().get("attempts", []) for c in cids}
        out.update(stall_report(results, attempts, victim.peer_id, stop_ms))
    return out


def run_variant(slots: Sequence[int], *, tasks: int, cpu_s: float, stall_s: float = 0.0,
                progress: bool = True) -> dict[str, Any]:
    """Start a fresh 3-node mesh with these slots, run one batch on node-a, stop the mesh."""
    root = Path(tempfile.mkdtemp(prefix="meshd-spread-"))
    mesh: list[LocalNode] = []
    try:
        mesh = start_mesh(root, len(slots), ["manager", "runner"], node_slots=slots)
        if len(mesh) > 1 and not wait_peers(mesh):
            say("  (not every node sees every other yet; continuing)", progress)
        first = mesh[0]
        engine = publish_burn(first)
        salt = str(time.time())
        client = httpx.Client(base_url=first.url, timeout=60, headers=first.headers)
        n_warm = 2 * sum(slots)
        before = client.get("/v1/queue").json()["results"]
        first.post("/v1/tasks", {"tasks": [_task(engine, f"w{i}", 0.0, salt) for i in range(n_warm)]})
        if wait_results(client, before + n_warm, before, n_warm, time.perf_counter(), False) < n_warm:
            raise SystemExit(f"bench spread: the warm-up got no new result for {STALL_S:.0f}s; is the runner failing?")
        time.sleep(PROOF_S)  # the warm-up proves each node's slots; every runner weighs them alike after this
        victim = mesh[-1] if stall_s > 0 else None
        out = _run_batch(mesh, engine, tasks, cpu_s, salt, progress, victim=victim, stall_s=stall_s)
        ideal = ideal_s(tasks, cpu_s, sum(slots))
        out["slots"] = {n.name: s for n, s in zip(mesh, slots)}
        out["ideal_s"] = round(ideal, 2)
        out["ratio"] = round(out["makespan_s"] / ideal, 3)
        if victim is not None:
            out["stopped_node"] = victim.name
            out["stop_s"] = stall_s
        return out
    finally:
        for n in mesh:
            n.signal_tree(signal.SIGCONT)  # never leave a stopped process behind
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(tasks: int = 24, cpu_s: float = 0.5, variants: Iterable[str] = VARIANTS, stall_s: float = 5.0,
        progress: bool = True) -> dict[str, Any]:
    variants = list(variants)
    out: dict[str, Any] = {"tasks": tasks, "cpu_s": cpu_s, "cores": os.cpu_count()}
    if "base" in variants:
        say("== base: 1 slot per node", progress)
        out.update(run_variant(BASE_SLOTS, tasks=tasks, cpu_s=cpu_s, progress=progress))
    if "capacity" in variants:
        say("== capacity: 1, 2 and 4 slots", progress)
        cap = run_variant(CAPACITY_SLOTS, tasks=tasks, cpu_s=cpu_s, progress=progress)
        cap.update(capacity_report(cap["first_result_per_node"], cap["slots"]))
        out["capacity"] = cap
    if "stall" in variants:
        say(f"== stall: node-c stopped for {stall_s}s", progress)
        out["stall"] = run_variant(BASE_SLOTS, tasks=tasks, cpu_s=cpu_s, stall_s=stall_s, progress=progress)
    out["goals"] = dict(GOALS)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd bench spread",
                                description="Makespan and spread of a CPU-bound batch enqueued on one of 3 nodes.")
    p.add_argument("--tasks", type=int, default=24)
    p.add_argument("--cpu-s", type=float, default=0.5, help="CPU seconds each task burns")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    p.add_argument("--stall-s", type=float, default=5.0, help="how long the stall variant stops node-c")
    p.add_argument("--json", action="store_true")
    return p


def parse_args(argv: list[str] | argparse.Namespace | None = None) -> argparse.Namespace:
    if isinstance(argv, argparse.Namespace):
        argv = list(getattr(argv, "rest", []) or [])
    p = build_parser()
    ns = p.parse_args(argv)
    ns.variants = [v.strip() for v in ns.variants.split(",") if v.strip()]
    bad = sorted(set(ns.variants) - set(VARIANTS))
    if bad or not ns.variants:
        p.error(f"--variants: choose from {','.join(VARIANTS)} (got {bad or 'nothing'})")
    if ns.tasks < 1 or ns.cpu_s < 0 or ns.stall_s <= 0:
        p.error("--tasks must be ≥ 1, --cpu-s ≥ 0 and --stall-s > 0")
    return ns


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    ns = parse_args(argv)
    result = run(ns.tasks, ns.cpu_s, ns.variants, ns.stall_s)
    if not ns.json:
        for k, v in result.items():
            print(f"{k:>16}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
