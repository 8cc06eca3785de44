"""The example engines compute correct answers, directly and through EngineHost (cold and warm)."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter

import pytest
import trio

from engines import (AuthPolicy, DockerImage, DockerManifest, EngineHost, HostOptions, Resources, encode_manifest,
                     put_file, publish_native)
from engines.examples import EXAMPLES_DIR
from lattice.blockstore import MemoryBlockStore


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # numba's on-disk cache re-imports the kernel's module by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fib_sum(n: int) -> int:
    """Direct: F(0) + ... + F(n-1)."""
    a, b, total = 0, 1, 0
    for _ in range(n):
        total += a
        a, b = b, a + b
    return total


TEXT = "the quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.\n" * 5


def test_fibsum_split_map_reduce_matches_direct_sum():
    fib = load("fibsum")
    for n, chunks in [(0, 3), (1, 1), (2, 5), (10, 3), (1000, 7)]:
        ranges = fib.split({"n": n, "chunks": chunks})
        assert [r["start"] for r in ranges[1:]] == [r["stop"] for r in ranges[:-1]]
        partials = [fib.map_range(r) for r in ranges]
        assert int(fib.reduce(partials)["total"]) == fib_sum(n)


def test_wordcount_split_map_reduce_matches_counter():
    wc = load("wordcount")
    chunks = wc.split({"text": TEXT, "chunks": 4})
    assert "".join(c["text"] for c in chunks) == TEXT
    merged = wc.merge([wc.count(c) for c in chunks])["counts"]
    assert merged == dict(Counter(TEXT.lower().replace(".", " ").replace(";", " ").split()))


def test_montecarlo_pi_estimates_pi_deterministically():
    mc = load("montecarlo_pi")
    parts = [mc.sample(t) for t in mc.split({"samples": 40_000, "chunks": 4, "seed": 7})]
    assert parts == [mc.sample(t) for t in mc.split({"samples": 40_000, "chunks": 4, "seed": 7})]
    result = mc.reduce(parts)
    assert result["samples"] == 40_000 and abs(result["pi"] - math.pi) < 0.05


def test_mandelbrot_tiles_assemble_into_the_whole_image():
    mb = load("mandelbrot")
    job = {"width": 12, "height": 8, "tile": 5, "max_iter": 50, "region": [-2.0, -1.25, 0.5, 1.25]}
    tiles = [mb.render_tile(t) for t in mb.split(job)]
    image = mb.reduce({"width": 12, "height": 8, "tiles": tiles})
    whole = mb.render_tile({"x": 0, "y": 0, "w": 12, "h": 8, "width": 12, "height": 8, "max_iter": 50,
                            "region": job["region"]})
    assert image["rows"] == whole["rows"]
    assert max(max(r) for r in image["rows"]) == 50  # some points are in the set
    assert image["rows"][0][0] < 5  # the corner (-2, -1.25) escapes at once


def publish_stage(store, stage: str, **kw):
    return publish_native(store, EXAMPLES_DIR / "fibsum.py", f"fibsum-{stage}", interpreter="python3",
                          args=[stage], serve_args=["--jsonl"], resources=Resources(timeout_s=30), **kw)


async def run_pipeline(host, cids, n, chunks, *, warm):
    ranges = (await host.run(cids["split"], {"n": n, "chunks": chunks}, warm=warm)).output
    partials = [None] * len(ranges)

    async def one(i, r):
        outcome = await host.run(cids["map"], r, warm=warm)
        assert outcome.ok, outcome
        assert outcome.runner == ("native-warm" if warm else "native-cold")
        partials[i] = outcome.output

    async with trio.open_nursery() as nursery:
        for i, r in enumerate(ranges):
            nursery.start_soon(one, i, r)
    total = await host.run(cids["reduce"], partials, warm=warm)
    assert total.ok, total
    return int(total.output["total"])


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_fibsum_pipeline_through_the_host(warm):
    store = MemoryBlockStore()
    cids = {s: publish_stage(store, s) for s in ("split", "map", "reduce")}
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset(cids.values()))).serve)
        assert await run_pipeline(host, cids, 500, 4, warm=warm) == fib_sum(500)
        stats = host.statistics()
        assert stats.cache_misses == 1  # three manifests share one file block
        if warm:
            assert stats.pools == 3
        nursery.cancel_scope.cancel()


async def test_python_protocol_engine_from_a_directory_runs_cold_and_warm(tmp_path):
    store = MemoryBlockStore()
    cid = publish_native(store, EXAMPLES_DIR, "examples", executable="fibsum.py", protocol="python",
                         entry="fibsum:map_range")
    again = publish_native(store, EXAMPLES_DIR, "examples", executable="fibsum.py", protocol="python",
                           entry="fibsum:map_range")
    assert again == cid  # the directory tarball is deterministic
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        cold = await host.run(cid, {"start": 0, "stop": 90}, warm=False)
        warm = await host.run(cid, {"start": 0, "stop": 90}, warm=True)
        assert cold.ok and warm.ok, (cold, warm)
        assert cold.output == warm.output == {"sum": str(fib_sum(90))}
        assert (cold.runner, warm.runner) == ("native-cold", "native-warm")
        nursery.cancel_scope.cancel()


async def test_numba_engine_runs_in_the_sandbox():
    store = MemoryBlockStore()
    cid = publish_native(store, EXAMPLES_DIR / "montecarlo_pi.py", "pi-map", interpreter="python3", args=["map"],
                         resources=Resources(memory_mb=4096, timeout_s=60))
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        outcome = await host.run(cid, {"samples": 1000, "seed": 3})
        assert outcome.ok, outcome
        assert outcome.output == load("montecarlo_pi").sample({"samples": 1000, "seed": 3})
        nursery.cancel_scope.cancel()


async def test_warm_request_for_a_json_only_engine_is_refused():
    store = MemoryBlockStore()
    cid = publish_native(store, EXAMPLES_DIR / "echo.py", "echo", interpreter="python3")
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        assert (await host.run(cid, {"a": 1})).output == {"a": 1}
        refused = await host.run(cid, {"a": 1}, warm=True)
        assert not refused.ok and refused.error.startswith("engine cannot run warm")
        nursery.cancel_scope.cancel()


async def test_docker_engine_without_backend_is_unavailable():
    store = MemoryBlockStore()
    image = DockerImage(put_file(store, b"not really a tarball"), "sha256:" + "0" * 64, "echo:1")
    cid, data = encode_manifest(DockerManifest("echo", image, ("python", "/echo.py")))
    store.put(cid, data)
    async with trio.open_nursery() as nursery:
        host = await nursery.start(EngineHost(store, HostOptions(), AuthPolicy(allow_cids=frozenset({cid}))).serve)
        outcome = await host.run(cid, {})
        assert not outcome.ok and outcome.error == "docker runner unavailable on this node"
        nursery.cancel_scope.cancel()
