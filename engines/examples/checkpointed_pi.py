#!/usr/bin/env python3
"""Monte Carlo estimate of pi that checkpoints, so a vacated run resumes where it stopped.

Input ``{"batches": N, "batch": n, "seed": s, "pause_s": p}``: ``N`` batches of
``n`` random points each; batch ``i`` draws from its own generator
(``seed + i``), so the estimate is the same however many times the run was
stopped and resumed.  ``pause_s`` (default 0) sleeps after each batch, which
makes the run's length predictable for tests and benchmarks, and ``trace``
(optional, a file path) gets one line ``"<batches done> <unix time>"`` appended per batch computed, so they
can count the total work of a run that moved between processes.

Output ``{"pi": float, "samples": N*n, "resumed_from": k, "batches_here": m}``:
``k`` batches came from the checkpoint it resumed from, ``m`` were computed
by this process (``k + m == N``).

State (the checkpoint, JSON): ``{"done": batches done, "inside": points inside}``.
It uses the checkpoint helper of ``engines/checkpoint.py`` (see its doc for
the protocol): a copy published beside this script, or ``engines.checkpoint``
where meshd is installed.  Run by hand it simply runs from the start.
"""

import json
import random
import sys
import time

try:
    from checkpoint import Checkpoint  # a copy published beside this script
except ImportError:
    from engines.checkpoint import Checkpoint


def run(task, ck):
    batches, n, seed = int(task["batches"]), int(task.get("batch", 1000)), int(task.get("seed", 0))
    pause, trace = float(task.get("pause_s", 0.0)), task.get("trace")
    state = ck.load_json()
    if not (isinstance(state, dict) and isinstance(state.get("done"), int) and isinstance(state.get("inside"), int)
            and 0 <= state["done"] <= batches):
        state = {"done": 0, "inside": 0}
    resumed = state["done"]
    while state["done"] < batches:
        rng = random.Random(seed + state["done"])
        inside = 0
        for _ in range(n):
            x, y = rng.random(), rng.random()
            if x * x + y * y <= 1.0:
                inside += 1
        if pause:
            time.sleep(pause)
        if trace:
            try:
                with open(trace, "a") as f:
                    f.write(f"{state['done']} {time.time():.3f}\n")
            except OSError:
                trace = None  # not visible from the engine's sandbox: no trace
        state = {"done": state["done"] + 1, "inside": state["inside"] + inside}
        if ck.due():
            ck.save_json(state)
    samples = batches * n
    return {"pi": 4.0 * state["inside"] / samples if samples else 0.0, "samples": samples,
            "resumed_from": resumed, "batches_here": batches - resumed}


def main():
    json.dump(run(json.load(sys.stdin), Checkpoint.from_env()), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
