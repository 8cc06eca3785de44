"""An untrusted runner keeps few replicas awaiting a verdict, whoever started the task.

Replicated runs catch a lying runner only through verdicts, and a verdict on
a lying replica needs a third run to break the tie.  The mesh test
(``test_verifier_bans_dishonest_node.py``) once saw a liar post 27 results
before its ban: the runner's cap on unjudged replicas exempted tasks another
runner had already started, so the liar took every one of those.  Here one
runner, in process and in virtual time, is offered 20 replicated tasks that
another peer already started, and no verdict arrives: it must stop at
``2 * slots`` replicas awaiting judgement, and take more only as verdicts
(or final failures) settle them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from engines.outcome import Outcome
from lattice import codec, queue, task
from lattice.cid import CID
from lattice.signing import Signer, peer_id_of
from lattice.trust import verdict_op, verdict_record
from meshd.config import VerifyConfig

from ._inprocess_node import make_node

SLOTS = 2
VERIFIER = Signer.from_seed(b"\x44" * 32)  # the mesh's verifier ([verify] keys)
OTHER = "peer-other"


class EchoHost:
    """An engine host whose every run succeeds at once (the interface the runner uses)."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, engine: Any, payload: Any, **_: Any) -> Outcome:
        self.runs += 1
        await trio.sleep(0.01)
        return Outcome(ok=True, output=payload)


def _node(tmp_path: Path) -> Any:
    return make_node(tmp_path, seed=b"\x33" * 32, mesh="cap-mesh", roles=("runner",),
                     verify=VerifyConfig(keys=(peer_id_of(VERIFIER.public),)))


async def _started_tasks(node: Any, n: int) -> list[CID]:
    """``n`` tasks wanting 2 replicas, each already run once by another peer."""
    engine = codec.cid_of({"fake": "engine"})
    blocks, ops, done = [], [], []
    for i in range(n):
        cid, data, _ = task.task_from_json_untrusted({
            "input": {"value": {"i": i}},
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": str(engine)}}},
            "verify": {"replicas": 2, "quorum": 2}})
        blocks.append((cid, data))
        ops.append(queue.replicate_op(cid, 2, 2))
        # OTHER claimed and ran it (a replica counts only from a runner that claimed it).
        done.append(queue.assign_op(cid, OTHER, 0, 1_000, 1))
        done.append(queue.replica_done_op(cid, OTHER, 1, codec.cid_of({"other": i})))
    node.store.put_many(blocks)
    cids = [c for c, _ in blocks]
    await node.objects.commit(node.queue_obj, ops + queue.enqueue_ops(cids) + done)
    return cids


def _mine(node: Any, tasks: list[Any]) -> list[Any]:
    return [t for t in tasks if any(r["runner"] == node.peer_id for r in node.results_view.results(t))]


async def _settle() -> None:
    await trio.sleep(30)  # virtual: many claim rounds, far less than a lease


async def test_runner_stops_at_twice_its_slots_of_unjudged_replicas_of_started_tasks(
        tmp_path: Path, autojump_clock: Any) -> None:
    from meshd.roles.runner import Runner, RunnerOptions

    node = _node(tmp_path)
    host = EchoHost()
    runner = Runner(node, host, RunnerOptions(slots=SLOTS, idle_poll_s=0.2))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        tasks = await _started_tasks(node, 20)
        await nursery.start(runner.serve)
        await _settle()
        ran = _mine(node, tasks)
        assert len(ran) == 2 * SLOTS, f"ran {len(ran)} replicas with no verdict in sight"

        # A verdict on two of them makes room for two more, and no more.
        signer = VERIFIER
        verdicts = [verdict_op(verdict_record(signer, t, None, codec.cid_of({"x": 1}), [node.peer_id], [],
                                               peer_id_of(signer.public), 5))
                    for t in ran[:2]]
        await node.objects.commit(node.verdicts_obj, verdicts)
        await _settle()
        assert len(_mine(node, tasks)) == 2 * SLOTS + 2

        # A task that failed for good (no quorum) gets no verdict: it stops counting.
        pending = [t for t in _mine(node, tasks) if not node.trust.judged(t, node.peer_id)]
        await node.objects.commit(node.queue_obj, [queue.fail_op(pending[0], "peer-v", 6, 0, "no quorum", True)])
        await _settle()
        assert len(_mine(node, tasks)) == 2 * SLOTS + 3
        nursery.cancel_scope.cancel()
