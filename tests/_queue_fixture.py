"""A fresh in-memory queue replica with its view, and content-addressed test
tasks: shared by the queue state-machine tests."""

from __future__ import annotations

from lattice import codec, goho, queue, records, task
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID


def fresh_queue() -> tuple[goho.Replica, queue.QueueView]:
    g = records.make_genesis("queue", "t")[0]
    rep = goho.Replica.empty(g, MemoryBlockStore())
    return rep, queue.QueueView(rep)


def task_cid(i: int) -> CID:
    """The CID of a valid task with input ``i`` (an engine nobody has)."""
    engine = {"/": str(codec.cid_of("e"))}
    cid, _, _ = task.task_from_json_untrusted({"input": {"value": i},
                                               "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": engine}}})
    return cid
