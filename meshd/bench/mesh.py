"""``meshd bench mesh``: end-to-end task throughput and latency of a local mesh.

Starts ``--nodes`` real daemons on 127.0.0.1 (separate processes), publishes a
no-op engine that runs in warm in-process workers (protocol ``python``),
then measures:

* ``tasks_per_s`` — ``--tasks`` tasks enqueued on the first node in bulk, from
  the first enqueue until every result is visible on that node;
* ``latency_p50_ms`` / ``latency_p99_ms`` — one task at a time on the quiet
  mesh, from enqueue to the result visible on the submitter (long poll);
* ``duplicate_runs`` — the fraction of tasks that got more than one result;
* ``nodes``.

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
from pathlib import Path
from typing import Any

import httpx

from .localmesh import start_mesh, wait_peers

ECHO = Path(__file__).resolve().parents[2] / "engines" / "examples" / "echo.py"


def publish_noop(url: str, headers: dict[str, str]) -> str:
    body = {"manifest": {"name": "noop", "executable": "echo.py", "protocol": "python", "entry": "echo:echo"},
            "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}
    r = httpx.post(url + "/v1/engines", json=body, timeout=60, headers=headers)
    r.raise_for_status()
    return r.json()["cid"]


def _task(engine: str, i: Any, salt: str) -> dict:
    return {"input": {"value": i}, "nonce": salt,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}


def run(nodes: int = 3, tasks: int = 20_000, latency_samples: int = 200, slots: int = 2,
        root: Path | None = None, progress: bool = True) -> dict[str, Any]:
    own = root is None
    root = root or Path(tempfile.mkdtemp(prefix="meshd-bench-"))
    mesh = []
    try:
        mesh = start_mesh(root, nodes, ["manager", "runner"], slots=slots)
        first = mesh[0]
        if nodes > 1:
            wait_peers(mesh)
        engine = publish_noop(first.url, first.headers)
        client = httpx.Client(base_url=first.url, timeout=120, headers=first.headers)
        salt = str(time.time())
        # Warm up: start the warm pools everywhere.
        warm = [c["cid"] for c in client.post("/v1/tasks", json={"tasks": [_task(engine, f"w{i}", salt) for i in range(20 * nodes)]}).json()["tasks"]]
        for c in warm:
            client.get(f"/v1/results/{c}", params={"wait": 30})
        base = client.get("/v1/queue").json()
        t0 = time.perf_counter()
        batch = 2000
        for i in range(0, tasks, batch):
            r = client.post("/v1/tasks", json={"tasks": [_task(engine, j, salt) for j in range(i, min(tasks, i + batch))]})
            r.raise_for_status()
        target = base["results"] + tasks
        last = -1.0
        while True:
            q = client.get("/v1/queue").json()
            if q["results"] >= target:
                break
            if progress and time.perf_counter() - last > 1.0:
                last = time.perf_counter()
                print(f"  {q['results'] - base['results']}/{tasks} results after {last - t0:.1f}s", file=sys.stderr)
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        q = client.get("/v1/queue").json()
        lat = []
        for i in range(latency_samples):
            s = time.perf_counter()
            cid = client.post("/v1/tasks", json=_task(engine, f"lat{i}", salt)).json()["cid"]
            res = client.get(f"/v1/results/{cid}", params={"wait": 30}).json()
            assert res["results"], res
            lat.append((time.perf_counter() - s) * 1000)
        lat.sort()
        node_info = [n.get("/v1/node") for n in mesh]
        ran = {}
        for n, info in zip(mesh, node_info):
            ran[n.name] = info.get("counters", {}).get("tasks_completed", 0)
        records = q.get("result_records", q["results"])
        return {
            "nodes": nodes,
            "tasks": tasks,
            "tasks_per_s": round(tasks / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "latency_p50_ms": round(statistics.median(lat), 2),
            "latency_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
            "duplicate_runs": round(max(0, records - q["results"]) / max(1, q["results"]), 4),
            "ran_per_node": ran,
            "goals": {"tasks_per_s": 8000, "latency_p50_ms": 10, "latency_p99_ms": 50, "duplicate_runs": 0.02},
        }
    finally:
        for n in mesh:
            n.stop()
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    p = argparse.ArgumentParser(prog="meshd bench mesh")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--json", action="store_true")
    if isinstance(argv, argparse.Namespace):
        argv = list(getattr(argv, "rest", []) or [])
    ns = p.parse_args(argv)
    result = run(ns.nodes, ns.tasks, ns.latency_samples, ns.slots)
    if not ns.json:
        for k, v in result.items():
            print(f"{k:>16}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
