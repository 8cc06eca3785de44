#!/usr/bin/env python3
"""Run the same no-op workload through Dask, Ray and meshd, in one run.

    .venv/bin/pip install -e '.[compare]'     # once: dask[distributed], ray (large download)
    .venv/bin/python scripts/compare_peers.py [--tasks 20000] [--workers 3]

Each system gets ``--workers`` workers on this machine and ``--tasks`` tasks
whose function returns its input.  Throughput is from the first submission
to the last result; latency is one task at a time on the idle system.
Prints one JSON object as its last line: ``meshd_tasks_per_s``,
``dask_tasks_per_s``, ``ray_tasks_per_s``, ``ratio_dask`` and ``ratio_ray``
(meshd / peer), plus each system's p50/p99 latency and
``<system>_cpu_ms_per_task``: user+system CPU time of the system's whole
process tree over the measured (bulk) phase, divided by ``--tasks``.

* Dask and Ray: this process and every process below it.  Their scheduler,
  driver or core worker runs inside this process, so it is counted; the
  tree also holds Dask's worker processes and Ray's GCS, raylet and workers.
* meshd: every daemon and its engine workers (``meshd bench mesh``'s
  ``cpu_ms_per_task``).  The HTTP client that enqueues and polls is this
  process but not meshd; its share is ``meshd_client_cpu_ms_per_task``.

A system whose package is missing is reported with a reason instead of
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from meshd.bench.cputime import tree_cpu_s


def noop(x: Any) -> Any:
    return x


def _lat(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2)}


def run_dask(tasks: int, workers: int, samples: int) -> dict[str, Any]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        return {"error": f"dask.distributed is not installed ({exc})"}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.gather(client.map(noop, range(100), pure=False))  # warm up
        cpu0 = tree_cpu_s([os.getpid()])
        t0 = time.perf_counter()
        client.gather(client.map(noop, range(tasks), pure=False))
        tps = tasks / (time.perf_counter() - t0)
        cpu = tree_cpu_s([os.getpid()]) - cpu0
        lat = []
        for i in range(samples):
            s = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            lat.append((time.perf_counter() - s) * 1000)
    return {"tasks_per_s": round(tps, 1), **_lat(lat), "cpu_ms_per_task": round(cpu * 1000 / tasks, 3)}


def run_ray(tasks: int, workers: int, samples: int) -> dict[str, Any]:
    try:
        import ray
    except ImportError as exc:
        return {"error": f"ray is not installed ({exc})"}
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    try:
        remote = ray.remote(noop)
        ray.get([remote.remote(i) for i in range(100)])
        cpu0 = tree_cpu_s([os.getpid()])
        t0 = time.perf_counter()
        ray.get([remote.remote(i) for i in range(tasks)])
        tps = tasks / (time.perf_counter() - t0)
        cpu = tree_cpu_s([os.getpid()]) - cpu0
        lat = []
        for i in range(samples):
            s = time.perf_counter()
            ray.get(remote.remote(i))
            lat.append((time.perf_counter() - s) * 1000)
    finally:
        ray.shutdown()
    return {"tasks_per_s": round(tps, 1), **_lat(lat), "cpu_ms_per_task": round(cpu * 1000 / tasks, 3)}


def run_meshd(tasks: int, workers: int, samples: int) -> dict[str, Any]:
    from meshd.bench.mesh import run

    try:
        r = run(nodes=workers, tasks=tasks, latency_samples=samples, slots=1, progress=False)
    except SystemExit as exc:  # the benchmark gave up (no progress); Dask and Ray still run
        return {"error": str(exc)}
    return {"tasks_per_s": r["tasks_per_s"], "p50_ms": r["latency_p50_ms"], "p99_ms": r["latency_p99_ms"],
            "duplicate_runs": r["duplicate_runs"], "cpu_ms_per_task": r["cpu_ms_per_task"],
            "client_cpu_ms_per_task": r["client_cpu_ms_per_task"], "ran_per_node": r["ran_per_node"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--latency-samples", type=int, default=200)
    args = ap.parse_args()
    out: dict[str, Any] = {"tasks": args.tasks, "workers": args.workers}
    for name, fn in (("meshd", run_meshd), ("dask", run_dask), ("ray", run_ray)):
        print(f"== {name}", file=sys.stderr)
        res = fn(args.tasks, args.workers, args.latency_samples)
        print(f"   {res}", file=sys.stderr)
        for k, v in res.items():
            out[f"{name}_{k}"] = v
    m = out.get("meshd_tasks_per_s")
    for peer in ("dask", "ray"):
        p = out.get(f"{peer}_tasks_per_s")
        out[f"ratio_{peer}"] = round(m / p, 3) if m and p else None
    mc, rc = out.get("meshd_cpu_ms_per_task"), out.get("ray_cpu_ms_per_task")
    out["cpu_ratio_ray"] = round(mc / rc, 3) if mc and rc else None
    out["goals"] = {"ratio_ray": 2.0, "ratio_dask": 4.0, "cpu_ratio_ray": 0.5}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
