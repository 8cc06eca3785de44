#!/usr/bin/env python3
"""Monte Carlo estimate of pi, split/map/reduce, with a numba kernel.

* ``split``  ``{"samples": N, "chunks": k, "seed": s}`` ->
  ``[{"samples": n_i, "seed": s + i}, ...]``
* ``map``    ``{"samples": n, "seed": s}`` -> ``{"inside": k, "samples": n}``
  (points of the unit square inside the quarter circle; deterministic per seed)
* ``reduce`` ``[{"inside": k, "samples": n}, ...]`` -> ``{"pi": float, "samples": N}``

The kernel is ``@njit(cache=True)`` when run as a script (see ``_get_kernel``
for why not when imported): the first call in a process compiles it
(about a second) unless numba's cache already holds it, so warm workers pay
it once.  numba is imported only by ``map``.

CLI: ``montecarlo_pi.py split|map|reduce [--jsonl]``.  Python entries:
``montecarlo_pi:split``, ``montecarlo_pi:sample``, ``montecarlo_pi:reduce``.
"""

import json
import sys

import numpy as np

_kernel = None


def _count_inside_py(samples, seed):
    np.random.seed(seed)
    inside = 0
    for _ in range(samples):
        x = np.random.random()
        y = np.random.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def _get_kernel():
    # Compiled lazily so split/reduce never import numba.  The on-disk cache
    # is used only when this file runs as a script: numba's cache records the
    # module name and re-imports it on load, so entries written while the file
    # was imported under another name (a python-protocol worker, a test) would
    # break the script's runs, and vice versa.
    global _kernel
    if _kernel is None:
        from numba import njit

        _kernel = njit(cache=__name__ == "__main__")(_count_inside_py)
    return _kernel


def split(task):
    samples, chunks, seed = int(task["samples"]), max(1, int(task.get("chunks", 1))), int(task.get("seed", 0))
    step, extra = divmod(samples, chunks)
    return [{"samples": step + (1 if i < extra else 0), "seed": seed + i} for i in range(chunks)]


def sample(task):
    n, seed = int(task["samples"]), int(task["seed"])
    if not 0 <= n <= 10**10:
        raise ValueError("samples out of range")
    return {"inside": int(_get_kernel()(n, seed)), "samples": n}


def reduce(partials):
    inside = sum(int(p["inside"]) for p in partials)
    samples = sum(int(p["samples"]) for p in partials)
    return {"pi": 4.0 * inside / samples if samples else 0.0, "samples": samples}


STAGES = {"split": split, "map": sample, "reduce": reduce}


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
