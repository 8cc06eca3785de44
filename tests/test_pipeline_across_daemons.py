"""A split → map → reduce job across three daemons, one of which dies mid-map."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

from ._daemons import Daemon, wait_for

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "engines" / "examples"
ROLES = ("manager", "runner", "evaluator")


def _publish(d: Daemon, name: str, stage: str) -> str:
    body = {"manifest": {"name": name, "executable": "fibsum.py", "interpreter": "python3", "args": [stage],
                         "serve_args": [stage, "--jsonl"]},
            "files": {"fibsum.py": base64.b64encode((EXAMPLES / "fibsum.py").read_bytes()).decode()}}
    r = d.post("/v1/engines", body)
    assert r.status_code in (200, 201), r.text
    return r.json()["cid"]


def _short_leases(d: Daemon) -> None:
    cfg = d.home / "config.toml"
    text = re.sub(r"task_timeout_s = [0-9.]+", "task_timeout_s = 3.0", cfg.read_text())
    cfg.write_text(re.sub(r"lease_s = [0-9.]+", "lease_s = 1.0", text))


def test_fibsum_job_finishes_correctly_when_a_node_dies_mid_map(daemon_factory) -> None:
    a = daemon_factory("a", roles=ROLES)
    _short_leases(a)
    a.start()
    others = [daemon_factory(n, roles=ROLES, bootstrap=[a.multiaddr], trust=[a.public_hex]) for n in ("b", "c")]
    for d in others:
        _short_leases(d)
        d.start()
    nodes = [a, *others]
    for d in nodes:
        wait_for(lambda d=d: sum(1 for p in d.get("/v1/peers").json()["peers"] if p["roles"]) >= 2,
                 timeout=60, what=f"{d.home.name} to see the mesh")
    split, fmap, reduce_ = (_publish(a, f"fibsum-{s}", s) for s in ("split", "map", "reduce"))
    for d in nodes:
        wait_for(lambda d=d: len(d.get("/v1/engines").json()["engines"]) >= 3, timeout=60, what="engines everywhere")

    n, chunks = 60_000, 24
    job = a.post("/v1/jobs", {
        "name": "fibsum", "input": {"n": n, "chunks": chunks},
        "stages": [
            {"name": "split", "engine": {"/": split}},
            {"name": "map", "engine": {"/": fmap}, "action": "map", "source": "split/results"},
            {"name": "reduce", "engine": {"/": reduce_}, "action": "reduce", "source": "map/results",
             "split": "split/results"},
        ]}).json()["job"]

    def stage(name: str) -> dict:
        return next(s for s in a.get(f"/v1/jobs/{job}").json()["stages"] if s["name"] == name)

    # Kill C while the map stage is under way.
    wait_for(lambda: stage("map")["total"] and 0 < stage("map")["done"] + stage("map")["running"] < chunks,
             timeout=90, interval=0.005, what="the map stage to be under way")
    others[1].kill()

    status = wait_for(lambda: (s := a.get(f"/v1/jobs/{job}").json())["state"] == "completed" and s,
                      timeout=180, what="the job to finish without C")
    sys.set_int_max_str_digits(0)  # the sum has ~12,500 digits
    a_, b_, expected = 0, 1, 0
    for _ in range(n):
        expected, a_, b_ = expected + a_, b_, a_ + b_
    assert status["result"] == {"total": str(expected)}
    assert [(s["name"], s["done"]) for s in status["stages"]] == [("split", 1), ("map", chunks), ("reduce", 1)]
    # B, which never submitted anything, has the same answer.
    wait_for(lambda: others[0].get(f"/v1/jobs/{job}").json()["result"] == {"total": str(expected)},
             timeout=60, what="B to see the final result")
