#!/usr/bin/env python3
"""`make demo`: a small local mesh of meshd daemons on the embedded store.

It starts N daemons on 127.0.0.1 (separate processes, separate homes under
.demo/), joins them into a mesh, publishes the example engines on the first
node, enqueues the whitepaper's Fibonacci-sum map tasks there, and prints each
result as it arrives with the node that ran it.  If the Evaluator role is
available it then runs the full split -> map -> reduce pipeline as a job.
Everything is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import time
from pathlib import Path

import httpx

from meshd.bench.localmesh import LocalNode, start_mesh, wait_peers

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "engines" / "examples"


def say(msg: str) -> None:
    print(msg, flush=True)


def publish(node: LocalNode, name: str, script: str, args: list[str]) -> str:
    body = {"manifest": {"name": name, "executable": script, "interpreter": "python3", "args": args,
                         "serve_args": [*args, "--jsonl"]},
            "files": {script: base64.b64encode((EXAMPLES / script).read_bytes()).decode()}}
    return node.post("/v1/engines", body)["cid"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--n", type=int, default=3000, help="Fibonacci numbers to sum")
    args = ap.parse_args()

    root = REPO / ".demo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    from meshd.roles import role_module

    roles = ["manager", "runner"] + (["evaluator"] if role_module("evaluator") else [])
    nodes: list[LocalNode] = []
    try:
        say(f"== starting a local mesh of {args.nodes} meshd daemons (homes in {root})")
        nodes = start_mesh(root, args.nodes, roles)
        first = nodes[0]
        for n in nodes:
            say(f"   {n.name}: peer {n.peer_id[:20]}…  api {n.url}  p2p {n.multiaddr.split('/p2p/')[0]}")
        by_peer = {n.peer_id: n.name for n in nodes}
        if args.nodes > 1 and not wait_peers(nodes):
            say("   (not every node sees every other yet; continuing)")
        say(f"   {first.name} sees {len(first.get('/v1/node').get('peers', []))} peer(s)")

        say("== publishing the example engines on node-a (content-addressed, signed by node-a)")
        split = publish(first, "fibsum-split", "fibsum.py", ["split"])
        fmap = publish(first, "fibsum-map", "fibsum.py", ["map"])
        reduce_ = publish(first, "fibsum-reduce", "fibsum.py", ["reduce"])
        say(f"   fibsum-map {fmap}")

        say(f"== enqueueing {args.tasks} Fibonacci-sum map tasks on node-a (sum of F(0)..F({args.n - 1}))")
        step = args.n // args.tasks
        ranges = [{"start": i * step, "stop": args.n if i == args.tasks - 1 else (i + 1) * step} for i in range(args.tasks)]
        tasks = [{"input": {"value": r}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": fmap}}}}
                 for r in ranges]
        t0 = time.monotonic()
        cids = [t["cid"] for t in first.post("/v1/tasks", {"tasks": tasks})["tasks"]]
        seen: dict[str, tuple[str, int]] = {}
        ran_by: dict[str, int] = {}
        while len(seen) < len(cids) and time.monotonic() - t0 < 120:
            for cid, r in zip(cids, ranges):
                if cid in seen:
                    continue
                res = first.get(f"/v1/results/{cid}")
                if res.get("results") and res["results"][0]["output"] is not None:
                    rec = res["results"][0]
                    who = by_peer.get(rec["runner"], rec["runner"][:12])
                    seen[cid] = (who, int(rec["output"]["sum"]))
                    ran_by[who] = ran_by.get(who, 0) + 1
                    say(f"   [{time.monotonic() - t0:5.2f}s] F({r['start']}..{r['stop'] - 1}) ran on {who}: "
                        f"sum has {len(rec['output']['sum'])} digits")
            time.sleep(0.1)
        total = sum(v for _, v in seen.values())
        a, b, direct = 0, 1, 0
        for _ in range(args.n):
            direct += a
            a, b = b, a + b
        say(f"== {len(seen)}/{len(cids)} results on node-a; work spread: {ran_by}")
        say(f"   total matches a direct computation: {total == direct} ({len(str(total))} digits)")

        jobs = first.get("/v1/jobs") if httpx.get(first.url + "/v1/jobs", timeout=5, headers=first.headers).status_code == 200 else None
        if jobs is not None:
            say("== running the split -> map -> reduce pipeline as a job (Evaluator rules chain the stages)")
            job = first.post("/v1/jobs", {
                "name": "fibsum", "input": {"n": args.n, "chunks": 6},
                "stages": [
                    {"name": "split", "engine": {"/": split}},
                    {"name": "map", "engine": {"/": fmap}, "action": "map", "source": "split/results"},
                    {"name": "reduce", "engine": {"/": reduce_}, "action": "reduce", "source": "map/results",
                     "split": "split/results"},
                ]})
            jid = job.get("job")
            t1 = time.monotonic()
            last = None
            while time.monotonic() - t1 < 120:
                st = first.get(f"/v1/jobs/{jid}")
                line = "  ".join(f"{s['name']} {s['done']}/{s['total']}" for s in st.get("stages", []))
                if line != last:
                    say(f"   [{time.monotonic() - t1:5.2f}s] {line}")
                    last = line
                if st.get("state") in ("completed", "failed"):
                    res = st.get("result")
                    say(f"   job {st['state']}: total {'matches' if res and int(res.get('total', -1)) == direct else 'DOES NOT match'}"
                        " the direct computation")
                    break
                time.sleep(0.2)
        say("== done; stopping the mesh")
        return 0 if total == direct else 1
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    sys.exit(main())
