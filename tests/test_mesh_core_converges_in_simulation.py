"""The mesh core (the class the daemon's pump drives) in a seeded simulation:
many nodes, several objects, presence and linked blocks, over a network that
drops, duplicates, reorders and partitions messages, in virtual time."""

from __future__ import annotations

import textwrap

import pytest

import lattice.meshcore
from lattice import codec, queue
from lattice.meshcore import Broadcast, Fetched, MeshCore, MeshCoreOptions, Request, TokenBucket
from lattice.blockstore import MemoryBlockStore
from lattice.signing import Signer, peer_id_of

from ._mesh_sim import CoreNet, genesis

QUEUE = genesis("queue", "sim")
RESULTS = genesis("results", "sim")
DATASET = genesis("dataset", "shared")


def _bodies(node, n, tag):
    cids = []
    for i in range(n):
        cid, data = codec.encode_block({"t": "meshd/task", "v": 1, "input": {tag: i}})
        node.store.put(cid, data)
        cids.append(cid)
    return cids


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_objects_converge_and_linked_blocks_arrive_despite_loss_duplicates_and_reorder(seed) -> None:
    net = CoreNet(seed, drop=0.15, duplicate=0.1, max_delay=0.3)
    nodes = net.add_nodes(8, follow=[QUEUE, RESULTS])
    net.start()
    a, b = nodes[0], nodes[1]
    # Task bodies live only in a's store; the queue names them.  Every node
    # must fetch them after the queue delta arrives, asked by nobody.
    tasks = _bodies(a, 40, "a")
    net.carry(a, a.write(QUEUE, queue.enqueue_ops(tasks), net.now))
    # b writes a result record that names it as the runner and links an output
    # only b holds: the others fetch it from b.
    out, data = codec.encode_block({"output": seed})
    b.store.put(out, data)
    net.carry(b, b.write(RESULTS, [["put", str(tasks[0]), {"runner": b.peer_id, "output": out}]], net.now))
    # Concurrent writes on several nodes, on both objects.
    for i, n in enumerate(nodes[2:5]):
        net.carry(n, n.write(QUEUE, [queue.assign_op(tasks[i], n.peer_id, 1, 10_000, 1)], net.now))
    net.run_until(lambda: net.converged(QUEUE) and net.converged(RESULTS))
    net.run_until(lambda: all(n.store.has(c) for n in nodes for c in [*tasks, out]))
    assert all(n.replicas[QUEUE].state.count("available") == 40 for n in nodes)
    assert all(n.replicas[QUEUE].state.count("assigned") == 3 for n in nodes)
    # The pump learns which linked wants ended (to wake whoever waits on them).
    assert all(set(tasks) <= n.fetched for n in nodes[1:])
    assert not any(n.abandoned for n in nodes)


def test_a_shared_object_is_followed_when_a_peer_announces_it() -> None:
    net = CoreNet(7, drop=0.05)
    nodes = net.add_nodes(5, follow=[QUEUE])
    first = nodes[0]
    net.carry(first, first.follow(DATASET, net.now))
    net.start()
    net.carry(first, first.write(DATASET, [["add", "rows", i] for i in range(20)], net.now))
    net.run_until(lambda: net.converged(DATASET))
    assert all(n.replicas[DATASET].state.count("rows") == 20 for n in nodes)


def test_presence_converges_to_every_live_peer_and_a_silent_one_expires() -> None:
    net = CoreNet(11, drop=0.2, duplicate=0.2, max_delay=0.2)
    nodes = net.add_nodes(10, follow=[QUEUE])
    net.add_nodes(2, roles=("verifier",), follow=[QUEUE])
    net.start()
    runners = sorted(n.peer_id for n in nodes)
    everyone = sorted(net.nodes)
    net.run_until(lambda: all(n.core.live(net.now, "runner") == runners for n in net.nodes.values()))
    assert all(n.core.live(net.now) == everyone for n in net.nodes.values())
    assert all(n.core.peers.any_presence() for n in net.nodes.values())
    # A node that goes silent (cut off from everyone) stops being live for the rest.
    gone = nodes[0].peer_id
    net.partition({gone}, set(everyone) - {gone})
    net.run_until(lambda: all(gone not in n.core.live(net.now, "runner") for n in nodes[1:]))
    net.heal()
    net.run_until(lambda: all(n.core.live(net.now, "runner") == runners for n in nodes))


def test_a_partition_heals_and_both_sides_work_merges() -> None:
    net = CoreNet(5, drop=0.05, max_delay=0.1)
    nodes = net.add_nodes(6, follow=[QUEUE, RESULTS])
    net.start()
    left = {n.peer_id for n in nodes[:3]}
    right = {n.peer_id for n in nodes[3:]}
    net.partition(left, right)
    tl = _bodies(nodes[0], 5, "left")
    tr = _bodies(nodes[3], 5, "right")
    net.carry(nodes[0], nodes[0].write(QUEUE, queue.enqueue_ops(tl), net.now))
    net.carry(nodes[3], nodes[3].write(QUEUE, queue.enqueue_ops(tr), net.now))
    net.run_until(lambda: net.converged(QUEUE, left) and net.converged(QUEUE, right)
                  and nodes[1].replicas[QUEUE].state.count("available") == 5)
    net.run_for(2.0)
    assert all(nodes[i].replicas[QUEUE].state.count("available") == 5 for i in range(6))
    net.heal()
    net.run_until(lambda: net.converged(QUEUE))
    net.run_until(lambda: all(n.store.has(c) for n in nodes for c in tl + tr))
    assert all(n.replicas[QUEUE].state.count("available") == 10 for n in nodes)


def test_a_linked_block_nobody_holds_is_abandoned_after_its_retries() -> None:
    net = CoreNet(9)
    a, b = net.add_nodes(2, follow=[QUEUE])
    net.start()
    ghost = codec.cid_of({"nobody": "has this"})
    net.carry(a, a.write(QUEUE, queue.enqueue_ops([ghost]), net.now))
    net.run_until(lambda: ghost in b.abandoned, max_s=300)
    assert not b.store.has(ghost)
    assert b.core.fetcher.count_wanted() == 0


def test_want_ends_at_once_for_stored_blocks_and_fetches_the_rest_from_a_hint() -> None:
    net = CoreNet(13)
    a, b, c = net.add_nodes(3, follow=[QUEUE])
    net.start()
    net.run_for(1.0)
    held = _bodies(b, 1, "here")
    remote = _bodies(c, 3, "there")
    outs = b.core.want(held + remote, c.peer_id, net.now)
    assert Fetched(done=tuple(held)) in outs
    assert any(isinstance(o, Request) and o.peer == c.peer_id for o in outs)
    net.carry(b, outs)
    net.run_until(lambda: set(remote) <= b.fetched)
    assert all(b.store.has(x) for x in remote)


def test_admission_refuses_strangers_and_floods_and_counts_them() -> None:
    s = Signer.from_seed(b"\x05" * 32)
    me = peer_id_of(s.public)
    core = MeshCore(me, s, MemoryBlockStore(), options=MeshCoreOptions(allow_peers=frozenset({me, "friend"}),
                                                                        gossip_per_s=5.0))
    assert core.receive("stranger", b"\xa0", 0.0) == []
    assert core.serve("stranger", b"", 0.0) == codec.encode({"t": "hpcp/blocks", "v": 1, "blocks": [], "missing": []})
    for _ in range(20):
        core.receive("friend", b"\xff", 0.0)
    rejected = core.statistics(0.0).rejected
    assert rejected["not_member"] == 2
    assert rejected["rate_limited"] == 10  # a burst of twice the rate got through
    assert rejected["bad_gossip"] == 10


def test_token_bucket_refills_with_the_clock_it_is_given() -> None:
    bucket = TokenBucket(10.0)
    assert sum(bucket.allow("p", 0.0) for _ in range(100)) == 20
    assert not bucket.allow("p", 0.05)
    assert bucket.allow("p", 0.2)
    assert bucket.allow("other", 0.0)


def test_options_are_validated_once() -> None:
    for bad in ({"tick_s": 0}, {"max_requests": 0}, {"prefetch_retries": 0}, {"allow_peers": {"a"}}):
        with pytest.raises(ValueError):
            MeshCoreOptions(**bad)


def test_the_module_example_runs() -> None:
    exec(textwrap.dedent(lattice.meshcore.__doc__.split("::\n")[-1]), {})


def test_start_sends_presence_and_queries_every_object() -> None:
    net = CoreNet(3)
    (a,) = net.add_nodes(1, follow=[QUEUE, RESULTS])
    outs = a.core.start(net.now)
    assert all(isinstance(o, Broadcast) for o in outs)
    kinds = sorted(codec.decode_trusted(o.data)["t"] for o in outs)
    assert kinds == ["hpcp/query", "hpcp/query", "meshd/presence"]
