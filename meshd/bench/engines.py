"""``meshd bench engines``: per-task overhead of a no-op task on each runner.

Prints one JSON object as its last line (medians, in milliseconds):

* ``native_cold_ms`` — :class:`engines.host.EngineHost` running the no-op
  ``engines/examples/echo.py`` in a fresh sandboxed process per task.
* ``native_warm_ms`` — the same engine through the host's warm pool
  (``--jsonl`` worker kept alive), after the pool is up.
* ``docker_cold_ms`` — :class:`engines.docker.DockerRunner` ``run_cold`` of the
  no-op image (create, attach, start, wait, logs, remove; sandboxed).
* ``docker_warm_ms`` — ``run_warm`` on one long-lived container, after it started.
* ``docker_run_baseline_ms`` — a plain ``docker run --rm -i IMAGE`` of the same
  image with the same input, interleaved with the cold runs so both see the
  same machine state.

Docker figures are null, with ``docker_reason``, when no Docker engine answers.
Goals (``goals`` in the output): docker_warm_ms <= 5, native_warm_ms <= 1,
docker_cold_ms <= 1.2 x docker_run_baseline_ms.

Options: ``--docker-host URL`` (default ``$DOCKER_HOST``, else the socket of
the Docker engine that ``make services`` started in this checkout,
``.run/docker/docker.sock`` or ``$MESHD_DOCKER_DIR/docker.sock``, else the
local socket; this entry point is part of the CLI, so it may read the
environment; the Docker figures' ``docker_reason`` says which it tried and how
to start one),
``--image`` (default ``meshd/noop:1``), ``--cold N`` and ``--warm N``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from engines.auth import AuthPolicy
from engines.host import EngineHost, HostOptions, publish_native
from engines.pool import PoolOptions
from lattice.blockstore import MemoryBlockStore

ECHO = Path(__file__).resolve().parents[2] / "engines" / "examples" / "echo.py"
TASK: dict[str, Any] = {"n": 1}


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _p90(samples: list[float]) -> float:
    return round(sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000, 3)


async def bench_native(cold_n: int, warm_n: int) -> dict[str, Any]:
    store = MemoryBlockStore()
    cid = publish_native(store, ECHO, "echo", interpreter="python3", serve_args=["--jsonl"])
    with tempfile.TemporaryDirectory(prefix="meshd-bench-") as cache:
        host = EngineHost(store, HostOptions(cache_dir=cache, pool=PoolOptions(workers=1)),
                          AuthPolicy(allow_cids=frozenset({cid})))
        async with trio.open_nursery() as nursery:
            await nursery.start(host.serve)
            cold, warm = [], []
            for i in range(cold_n + 1):
                t0 = time.perf_counter()
                out = await host.run(cid, TASK, warm=False)
                if i:  # the first run also materializes the engine files
                    cold.append(time.perf_counter() - t0)
                assert out.ok, out.error
            for i in range(warm_n + 1):
                t0 = time.perf_counter()
                out = await host.run(cid, TASK, warm=True)
                if i:  # the first run also starts the pool
                    warm.append(time.perf_counter() - t0)
                assert out.ok, out.error
            nursery.cancel_scope.cancel()
    return {"native_cold_ms": _ms(cold), "native_cold_p90_ms": _p90(cold),
            "native_warm_ms": _ms(warm), "native_warm_p90_ms": _p90(warm)}


def _docker_run_baseline(host: str, image: str, payload: bytes) -> float:
    cli = shutil.which("docker")
    assert cli is not None
    t0 = time.perf_counter()
    proc = subprocess.run([cli, "-H", host, "run", "--rm", "-i", image], input=payload,
                          capture_output=True, timeout=120, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or json.loads(proc.stdout) != TASK:
        raise RuntimeError(f"docker run failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
    return elapsed


async def bench_docker(host: str, image: str, cold_n: int, warm_n: int) -> dict[str, Any]:
    from engines.docker import DockerOptions, open_docker_runner

    payload = json.dumps(TASK).encode()
    baseline_cli = shutil.which("docker") is not None
    async with open_docker_runner(DockerOptions(docker_host=host)) as runner:
        ref = await trio.to_thread.run_sync(lambda: runner.client.images.get(image).id)
        cold, base, warm = [], [], []
        for i in range(cold_n + 1):
            t0 = time.perf_counter()
            out = await runner.run_cold(ref, (), TASK)
            elapsed = time.perf_counter() - t0
            assert out.ok, out.error
            b = await trio.to_thread.run_sync(_docker_run_baseline, host, image, payload) if baseline_cli else None
            if i:  # the first of each warms dockerd's caches
                cold.append(elapsed)
                if b is not None:
                    base.append(b)
        for i in range(warm_n + 1):
            t0 = time.perf_counter()
            out = await runner.run_warm(ref, (), TASK)
            if i:  # the first run also starts the container
                warm.append(time.perf_counter() - t0)
            assert out.ok, out.error
    result = {"docker_cold_ms": _ms(cold), "docker_cold_p90_ms": _p90(cold),
              "docker_warm_ms": _ms(warm), "docker_warm_p90_ms": _p90(warm),
              "docker_run_baseline_ms": _ms(base) if base else None}
    if not base:
        result["docker_reason"] = "no docker CLI on PATH for the `docker run --rm` baseline"
    return result


#: The checkout this module runs from (``make services`` keeps its state under ``<checkout>/.run``).
CHECKOUT = Path(__file__).resolve().parents[2]

#: What to do when no Docker engine answers.
HOW_TO_START = ("start the project's own with `make services` (scripts/start-docker.sh), "
                "or pass --docker-host / export DOCKER_HOST")


def default_docker_host(environ: dict[str, str]) -> tuple[str, str]:
    """The Docker host to use and where it came from (``$DOCKER_HOST``, ``make services``' socket, the default)."""
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"], "$DOCKER_HOST"
    state = Path(environ.get("MESHD_DOCKER_DIR") or CHECKOUT / ".run" / "docker")
    sock = state / "docker.sock"
    if sock.is_socket():
        return f"unix://{sock}", "the Docker engine `make services` started"
    return "unix:///var/run/docker.sock", "the system's default socket"


def _docker_reason(host: str, image: str) -> str | None:
    import docker

    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means "no Docker here", reported as the reason
        return f"no Docker engine at {host}: {exc}; {HOW_TO_START}"
    try:
        client.images.get(image)
    except Exception as exc:  # noqa: BLE001 - as above
        return f"Docker at {host} has no image {image}: {exc} (run scripts/start-docker.sh)"
    finally:
        client.close()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshd bench engines", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    host, origin = default_docker_host(dict(os.environ))
    parser.add_argument("--docker-host", default=host, help=f"Docker API URL (default {host}: {origin})")
    parser.add_argument("--image", default="meshd/noop:1")
    parser.add_argument("--cold", type=int, default=30, help="cold runs per runner (default 30)")
    parser.add_argument("--warm", type=int, default=200, help="warm runs per runner (default 200)")
    args = parser.parse_args(argv)
    if args.cold < 1 or args.warm < 1:
        parser.error("--cold and --warm must be positive")
    started = time.perf_counter()
    result: dict[str, Any] = {"bench": "engines", "cold_runs": args.cold, "warm_runs": args.warm}
    result.update(trio.run(bench_native, args.cold, args.warm))
    result["docker_host"] = args.docker_host
    reason = _docker_reason(args.docker_host, args.image)
    if reason is None:
        result.update(trio.run(bench_docker, args.docker_host, args.image, args.cold, args.warm))
    else:
        result.update(docker_cold_ms=None, docker_warm_ms=None, docker_run_baseline_ms=None, docker_reason=reason)
    base = result.get("docker_run_baseline_ms")
    result["docker_cold_vs_baseline"] = round(result["docker_cold_ms"] / base, 3) if base else None
    result["goals"] = {
        "native_warm_ms<=1": result["native_warm_ms"] <= 1,
        "docker_warm_ms<=5": None if result["docker_warm_ms"] is None else result["docker_warm_ms"] <= 5,
        "docker_cold<=1.2*baseline": None if not base else result["docker_cold_ms"] <= 1.2 * base,
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    if not args.json:
        for key, value in result.items():
            if key != "goals":
                print(f"{key:>26}: {value}", file=sys.stderr)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
