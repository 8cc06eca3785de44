"""``meshd bench membership``: how fast the mesh notices a dead peer and takes a restarted one back.

Starts ``--nodes`` (4) real daemons on 127.0.0.1 (manager + runner, 1 slot
each, bootstrapping to node-a), waits until every node sees every other, and
measures, ``--rounds`` (3) times, on the last node (never the bootstrap node):

* ``detect_ms`` — the node and its engines get SIGKILL (no farewell: a
  crash); the time until *every* other node's ``GET /v1/peers`` leaves it out
  of ``live_runners``.  Goal ≤ 3,000.
* ``rejoin_ms`` — the node is started again on the same home; from the
  moment its API answers (``start_ms`` is the process start up to then, not
  counted: it is Python and the stores opening) a task is enqueued on it,
  and the time until every other node knows that task (``GET /v1/tasks/{cid}``
  answers 200) and counts the node live again.  Goal ≤ 1,000.  Where the
  time went: ``rejoin_live_ms`` (every other node counts it live) and
  ``rejoin_task_ms`` (every other node knows the task), each when it first
  held on the last of them.

Then ``false_suspicions`` under load: ``--load-s`` (20) seconds of CPU-bound
work like ``meshd bench spread``'s (0.5 s burn tasks, enough for every core,
enqueued on node-a and spread over the mesh), while every node's
``live_runners`` is read every 50 ms; each time a node drops a peer that
was live (none is stopped in this phase) counts.  Goal 0.
``revived_during_load`` is the daemons' own count of peers they counted
dead and heard again in that phase (``mesh_stats.revived``), which sees
flaps shorter than the reads too.

Each figure is reported per round (``*_ms_rounds``) and as the worst round
(``detect_ms``, ``rejoin_ms``).  Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from .localmesh import LocalNode, start_mesh, wait_peers
from .spread import _task, publish_burn

GOALS = {"detect_ms": 3000, "rejoin_ms": 1000, "false_suspicions": 0}
#: Longest wait for any one condition before the bench gives up on it.
WAIT_S = 60.0
POLL_S = 0.025  # with keep-alive requests (~1 ms each), a faster poll loads the daemons it watches


def say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _live(node: LocalNode) -> set[str]:
    try:
        return set(node.http.get(node.url + "/v1/peers", timeout=5).json()["live_runners"])
    except (httpx.HTTPError, ValueError, KeyError):
        return set()


def _knows(node: LocalNode, cid: str) -> bool:
    try:
        return node.http.get(f"{node.url}/v1/tasks/{cid}", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _until(cond: Callable[[], bool], what: str) -> float:
    """Poll ``cond`` until true; return the ``perf_counter`` time it first was."""
    deadline = time.perf_counter() + WAIT_S
    while time.perf_counter() < deadline:
        if cond():
            return time.perf_counter()
        time.sleep(POLL_S)
    raise SystemExit(f"bench membership: gave up after {WAIT_S:.0f}s waiting for {what}")


def _each(observers: Sequence[LocalNode], cond: Callable[[LocalNode], bool], what: str) -> float:
    """When the last of ``observers`` first satisfied ``cond`` (each is polled until it does)."""
    pending = list(observers)
    deadline = time.perf_counter() + WAIT_S
    while pending:
        if time.perf_counter() > deadline:
            raise SystemExit(f"bench membership: gave up after {WAIT_S:.0f}s waiting for {what} "
                             f"on {', '.join(n.name for n in pending)}")
        pending = [n for n in pending if not cond(n)]
        if pending:
            time.sleep(POLL_S)
    return time.perf_counter()


def _ready(node: LocalNode) -> float:
    def up() -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            raise SystemExit(f"bench membership: {node.name} exited with {node.proc.returncode}")
        try:
            return node.http.get(node.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return _until(up, f"{node.name} to answer")


def one_round(mesh: Sequence[LocalNode], engine: str, salt: str, i: int) -> dict[str, int]:
    """Kill the last node, time its detection; restart it, time its rejoin."""
    victim, observers = mesh[-1], list(mesh[:-1])
    t0 = time.perf_counter()
    victim.signal_tree(signal.SIGKILL)
    if victim.proc is not None:
        victim.proc.wait(10)
    detected = _each(observers, lambda n: victim.peer_id not in _live(n), f"{victim.name} to count as dead")
    launched = time.perf_counter()
    victim.start()
    ready = _ready(victim)
    cid = victim.post("/v1/tasks", _task(engine, f"rejoin-{i}", 0.0, salt))["cid"]
    # Each condition timed on its own, per observer (each polled until it holds).
    first: dict[tuple[str, str], float] = {}
    deadline = time.perf_counter() + WAIT_S
    while len(first) < 2 * len(observers):
        if time.perf_counter() > deadline:
            raise SystemExit(f"bench membership: gave up after {WAIT_S:.0f}s waiting for {victim.name}'s "
                             f"task and presence after its restart ({sorted(first)} held)")
        for n in observers:
            if (n.name, "live") not in first and victim.peer_id in _live(n):
                first[(n.name, "live")] = time.perf_counter()
            if (n.name, "task") not in first and _knows(n, cid):
                first[(n.name, "task")] = time.perf_counter()
        time.sleep(POLL_S)
    live = max(t for (_n, what), t in first.items() if what == "live")
    task = max(t for (_n, what), t in first.items() if what == "task")
    return {"detect_ms": round(1000 * (detected - t0)), "start_ms": round(1000 * (ready - launched)),
            "rejoin_ms": round(1000 * (max(live, task) - ready)), "rejoin_live_ms": round(1000 * (live - ready)),
            "rejoin_task_ms": round(1000 * (task - ready))}


def watch_suspicions(mesh: Sequence[LocalNode], seconds: float) -> dict[str, Any]:
    """Read every node's live set every 50 ms for ``seconds``; count live peers dropped."""
    everyone = {n.peer_id for n in mesh}
    names = {n.peer_id: n.name for n in mesh}
    was = {n.name: everyone for n in mesh}
    drops: list[dict[str, Any]] = []
    reads = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for n in mesh:
            live = _live(n)
            reads += 1
            if not live:  # the API did not answer in time: no verdict, not a suspicion
                continue
            for gone in sorted(was[n.name] - live):
                drops.append({"observer": n.name, "peer": names.get(gone, gone[:12]),
                              "at_s": round(time.perf_counter() - t0, 2)})
            was[n.name] = live & everyone
        time.sleep(0.05)
    return {"false_suspicions": len(drops), "suspicions": drops[:20], "reads": reads}


def _revived(mesh: Sequence[LocalNode]) -> int:
    """Peers the nodes counted dead and heard from again, summed (``/v1/node`` ``mesh_stats.revived``)."""
    return sum((n.get("/v1/node").get("mesh_stats") or {}).get("revived", 0) for n in mesh)


def summarize(rounds: Sequence[dict[str, int]], load: dict[str, Any], *, nodes: int, load_s: float) -> dict[str, Any]:
    """The report: the worst round of each figure, every round, the load phase, the goals."""
    out: dict[str, Any] = {"nodes": nodes, "rounds": len(rounds)}
    for key in ("detect_ms", "rejoin_ms", "start_ms", "rejoin_live_ms", "rejoin_task_ms"):
        if rounds and key not in rounds[0]:
            continue
        values = [r[key] for r in rounds]
        out[key] = max(values) if values else None
        out[f"{key}_rounds"] = values
    out.update({"load_s": load_s, **load, "goals": dict(GOALS)})
    out["met"] = {k: out[k] is not None and out[k] <= v for k, v in GOALS.items()}
    return out


def run(nodes: int = 4, rounds: int = 3, load_s: float = 20.0, progress: bool = True,
        keep: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="meshd-membership-"))
    say(f"homes and logs under {root}", progress)
    mesh: list[LocalNode] = []
    try:
        mesh = start_mesh(root, nodes, ["manager", "runner"], slots=1)
        if not wait_peers(mesh, timeout=WAIT_S):
            raise SystemExit("bench membership: the nodes did not all see each other")
        engine = publish_burn(mesh[0])
        salt = str(time.time())
        everyone = {n.peer_id for n in mesh}
        _each(mesh, lambda n: _live(n) == everyone, "every node to count every other live")
        _each(mesh, lambda n: engine in json.dumps(n.get("/v1/engines")), "every node to know the engine")
        results = []
        for i in range(rounds):
            r = one_round(mesh, engine, salt, i)
            say(f"  round {i + 1}: {r}", progress)
            results.append(r)
            _each(mesh, lambda n: _live(n) == everyone, "every node to count every other live again")
        cores = os.cpu_count() or 1
        tasks = max(1, int(load_s * cores / 0.5))
        say(f"== load: {tasks} burn tasks of 0.5 s on {nodes} nodes for {load_s:.0f}s", progress)
        revived = _revived(mesh)
        mesh[0].post("/v1/tasks", {"tasks": [_task(engine, f"load-{j}", 0.5, salt) for j in range(tasks)]})
        load = watch_suspicions(mesh, load_s)
        # Counted by the daemons themselves: flaps too short for the reads above too.
        load["revived_during_load"] = _revived(mesh) - revived
        return summarize(results, load, nodes=nodes, load_s=load_s)
    finally:
        for n in mesh:
            n.signal_tree(signal.SIGCONT)
            n.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd bench membership",
                                description="Failure detection, rejoin after a restart, false suspicions under load.")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="kill/restart rounds")
    p.add_argument("--load-s", type=float, default=20.0, help="seconds of CPU load watched for false suspicions")
    p.add_argument("--keep", action="store_true", help="keep the homes and logs")
    p.add_argument("--json", action="store_true")
    return p


def parse_args(argv: list[str] | argparse.Namespace | None = None) -> argparse.Namespace:
    if isinstance(argv, argparse.Namespace):
        argv = list(getattr(argv, "rest", []) or [])
    p = build_parser()
    ns = p.parse_args(argv)
    if ns.nodes < 2 or ns.rounds < 1 or ns.load_s < 0:
        p.error("--nodes must be ≥ 2, --rounds ≥ 1 and --load-s ≥ 0")
    return ns


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    ns = parse_args(argv)
    result = run(ns.nodes, ns.rounds, ns.load_s, progress=True, keep=ns.keep)
    if not ns.json:
        for k, v in result.items():
            print(f"{k:>18}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
