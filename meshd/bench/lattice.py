"""``meshd bench lattice``: the lattice core's figures.

Prints one JSON object as its last line:

* ``cids_per_s`` — small dicts encoded as DAG-CBOR and hashed to a CIDv1.
* ``append_ops_per_s`` — queue ops applied to a GOHO through signed deltas of
  ``batch`` ops each (the daemon batches enqueues and claims the same way).
* ``merge_1m_s`` — seconds for a fresh in-process replica to sync a GOHO of
  ``entries`` entries from another replica over HPCP messages (announce, fetch
  planning, want/blocks, verification and apply).
* ``bytes_per_entry`` — resident memory (RSS) the synced replica added, per entry.
* ``delta_bytes_1op`` — wire bytes of a one-op delta.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Any

from lattice import codec, goho, hpcp, queue, records, signing
from lattice.blockstore import MemoryBlockStore


def _rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def bench_cids(n: int) -> float:
    d: dict[str, Any] = {"task": "bafy", "n": 0, "runner": "12D3KooW", "x": [1, 2, 3], "ok": True}
    t0 = time.perf_counter()
    for i in range(n):
        d["n"] = i
        codec.cid_of(d)
    return n / (time.perf_counter() - t0)


def _task_cids(n: int, salt: str) -> list:
    return [codec.cid_of({"t": "meshd/task", "v": 1, "input": {"value": i}, "s": salt}) for i in range(n)]


def bench_append(n: int, batch: int) -> tuple[float, goho.Replica]:
    g = records.make_genesis("queue", "bench-append")[0]
    rep = goho.Replica.empty(g, MemoryBlockStore())
    queue.QueueView(rep)  # the daemon always has the view attached
    signer = signing.Signer.generate()
    cids = _task_cids(n, "append")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        rep.update(queue.enqueue_ops(cids[i : i + batch]), signer)
    return n / (time.perf_counter() - t0), rep


def build_source(entries: int, batch: int) -> goho.Replica:
    g = records.make_genesis("queue", "bench-merge")[0]
    rep = goho.Replica.empty(g, MemoryBlockStore())
    signer = signing.Signer.generate()
    for i in range(0, entries, batch):
        ops = [["add", "available", codec.CID.for_block(0x71, i.to_bytes(8, "big") + j.to_bytes(4, "big"))] for j in range(min(batch, entries - i))]
        rep.update(ops, signer)
    return rep


def bench_merge(src: goho.Replica) -> tuple[float, int, goho.Replica]:
    """Sync a fresh replica from ``src`` through HPCP messages; return (s, rss bytes, replica)."""
    gc.collect()
    rss0 = _rss()
    t0 = time.perf_counter()
    dst = goho.Replica.empty(src.genesis, MemoryBlockStore())
    s_src = hpcp.Syncer(src, signing.Signer.generate(), hpcp.SyncOptions(batch=64, max_inflight=4))
    s_dst = hpcp.Syncer(dst, signing.Signer.generate(), hpcp.SyncOptions(batch=64, max_inflight=4))
    inbox = [("src", "dst", s_src.announce(1.0))]
    while inbox:
        frm, to, data = inbox.pop()
        peer = s_dst if to == "dst" else s_src
        inbox += [(to, "src" if to == "dst" else "dst", o.data) for o in peer.receive_untrusted(frm, data, 1.0)]
    elapsed = time.perf_counter() - t0
    del s_src, s_dst, inbox
    gc.collect()
    return elapsed, _rss() - rss0, dst


def run(entries: int = 1_000_000, batch: int = 1000, cids: int = 100_000, append: int = 200_000) -> dict[str, Any]:
    out: dict[str, Any] = {"entries": entries, "batch": batch}
    out["cids_per_s"] = round(bench_cids(cids))
    ops_s, _ = bench_append(append, batch)
    out["append_ops_per_s"] = round(ops_s)
    g = records.make_genesis("queue", "one")[0]
    one = goho.Replica.empty(g, MemoryBlockStore())
    _, data = one.update(queue.enqueue_ops([codec.cid_of({"x": 1})]), signing.Signer.generate())
    out["delta_bytes_1op"] = len(data)
    t0 = time.perf_counter()
    src = build_source(entries, batch)
    out["build_source_s"] = round(time.perf_counter() - t0, 2)
    seconds, rss, dst = bench_merge(src)
    if dst.state != src.state or dst.heads != src.heads:
        raise SystemExit("merge benchmark: replicas did not converge")
    out["merge_1m_s"] = round(seconds, 2)
    out["bytes_per_entry"] = round(rss / entries, 1)
    out["goals"] = {"cids_per_s": 50_000, "merge_1m_s": 20, "bytes_per_entry": 300}
    return out


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    if isinstance(argv, argparse.Namespace):
        ns = argv
        entries = getattr(ns, "entries", None) or 1_000_000
    else:
        p = argparse.ArgumentParser(prog="meshd bench lattice")
        p.add_argument("--entries", type=int, default=1_000_000)
        p.add_argument("--json", action="store_true")
        ns = p.parse_args(argv)
        entries = ns.entries
    result = run(entries=entries)
    if not getattr(ns, "json", False):
        for k, v in result.items():
            print(f"{k:>18}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
