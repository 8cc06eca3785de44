"""``meshd bench ipfs``: block throughput and archivist pin cost on a real IPFS node.

Wraps :func:`meshd.bench.ipfs_throughput.run_ipfs_bench` (store vs plain HTTP put/get,
see there) and adds the Archivist's figure: how long moving a recursive pin
from one version root of a GOHO to the next takes as the object grows
(``pin_move_s``; js-ipfs has no ``pin/update``, so each move re-walks the DAG,
which is what bounds the archivist's ``interval_s``).

If ``--api`` is not given and nothing answers on ``/ip4/127.0.0.1/tcp/5001``,
the js-ipfs test node is started with ``scripts/start-ipfs.sh``.  Prints one
JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lattice import codec, goho, records, signing

from ..store.archive import version_record
from ..store.ipfs import IpfsBlockStore, IpfsOptions
from .ipfs_throughput import run_ipfs_bench

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"
START = Path(__file__).resolve().parents[2] / "scripts" / "start-ipfs.sh"


def _answers(api: str) -> bool:
    try:
        IpfsBlockStore.open(IpfsOptions(api=api)).close()
    except Exception:  # noqa: BLE001 - any failure means "no node here"
        return False
    return True


def _ensure_node() -> str:
    if _answers(DEFAULT_API):
        return DEFAULT_API
    if not START.exists():
        raise RuntimeError(f"no IPFS node at {DEFAULT_API} and no {START} to start one")
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"scripts/start-ipfs.sh failed (rc {proc.returncode}): {tail}")
    return proc.stdout.strip().splitlines()[-1]


def bench_pin_moves(api: str, deltas: int, versions: int) -> dict[str, Any]:
    """Grow a GOHO to ``deltas`` deltas in ``versions`` steps, moving the pin each step."""
    with IpfsBlockStore.open(IpfsOptions(api=api, timeout_s=120.0, http_timeout_s=180.0)) as store:
        genesis, gdata = records.make_genesis("bench", f"pins-{time.time_ns()}")
        store.put(genesis, gdata)
        rep = goho.Replica.empty(genesis, store)
        signer = signing.Signer.generate()
        step = max(1, deltas // versions)
        prev = None
        moves: list[float] = []
        put_s = 0.0
        for v in range(versions):
            t0 = time.perf_counter()
            for i in range(step):
                rep.update([["add", "k", v * step + i]], signer)
            put_s += time.perf_counter() - t0
            root, data = codec.encode_block(version_record(genesis, rep.heads, rep.height, 0, prev=prev))
            store.put(root, data)
            t0 = time.perf_counter()
            if prev is None:
                store.pin_add(root)
            else:
                store.pin_update(prev, root)
            moves.append(time.perf_counter() - t0)
            prev = root
        store.pin_rm(prev)
    return {"pin_deltas": step * versions, "pin_versions": versions,
            "pin_first_s": round(moves[0], 4), "pin_move_s": round(moves[-1], 4),
            "pin_move_mean_s": round(sum(moves) / len(moves), 4),
            "delta_put_per_s": round(step * versions / put_s, 1) if put_s else None}


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshd bench ipfs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", help=f"IPFS RPC multiaddr (default: {DEFAULT_API}, started if silent)")
    parser.add_argument("--n", type=int, default=2000, help="blocks per put/get phase (2000)")
    parser.add_argument("--seed", type=int, help="RNG seed for block contents")
    parser.add_argument("--pin-deltas", type=int, default=2000, help="GOHO size for the pin figure; 0 skips (2000)")
    parser.add_argument("--pin-versions", type=int, default=5, help="pin moves measured (5)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    opts = parser.parse_args(args)
    try:
        api = opts.api or _ensure_node()
        result = run_ipfs_bench(api, opts.n, seed=opts.seed)
        if opts.pin_deltas > 0:
            result.update(bench_pin_moves(api, opts.pin_deltas, max(1, opts.pin_versions)))
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - StoreError and friends: report, no traceback
        print(f"error: IPFS benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not opts.json:
        print(f"store put {result['put_per_s']}/s get {result['get_per_s']}/s; plain HTTP put "
              f"{result['raw_put_per_s']}/s get {result['raw_get_per_s']}/s "
              f"(ratios {result['put_ratio']}, {result['get_ratio']})")
        if "pin_move_s" in result:
            print(f"pin move at {result['pin_deltas']} deltas: {result['pin_move_s']}s "
                  f"(first pin {result['pin_first_s']}s)")
    print(json.dumps(result, sort_keys=True))
    return 0
