"""Write forged queue records into a meshd home, as a hostile member would.

Run as ``python -m tests._forge_queue <home> <engine-cid> <victim-peer-id>``
on an initialised home whose daemon is *not* running.  With the home's own
identity it signs one delta that enqueues four valid echo tasks, then one
sibling delta per attack, each on top of that first delta only (so a refused
attack does not hide the others), and makes them all heads, so that the
home's daemon announces them to the mesh when it starts:

* ``in_victims_name``: a claim of task 0 in the victim's name, for ever;
* ``lease_forever``: a claim of task 1 by the author, ``at: 0, until: 2^62``;
* ``complete_unclaimed``: a completion of task 2, which the author never claimed;
* ``fail_unclaimed``: a final failure of task 3, which the author never claimed.

Prints one JSON line: ``{"tasks": [...], "inputs": [...]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lattice import codec, goho, queue, records
from lattice.cid import CID
from lattice.diskstore import DiskBlockStore
from lattice.signing import Signer
from lattice.task import task_from_json_untrusted
from meshd.home import Home
from meshd.store.heads import HeadsStore

FOREVER = 2**62


def main(home_path: Path, engine: str, victim: str) -> None:
    home = Home(home_path)
    config = home.load_config({})
    signer = Signer.from_seed(home.load_identity().seed)
    me = home.load_identity().peer_id
    store = DiskBlockStore.open(home.blocks_dir / "blocks.db")
    heads = HeadsStore.open(home.path / "heads.db")
    try:
        genesis, gdata = records.make_genesis("queue", config.node.mesh)
        store.put(genesis, gdata)
        rep = goho.Replica.empty(genesis, store)
        inputs = [{"forged": i} for i in range(4)]
        tasks = []
        for value in inputs:
            cid, data, _ = task_from_json_untrusted(
                {"input": {"value": value}, "taskDefinition": {"runner": {"type": "bin-json-runner",
                                                                         "engine": {"/": engine}}}})
            store.put(cid, data)
            tasks.append(cid)
        base, _ = rep.update(queue.enqueue_ops(tasks), signer)
        attacks = [
            [queue.assign_op(tasks[0], victim, 0, FOREVER, 1)],
            [queue.assign_op(tasks[1], me, 0, FOREVER, 1)],
            [queue.complete_op(tasks[2], me, 1, codec.cid_of({"made": "up"}))],
            [queue.fail_op(tasks[3], me, 1, 1, "forged failure", True)],
        ]
        tips = []
        for ops in attacks:
            cid, data = records.sign_delta(signer, genesis, [base], 2, ops, [])
            store.put(cid, data)
            tips.append(cid)
        heads.save(genesis, "queue", config.node.mesh, tips, None)
    finally:
        heads.close()
        store.close()
    print(json.dumps({"tasks": [str(c) for c in tasks], "inputs": inputs}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), str(CID.parse_untrusted(sys.argv[2])), sys.argv[3])
