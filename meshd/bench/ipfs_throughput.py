"""``meshd bench ipfs``: block put/get throughput through :class:`IpfsBlockStore`
against a plain keep-alive HTTP client, in the same run on the same node.

The plain client (httpx) sends exactly what a minimal caller would: one
``block/put`` with the same query as the store and one ``block/get`` with a
deadline.  The ratios ``put_ratio``/``get_ratio`` (store / plain) show what
the store's checks and ipfshttpclient cost; the goal is >= 0.9.

Each phase uses its own fresh blocks (random bytes from a seeded RNG, so a
run is repeatable yet does not hit blocks an earlier run left in the node),
and store and plain calls alternate one for one (each timed on its own) so
that a node warming up, or other load on the machine, affects both alike.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

from lattice.cid import CID, RAW

from ..store.ipfs import IpfsBlockStore, IpfsOptions

__all__ = ["run_ipfs_bench"]

_BLOCK_SIZE = 256


def _blocks(rng: random.Random, n: int) -> list[tuple[CID, bytes]]:
    out = []
    for _ in range(n):
        data = rng.randbytes(_BLOCK_SIZE)
        out.append((CID.for_block(RAW, data), data))
    return out


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def run_ipfs_bench(api: str, n: int = 2000, *, seed: int | None = None) -> dict[str, Any]:
    """Measure block put/get rates through the store and through plain HTTP.

    Args:
        api: The node's RPC API multiaddr, e.g. ``/ip4/127.0.0.1/tcp/5001``.
        n: Blocks per phase (each side puts ``n`` and gets ``n``).
        seed: RNG seed for block contents; default: a fresh one per run (the
            node keeps blocks, so reusing a seed re-puts existing blocks).

    Returns:
        A JSON-ready dict: ``put_per_s``, ``get_per_s`` (store),
        ``raw_put_per_s``, ``raw_get_per_s`` (plain HTTP), ``put_ratio``,
        ``get_ratio``, plus ``n``, ``block_size``, ``seed``, ``api``,
        ``put_codec_param``.

    Raises:
        ValueError: ``n`` < 1 or ``api`` is not a usable multiaddr.
        lattice.errors.StoreError: the node failed.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    options = IpfsOptions(api=api)
    if seed is None:
        seed = random.SystemRandom().randrange(2**63)
    rng = random.Random(seed)
    mine, theirs = _blocks(rng, n), _blocks(rng, n)

    with IpfsBlockStore.open(options) as store, httpx.Client(
        base_url=options.api_url, timeout=options.http_timeout_s
    ) as http:
        codec_param = store.ipfs_statistics().put_codec_param
        put_params = {codec_param: "raw", "mhtype": "sha2-256", "cid-version": "1", "cid-base": "base32"}
        get_params = {"timeout": f"{int(options.timeout_s * 1000)}ms"}

        def raw_put(data: bytes) -> None:
            resp = http.post("block/put", params=put_params, files={"file": ("block", data)})
            resp.raise_for_status()

        def raw_get(cid: CID) -> None:
            resp = http.post("block/get", params={**get_params, "arg": str(cid)})
            resp.raise_for_status()

        # Warm both connections so neither side pays for the TCP handshake.
        store.put(*mine[0])
        raw_put(theirs[0][1])

        # Interleave store and plain calls one for one, timing each, so that
        # load from other processes on the machine hits both sides alike.
        clock = time.perf_counter
        put_s = raw_put_s = get_s = raw_get_s = 0.0
        for (cid, data), (_, other) in zip(mine, theirs):
            t0 = clock()
            store.put(cid, data)
            t1 = clock()
            raw_put(other)
            t2 = clock()
            put_s += t1 - t0
            raw_put_s += t2 - t1
        for (cid, _), (other_cid, _) in zip(mine, theirs):
            t0 = clock()
            store.get(cid)
            t1 = clock()
            raw_get(other_cid)
            t2 = clock()
            get_s += t1 - t0
            raw_get_s += t2 - t1

    result = {
        "api": api,
        "n": n,
        "block_size": _BLOCK_SIZE,
        "seed": seed,
        "put_codec_param": codec_param,
        "put_per_s": _rate(n, put_s),
        "get_per_s": _rate(n, get_s),
        "raw_put_per_s": _rate(n, raw_put_s),
        "raw_get_per_s": _rate(n, raw_get_s),
    }
    result["put_ratio"] = round(result["put_per_s"] / result["raw_put_per_s"], 3)
    result["get_ratio"] = round(result["get_per_s"] / result["raw_get_per_s"], 3)
    return result
