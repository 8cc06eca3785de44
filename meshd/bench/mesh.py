"""``meshd bench mesh``: end-to-end task throughput and latency of a local mesh.

Starts ``--nodes`` real daemons on 127.0.0.1 (separate processes), publishes a
no-op engine that runs in warm in-process workers (protocol ``python``),
warms every pool with ``20 × nodes`` tasks, then measures:

* ``tasks_per_s`` / ``elapsed_s`` — ``--tasks`` tasks enqueued on the first
  node in bulk (POSTs of 2,000), from the first enqueue until every result is
  visible on that node (the bulk phase);
* ``cpu_ms_per_task`` — user+system CPU time of every daemon process and
  everything below it (engine workers), over the bulk phase only, divided by
  ``tasks``; ``client_cpu_ms_per_task`` is the same for this benchmark process
  (the HTTP client that enqueues and polls), which is not counted above;
* ``ran_per_node`` — for each node, how many of the measured (bulk) tasks it
  completed, from the completions in the submitter's task records (``GET
  /v1/tasks``), runner peer ids mapped to node names.  A task run twice
  counts on each node that completed it; ``ran_unattributed`` counts measured
  tasks for which the submitter shows no completion by any runner;
* ``min_node_share`` — the smallest share of the measured tasks run by one
  runner node (the submitter is left out with ``--remote``);
* ``latency_p50_ms`` / ``latency_p99_ms`` — one task at a time on the quiet
  mesh, from enqueue to the result visible on the submitter (long poll);
  ``latency_timeouts`` counts samples with no result after 60 s, which enter
  the percentiles as 60 s (the phase stops after 5 such samples);
  before any of these, the warm-up's completions are given ``PROOF_S`` to
  count towards the runners' weights everywhere (``lattice.planner``);
* ``duplicate_runs`` — result records beyond one per task, as a fraction of
  the tasks (all of them, warm-up and latency samples included), from
  ``/v1/queue``'s counts; ``sampled_duplicate_runs`` reads 200 measured
  tasks' results one by one and counts distinct (runner, ``at``) runs beyond
  one per task; ``sampled_repeated_records`` counts records listed more
  than once for the same run (which inflate ``duplicate_runs``);
  ``measured_duplicate_runs`` is, over all measured tasks, the completions
  by a second runner (``sum(ran_per_node)`` beyond one per attributed task)
  as a fraction of ``tasks``;
* ``nodes``, ``tasks``, ``slots``, ``remote``.

With ``--remote`` the first node (the submitter) has the manager role only,
so every task runs on another node.

If the warm-up or the bulk phase sees no new result for 60 s, it exits with
an error and leaves the node homes and logs in place.

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from lattice.planner import EPOCH_MARGIN_MS, EPOCH_MS

from .cputime import self_cpu_s, tree_cpu_s
from .localmesh import LocalNode, start_mesh, wait_peers

ECHO = Path(__file__).resolve().parents[2] / "engines" / "examples" / "echo.py"
GOALS = {"tasks_per_s": 8000, "latency_p50_ms": 10, "latency_p99_ms": 50, "duplicate_runs": 0.02,
         "min_node_share": 0.2}
BATCH = 2000
#: How many measured tasks ``sample_runs`` reads one by one.
DUP_SAMPLE = 200
#: A latency sample with no result after this long is counted in
#: ``latency_timeouts`` and enters the percentiles at this value (a lower bound).
LATENCY_DEADLINE_S = 60.0
#: The latency phase stops after this many timeouts (a broken mesh must not
#: hang the benchmark for hours).
MAX_LATENCY_TIMEOUTS = 5
#: The warm-up or bulk phase is abandoned after this long without a new
#: result: the benchmark exits with an error and keeps the node logs.
STALL_S = 60.0


def publish_noop(url: str, headers: dict[str, str]) -> str:
    body = {"manifest": {"name": "noop", "executable": "echo.py", "protocol": "python", "entry": "echo:echo"},
            "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}
    r = httpx.post(url + "/v1/engines", json=body, timeout=60, headers=headers)
    r.raise_for_status()
    return r.json()["cid"]


def _task(engine: str, i: Any, salt: str) -> dict:
    return {"input": {"value": i}, "nonce": salt,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}


def node_roles(nodes: int, remote: bool) -> list[list[str]]:
    """Roles per node: all manager+runner, or with ``remote`` a manager-only submitter."""
    both = ["manager", "runner"]
    return [["manager"] if remote and i == 0 else list(both) for i in range(nodes)]


def percentile(sorted_ms: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an ascending list, nearest rank below."""
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))]


def completed_by(client: httpx.Client, cids: set[str], timeout_s: float = 10.0) -> dict[str, set[str]]:
    """The runner peer ids that completed each of ``cids``, as the submitter records them.

    Pages through ``GET /v1/tasks`` (1,000 a page) and reads each task's
    attempts with ``ok``.  Pages again until every task shows a completion
    or ``timeout_s`` passes (completions may trail the results by a moment).
    """
    deadline = time.monotonic() + timeout_s
    found: dict[str, set[str]] = {}
    while True:
        after = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if after:
                params["after"] = after
            page = client.get("/v1/tasks", params=params).json()
            for t in page.get("tasks", []):
                if t["cid"] in cids:
                    found[t["cid"]] = {a["runner"] for a in t.get("attempts", []) if a.get("ok") and a.get("runner")}
            after = page.get("next")
            if not after:
                break
        if all(found.get(c) for c in cids) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def ran_per_node(runners: Mapping[str, Iterable[str]], names: Mapping[str, str],
                 cids: Iterable[str]) -> tuple[dict[str, int], int]:
    """Count, per node name, the tasks of ``cids`` it completed.

    Args:
        runners: Task CID -> runner peer ids that completed it.
        names: Peer id -> node name; every named node gets a count, 0 if none.
        cids: The measured tasks.

    Returns:
        ``(counts, unattributed)``: a task run twice counts on each runner; a
        runner not in ``names`` counts under its peer id's first 12 chars;
        ``unattributed`` is the number of tasks with no known runner.
    """
    counts = {name: 0 for name in names.values()}
    unattributed = 0
    for c in cids:
        who = runners.get(c) or ()
        if not who:
            unattributed += 1
        for peer in who:
            name = names.get(peer, peer[:12])
            counts[name] = counts.get(name, 0) + 1
    return counts, unattributed


def sample_runs(client: httpx.Client, cids: list[str], n: int = DUP_SAMPLE) -> dict[str, Any]:
    """Read ``/v1/results/{cid}`` for up to ``n`` evenly spaced measured tasks.

    A run is a distinct (runner, ``at``) pair; a record repeated with the
    same pair is the same run listed twice, which ``duplicate_runs`` (from
    ``/v1/queue``'s record count) cannot tell apart.
    """
    pick = cids[:: max(1, len(cids) // n)][:n] if cids else []
    runs = records = 0
    for c in pick:
        recs = client.get(f"/v1/results/{c}").json().get("results", [])
        records += len(recs)
        runs += len({(r.get("runner"), r.get("at")) for r in recs})
    k = len(pick)
    return {"sampled_tasks": k,
            "sampled_duplicate_runs": round(max(0, runs - k) / k, 4) if k else None,
            "sampled_repeated_records": records - runs}


def summarize(*, nodes: int, tasks: int, slots: int, remote: bool, elapsed_s: float, cpu_s: float,
              client_cpu_s: float, latencies_ms: list[float], results: int, records: int,
              ran: dict[str, int], unattributed: int, runner_names: Iterable[str],
              latency_timeouts: int = 0) -> dict[str, Any]:
    """Assemble the printed record from the measurements (no I/O)."""
    lat = sorted(latencies_ms)
    shares = [ran.get(n, 0) / tasks for n in runner_names] if tasks else []
    return {
        "nodes": nodes,
        "tasks": tasks,
        "slots": slots,
        "remote": remote,
        "tasks_per_s": round(tasks / elapsed_s, 1) if elapsed_s > 0 else None,
        "elapsed_s": round(elapsed_s, 2),
        "cpu_ms_per_task": round(cpu_s * 1000 / tasks, 3) if tasks else None,
        "client_cpu_ms_per_task": round(client_cpu_s * 1000 / tasks, 3) if tasks else None,
        "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
        "latency_p99_ms": round(percentile(lat, 0.99), 2) if lat else None,
        "latency_timeouts": latency_timeouts,
        "duplicate_runs": round(max(0, records - results) / max(1, results), 4),
        "measured_duplicate_runs": round(max(0, sum(ran.values()) - (tasks - unattributed)) / tasks, 4) if tasks else None,
        "ran_per_node": ran,
        "ran_unattributed": unattributed,
        "min_node_share": round(min(shares), 3) if shares else None,
        "goals": dict(GOALS),
    }


#: After the warm-up, runners' weights settle: a completion counts towards
#: its runner's weight only once it is this old (``lattice.planner``).
PROOF_S = (EPOCH_MARGIN_MS + EPOCH_MS) / 1000


def wait_results(client: httpx.Client, target: int, base: int, tasks: int, t0: float, progress: bool) -> int:
    """Poll ``/v1/queue`` until ``target`` results; give up after ``STALL_S`` without a new one.

    Returns:
        The results counted since ``base`` (``tasks`` unless it gave up).
    """
    last = -1.0
    seen, moved = -1, time.perf_counter()
    while True:
        done = client.get("/v1/queue").json()["results"]
        now = time.perf_counter()
        if done >= target:
            return done - base
        if done != seen:
            seen, moved = done, now
        elif now - moved > STALL_S:
            print(f"  no new result for {STALL_S:.0f}s; giving up at {done - base}/{tasks}", file=sys.stderr)
            return done - base
        if progress and now - last > 1.0:
            last = now
            print(f"  {done - base}/{tasks} results after {now - t0:.1f}s", file=sys.stderr)
        time.sleep(0.1)  # each poll costs the submitter a queue count: 10 Hz, not 50


def run(nodes: int = 3, tasks: int = 20_000, latency_samples: int = 200, slots: int = 2,
        root: Path | None = None, progress: bool = True, remote: bool = False) -> dict[str, Any]:
    if remote and nodes < 2:
        raise ValueError("--remote needs at least 2 nodes")
    own = root is None
    root = root or Path(tempfile.mkdtemp(prefix="meshd-bench-"))
    mesh: list[LocalNode] = []
    ok = False
    try:
        mesh = start_mesh(root, nodes, ["manager", "runner"], slots=slots, node_roles=node_roles(nodes, remote))
        first = mesh[0]
        if nodes > 1:
            wait_peers(mesh)
        engine = publish_noop(first.url, first.headers)
        client = httpx.Client(base_url=first.url, timeout=120, headers=first.headers)
        salt = str(time.time())
        # Warm up: start the warm pools everywhere.
        before = client.get("/v1/queue").json()["results"]
        warm = client.post("/v1/tasks", json={"tasks": [_task(engine, f"w{i}", salt) for i in range(20 * nodes)]})
        warm.raise_for_status()
        if wait_results(client, before + 20 * nodes, before, 20 * nodes, time.perf_counter(), False) < 20 * nodes:
            raise SystemExit("bench mesh: the warm-up tasks got no new result for 60 s; is the runner failing? "
                             f"(node logs: {root})")
        time.sleep(PROOF_S)  # the weights the warm-up proved take effect on every runner
        base = client.get("/v1/queue").json()
        pids = [n.pid for n in mesh]
        cpu0, client0 = tree_cpu_s(pids), self_cpu_s()
        t0 = time.perf_counter()
        cids: list[str] = []
        for i in range(0, tasks, BATCH):
            r = client.post("/v1/tasks", json={"tasks": [_task(engine, j, salt) for j in range(i, min(tasks, i + BATCH))]})
            r.raise_for_status()
            cids.extend(c["cid"] for c in r.json()["tasks"])
        got = wait_results(client, base["results"] + tasks, base["results"], tasks, t0, progress)
        elapsed = time.perf_counter() - t0
        if got < tasks:
            raise SystemExit(f"bench mesh: only {got}/{tasks} results, none new for {STALL_S:.0f}s (node logs: {root})")
        cpu_s, client_cpu_s = tree_cpu_s(pids) - cpu0, self_cpu_s() - client0
        names = {n.peer_id: n.name for n in mesh}
        ran, unattributed = ran_per_node(completed_by(client, set(cids)), names, cids)
        sampled = sample_runs(client, cids)
        lat: list[float] = []
        timeouts = 0
        for i in range(latency_samples):
            s = time.perf_counter()
            cid = client.post("/v1/tasks", json=_task(engine, f"lat{i}", salt)).json()["cid"]
            while not client.get(f"/v1/results/{cid}", params={"wait": 30}).json()["results"]:
                if time.perf_counter() - s >= LATENCY_DEADLINE_S:
                    timeouts += 1
                    break
            lat.append((time.perf_counter() - s) * 1000)
            if timeouts >= MAX_LATENCY_TIMEOUTS:
                print(f"  {timeouts} latency samples timed out; stopping after {len(lat)}", file=sys.stderr)
                break
        q = client.get("/v1/queue").json()
        runner_names = [n.name for n, r in zip(mesh, node_roles(nodes, remote)) if "runner" in r]
        ok = True
        out = summarize(nodes=nodes, tasks=tasks, slots=slots, remote=remote, elapsed_s=elapsed, cpu_s=cpu_s,
                        client_cpu_s=client_cpu_s, latencies_ms=lat, results=q["results"],
                        records=q.get("result_records", q["results"]), ran=ran, unattributed=unattributed,
                        runner_names=runner_names, latency_timeouts=timeouts)
        out.update(sampled)
        return out
    finally:
        for n in mesh:
            n.stop()
        if own and ok:
            shutil.rmtree(root, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd bench mesh", description="Throughput, latency, spread and CPU cost of a local mesh.")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--remote", action="store_true", help="the submitting node has the manager role only")
    p.add_argument("--json", action="store_true")
    return p


def parse_args(argv: list[str] | argparse.Namespace | None = None) -> argparse.Namespace:
    if isinstance(argv, argparse.Namespace):
        argv = list(getattr(argv, "rest", []) or [])
    ns = build_parser().parse_args(argv)
    if ns.remote and ns.nodes < 2:
        build_parser().error("--remote needs --nodes 2 or more")
    return ns


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    ns = parse_args(argv)
    result = run(ns.nodes, ns.tasks, ns.latency_samples, ns.slots, remote=ns.remote)
    if not ns.json:
        for k, v in result.items():
            print(f"{k:>22}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
