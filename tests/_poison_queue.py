"""Write a poisoned queue into a meshd home, as a hostile member would.

Run as ``python -m tests._poison_queue <home> <engine-cid>`` on an
initialised home whose daemon is *not* running.  It signs, with the home's
own identity, one queue delta that enqueues task "bodies" no honest node
would write, and stores those bodies, so that when the home's daemon starts
it announces the poison to the mesh like any other queue update.  Prints one
JSON line: ``{"bad_tasks": [...], "bad_definition_tasks": [...]}``.

The bodies cover what crashed runners, ``QueueView.next`` and the Evaluator
before peer blocks were validated: bytes that are not CBOR at all, a CBOR
object that is not a task, a task whose ``constraints`` are not objects, and
a well-formed task whose linked definition is garbage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from lattice import codec, queue
from lattice.cid import CID
from lattice.codec import DAG_CBOR
from lattice.diskstore import DiskBlockStore
from lattice.signing import Signer
from meshd.home import Home
from meshd.store.heads import HeadsStore
from meshd.store.objects import ObjectHost


def _raw_block(data: bytes) -> tuple[CID, bytes]:
    """A block under a dag-cbor CID whose bytes are not (valid) dag-cbor."""
    return CID.for_block(DAG_CBOR, data), data


def poison_blocks(engine: CID) -> tuple[list[tuple[CID, bytes]], list[CID], list[CID]]:
    """(blocks to store, bad task bodies, good bodies whose linked definition is bad)."""
    engine_td = {"runner": {"type": "bin-json-runner", "engine": engine}}
    bad_def = codec.encode_block({"runner": {"type": "no-such-runner", "engine": engine}})
    bodies = [
        _raw_block(b"\xff"),  # not CBOR at all
        codec.encode_block({"constraints": [1]}),  # CBOR, not a task
        codec.encode_block({"t": "meshd/task", "v": 1, "input": {"value": 1}, "taskDefinition": engine_td,
                            "constraints": [1]}),  # constraints that are not objects
        codec.encode_block({"t": "meshd/task", "v": 1, "input": {"value": 2},
                            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": "not a link"}}}),
    ]
    linked = codec.encode_block({"t": "meshd/task", "v": 1, "input": {"value": 3},
                                 "taskDefinition": bad_def[0]})  # a good body whose definition is garbage
    return bodies + [linked, bad_def], [c for c, _ in bodies], [linked[0]]


async def _main(home_path: Path, engine: CID) -> None:
    home = Home(home_path)
    config = home.load_config({})
    signer = Signer.from_seed(home.load_identity().seed)
    store = DiskBlockStore.open(home.blocks_dir / "blocks.db")
    heads = HeadsStore.open(home.path / "heads.db")
    try:
        objects = ObjectHost(store, heads, signer)
        objects.load()
        q = objects.follow("queue", config.node.mesh)
        blocks, bad_tasks, bad_defs = poison_blocks(engine)
        async with trio.open_nursery() as nursery:
            await nursery.start(objects.serve)
            await objects.commit(q, queue.enqueue_ops(bad_tasks + bad_defs), blocks)
            nursery.cancel_scope.cancel()
    finally:
        heads.close()
        store.close()
    print(json.dumps({"bad_tasks": [str(c) for c in bad_tasks], "bad_definition_tasks": [str(c) for c in bad_defs]}),
          flush=True)


if __name__ == "__main__":
    trio.run(_main, Path(sys.argv[1]), CID.parse_untrusted(sys.argv[2]))
