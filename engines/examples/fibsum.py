#!/usr/bin/env python3
"""Fibonacci-sum split/map/reduce, the Computes whitepaper's example job.

Sums the first ``n`` Fibonacci numbers F(0) + ... + F(n-1) (F(0)=0, F(1)=1).

* ``split``  ``{"n": N, "chunks": k}`` -> ``[{"start": a, "stop": b}, ...]``
  (k contiguous index ranges covering 0..N-1; fewer when N < k).
* ``map``    ``{"start": a, "stop": b}`` -> ``{"sum": "<decimal>"}`` the sum of
  F(a)..F(b-1).  Sums are decimal strings: they outgrow 64-bit integers (the
  DAG-CBOR limit) after F(92).
* ``reduce`` ``[{"sum": "..."}, ...]`` -> ``{"total": "<decimal>"}``.

CLI: ``fibsum.py split|map|reduce [--jsonl]``.  Python entries:
``fibsum:split``, ``fibsum:map_range``, ``fibsum:reduce``.
"""

import json
import sys

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

MAX_N = 200_000


def _fib_pair(k):
    """(F(k), F(k+1)) by fast doubling."""
    if k == 0:
        return 0, 1
    a, b = _fib_pair(k // 2)
    c = a * (2 * b - a)
    d = a * a + b * b
    return (d, c + d) if k % 2 else (c, d)


def split(task):
    n, chunks = int(task["n"]), int(task.get("chunks", 1))
    if not 0 <= n <= MAX_N or chunks < 1:
        raise ValueError(f"need 0 <= n <= {MAX_N} and chunks >= 1")
    chunks = max(1, min(chunks, n))
    step, extra = divmod(n, chunks)
    out, start = [], 0
    for i in range(chunks):
        stop = start + step + (1 if i < extra else 0)
        if stop > start:
            out.append({"start": start, "stop": stop})
        start = stop
    return out


def map_range(task):
    start, stop = int(task["start"]), int(task["stop"])
    if not 0 <= start <= stop <= MAX_N:
        raise ValueError("need 0 <= start <= stop <= MAX_N")
    a, b = _fib_pair(start)
    total = 0
    for _ in range(stop - start):
        total += a
        a, b = b, a + b
    return {"sum": str(total)}


def reduce(partials):
    if isinstance(partials, dict):
        partials = partials["partials"]
    return {"total": str(sum(int(p["sum"]) for p in partials))}


STAGES = {"split": split, "map": map_range, "reduce": reduce}


def main(argv):
    args = [a for a in argv[1:] if a != "--jsonl"]
    fn = STAGES[args[0]]
    if "--jsonl" in argv:
        for line in sys.stdin:
            sys.stdout.write(json.dumps(fn(json.loads(line))) + "\n")
            sys.stdout.flush()
        return 0
    json.dump(fn(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
