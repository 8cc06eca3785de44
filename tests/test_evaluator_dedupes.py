"""Several evaluators reacting to the same state enqueue each task once (whitepaper 6.1).

In process, no network: each "node" has its own block store, a replica of the
job dataset and a replica of the queue.  Deltas are handed between replicas
by hand, in different orders, and the evaluators' rule books fire over their
own replicas; the queues are then merged and every task must be there once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conditions import ConditionOptions
from engines.examples import EXAMPLES_DIR
from lattice import codec, dataset, queue, records
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.goho import Replica
from lattice.signing import Signer
from meshd.roles import jobs
from meshd.roles.evaluator import RuleBook

from ._inprocess_node import make_node, submit_fibsum

OPTIONS = ConditionOptions()
PIPELINES = Path(EXAMPLES_DIR) / "pipelines"
FAKE_ENGINES = [codec.cid_of({"engine": stage}) for stage in ("split", "map", "reduce")]
QUEUE = records.make_genesis("queue", "dedupe-test")[0]


class Peer:
    """One node's replicas and its evaluator's rule book."""

    def __init__(self, i: int, genesis: CID) -> None:
        self.store = MemoryBlockStore()
        self.signer = Signer.from_seed(bytes([i + 1]) * 32)
        self.data = Replica.empty(genesis, self.store)
        self.queue = Replica.empty(QUEUE, self.store)
        self.view = queue.QueueView(self.queue)
        self.book = RuleBook(OPTIONS)
        self.deltas: list[tuple[CID, bytes]] = []  # queue deltas this peer wrote
        self.resolver = jobs.ReplicaResolver(lambda g: self.data if g == self.data.genesis else None, self.store)

    def write(self, ops: list[list[Any]]) -> tuple[CID, bytes]:
        return self.data.update(ops, self.signer)

    def evaluate(self) -> list[CID]:
        """One evaluator pass: reload rules, fire, enqueue what is new here."""
        genesis = self.data.genesis
        assert self.book.load_dataset(genesis, self.data) in (None, [])
        fired: list[tuple[CID, bytes]] = []
        for origin in sorted(self.book.affected({genesis}), key=lambda c: c.raw):
            blocks, outcomes = self.book.fire(origin, self.resolver)
            assert all(o.error is None for o in outcomes), outcomes
            fired.extend(blocks)
        new = [c for c in dict.fromkeys(c for c, _ in fired) if c not in self.view]
        if new:
            self.store.put_many([b for b in fired if b[0] in set(new)])
            self.deltas.append(self.queue.update(queue.enqueue_ops(new), self.signer))
        return [c for c, _ in fired]


def fibsum_plan(genesis: CID, n: int = 12, chunks: int = 4) -> jobs.JobPlan:
    spec = json.loads((PIPELINES / "fibsum.json").read_text())
    spec["input"] = {"n": n, "chunks": chunks}
    return jobs.plan_job(jobs.Pipeline.from_json_untrusted(spec), genesis, FAKE_ENGINES, created_ms=0,
                         options=OPTIONS)


def merged_queue(peers: list[Peer]) -> queue.QueueView:
    store = MemoryBlockStore()
    merged = Replica.empty(QUEUE, store)
    view = queue.QueueView(merged)
    for peer in reversed(peers):
        for cid, data in reversed(peer.deltas):  # newest first: exercises out-of-order delivery
            merged.receive_untrusted(cid, data)
    assert not merged.missing()
    return view


def fib_split(n: int, chunks: int) -> list[dict[str, int]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fibsum_example", EXAMPLES_DIR / "fibsum.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.split({"n": n, "chunks": chunks})


@pytest.fixture
def genesis() -> CID:
    return records.make_genesis("dataset", "job/fibsum", b"dedupe")[0]


def test_three_evaluators_enqueue_each_map_task_once(genesis: CID) -> None:
    plan = fibsum_plan(genesis)
    peers = [Peer(i, genesis) for i in range(3)]
    submit = peers[0].write(list(plan.ops))
    split = peers[0].write([dataset.set_op("split/results", fib_split(12, 4))])
    for peer in peers[1:]:
        for cid, data in (split, submit):  # child before parent: waits, then applies both
            peer.data.receive_untrusted(cid, data)
    assert all(p.data.state == peers[0].data.state for p in peers)

    fired = [peer.evaluate() for peer in peers]

    assert fired[0] == fired[1] == fired[2]  # byte-identical tasks, same order
    assert len(fired[0]) == 4
    view = merged_queue(peers)
    tasks = list(view.tasks())
    assert sorted(tasks, key=lambda c: c.raw) == sorted(fired[0], key=lambda c: c.raw)
    assert all(tasks.count(c) == 1 for c in fired[0])
    # Each peer wrote its own enqueue delta, yet the merged queue has 4 tasks, not 12.
    assert all(len(p.deltas) == 1 for p in peers)


def test_map_tasks_write_keyed_results_so_equal_outputs_do_not_collapse(genesis: CID) -> None:
    peer = Peer(0, genesis)
    peer.write(list(fibsum_plan(genesis, n=3, chunks=3).ops))
    peer.write([dataset.set_op("split/results", fib_split(3, 3))])
    records_ = [peer.store.get(c) for c in peer.evaluate()]
    destinations = [codec.decode_trusted(r)["result"]["destination"]["path"] for r in records_]
    assert destinations == ["map/results/0", "map/results/1", "map/results/2"]
    # F(1) and F(2) are both 1: equal outputs, but at distinct keys.
    peer.write([dataset.set_op(path, {"sum": s}) for path, s in zip(destinations, ["0", "1", "1"])])
    assert jobs.read_path(peer.data, "map/results") == {"0": {"sum": "0"}, "1": {"sum": "1"}, "2": {"sum": "1"}}
    (reduce_cid,) = peer.evaluate()
    assert codec.decode_trusted(peer.store.get(reduce_cid))["input"] == {
        "value": [{"sum": "0"}, {"sum": "1"}, {"sum": "1"}]}


def test_reduce_fires_once_whatever_order_results_were_merged_in(genesis: CID) -> None:
    plan = fibsum_plan(genesis)
    author = Peer(9, genesis)
    submit = author.write(list(plan.ops))
    split = author.write([dataset.set_op("split/results", fib_split(12, 4))])
    # The map results come from four runners, each writing on top of the
    # split without seeing the others: four concurrent deltas.
    writers = [Peer(10 + i, genesis) for i in range(4)]
    concurrent = []
    for i, w in enumerate(writers):
        for cid, data in (submit, split):
            w.data.receive_untrusted(cid, data)
        concurrent.append(w.write([dataset.set_op(f"map/results/{i}", {"sum": str(10 * i)})]))

    peers = [Peer(i, genesis) for i in range(3)]
    orders = [concurrent, concurrent[::-1], [concurrent[2], concurrent[0], concurrent[3], concurrent[1]]]
    for peer, order in zip(peers, orders):
        for cid, data in (submit, split, *order):
            peer.data.receive_untrusted(cid, data)
    assert peers[0].data.state == peers[1].data.state == peers[2].data.state

    fired = [peer.evaluate() for peer in peers]

    assert fired[0] == fired[1] == fired[2] and len(fired[0]) == 1  # the reduce, and only it
    view = merged_queue(peers)
    assert list(view.tasks()) == fired[0]


def test_a_malformed_rule_is_reported_and_the_others_still_fire(genesis: CID) -> None:
    plan = fibsum_plan(genesis)
    record = plan.ops[1][2]
    record["rules"][0]["rule"]["condition"] = "len(1"
    peer = Peer(0, genesis)
    peer.write([list(plan.ops[0]), ["put", jobs.RULES_PATH, record], list(plan.ops[2])])
    peer.write([dataset.set_op("split/results", fib_split(12, 4))])
    errors = peer.book.load_dataset(genesis, peer.data)
    assert errors is not None and [i for i, _ in errors] == [0]
    assert "BadCondition" in errors[0][1] and "column" in errors[0][1]
    blocks, outcomes = peer.book.fire(genesis, peer.resolver)
    assert [o.index for o in outcomes] == [1, 2] and len(blocks) == 4  # map still fires


# ----------------------------------------------------------------- Evaluator services, in process


def _node(tmp_path: Path, i: int) -> Any:
    return make_node(tmp_path, seed=bytes([50 + i]) * 32, mesh="dedupe-mesh", name=f"n{i}", peer_id=f"peer-{i}",
                     heads=f"heads{i}.db")


def sync(src: Any, dst: Any, genesis: CID) -> None:
    """A hand-driven mesh: offer every delta of ``src``'s object that ``dst`` lacks, then notify."""
    source = src.objects.get(genesis)
    target = dst.objects.get(genesis) or dst.dataset_obj(genesis, create=True)
    stack, moved = list(source.replica.heads), False
    while stack:
        cid = stack.pop()
        if target.replica.is_known(cid):
            continue
        receipt = target.replica.receive_untrusted(cid, src.store.get(cid))
        stack.extend(receipt.missing)
        moved = True
    if moved:
        dst.objects.changed(target)


async def until(predicate: Any) -> None:
    """Wait (virtual time) until ``predicate()`` holds."""
    import trio

    with trio.fail_after(60):
        while not predicate():
            await trio.sleep(0.01)


async def test_two_evaluator_services_that_merge_concurrent_results_enqueue_the_reduce_once(
        tmp_path: Path, autojump_clock: Any) -> None:
    import trio

    from meshd.roles.evaluator import Evaluator

    nodes = [_node(tmp_path, i) for i in range(2)]
    evaluators = [Evaluator(n) for n in nodes]
    queue_genesis = nodes[0].queue_obj.genesis
    assert nodes[1].queue_obj.genesis == queue_genesis  # derived from the mesh name
    async with trio.open_nursery() as nursery:
        for node, evaluator in zip(nodes, evaluators):
            await nursery.start(node.objects.serve)
            await nursery.start(evaluator.serve)
        job = await submit_fibsum(nodes[0])
        job_obj = nodes[0].objects.get(job)
        await nodes[0].objects.commit(job_obj, [dataset.set_op("split/results", fib_split(200, 8))])
        sync(nodes[0], nodes[1], job)  # node 1 has the rules and the split, not the queue
        await until(lambda: all(len(n.queue) >= 8 for n in nodes))
        assert len(nodes[0].queue) == 1 + 8 and len(nodes[1].queue) == 8  # node 1 fired the maps itself

        # Four results on each node, written concurrently, then merged both ways.
        for i, node in enumerate(nodes):
            obj = node.objects.get(job)
            await node.objects.commit(obj, [dataset.set_op(f"map/results/{k}", {"sum": str(k)})
                                            for k in range(4 * i, 4 * i + 4)])
        sync(nodes[0], nodes[1], job)
        sync(nodes[1], nodes[0], job)
        await until(lambda: all(len(n.queue) >= (10 if n is nodes[0] else 9) for n in nodes))
        sync(nodes[0], nodes[1], queue_genesis)
        sync(nodes[1], nodes[0], queue_genesis)
        await until(lambda: len(nodes[0].queue) == len(nodes[1].queue) == 10)
        nursery.cancel_scope.cancel()

    tasks = [list(n.queue.tasks()) for n in nodes]
    assert sorted(tasks[0], key=lambda c: c.raw) == sorted(tasks[1], key=lambda c: c.raw)
    assert len(set(tasks[0])) == 10  # 1 split + 8 maps + 1 reduce, each once
    assert all(e.statistics().errors == 0 for e in evaluators)
    assert [e.statistics().tasks_enqueued for e in evaluators] == [9, 9]  # maps + reduce on each


async def test_conditions_in_a_queued_task_definition_fire_and_bad_ones_are_reported(
        tmp_path: Path, autojump_clock: Any) -> None:
    import trio

    from meshd.roles.evaluator import Evaluator

    node = _node(tmp_path, 0)
    evaluator = Evaluator(node)
    target = records.make_genesis("dataset", "listing-3", b"")[0]
    definition, data = codec.encode_block({"runner": {"type": "bin-json-runner", "engine": FAKE_ENGINES[1]}})
    node.store.put(definition, data)
    link, where = {"/": str(definition)}, {"dataset": {"/": str(target)}, "path": "split/results"}
    good = {"name": "Create Map tasks", "action": "map", "taskDefinition": link, "source": where,
            "condition": f"!exist(dataset(hpcp('{target}/map/results')))",
            "result": {"action": "append", "destination": {"dataset": {"/": str(target)}, "path": "map/results"}}}
    bad = dict(good, name="broken", condition="len(")
    listing_3 = {"input": {"value": 0}, "result": {"action": "set", "destination": where},
                 "taskDefinition": {"runner": {"type": "bin-json-runner"}, "conditions": [good, bad]}}
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        await nursery.start(evaluator.serve)
        await node.enqueue([listing_3])
        await until(lambda: node.objects.get(target) is not None)  # followed: it is the task's destination
        await node.objects.commit(node.objects.get(target), [dataset.set_op("split/results", [5, 8, 13])])
        await until(lambda: len(node.queue) == 4)
        nursery.cancel_scope.cancel()
    inputs = [codec.decode_trusted(node.store.get(t))["input"] for t in list(node.queue.tasks())[1:]]
    assert inputs == [{"value": 5, "index": 0}, {"value": 8, "index": 1}, {"value": 13, "index": 2}]
    (error,) = evaluator.errors()
    assert error["index"] == 1 and "BadCondition" in error["error"] and error["active"]
