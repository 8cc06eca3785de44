"""HPCP over the mesh layer: several nodes' object hosts converge, and linked
blocks (task bodies, outputs) follow the DAG — in one trio run, no sockets."""

from __future__ import annotations

import pytest
import trio

from lattice import codec, queue, records
from lattice.blockstore import MemoryBlockStore
from lattice.signing import Signer
from meshd.p2p.identity import peer_id_from_public_key
from meshd.p2p.mesh import Mesh, MeshOptions, rendezvous_rank
from meshd.store.heads import HeadsStore
from meshd.store.objects import ObjectHost

from ._fake_transport import Hub


async def _node(nursery, hub, tmp_path, i):
    signer = Signer.from_seed(bytes([i + 1]) * 32)
    pid = peer_id_from_public_key(signer.public)
    heads = HeadsStore.open(tmp_path / f"heads{i}.db")
    host = ObjectHost(MemoryBlockStore(), heads, signer)
    await nursery.start(host.serve)
    q = host.follow("queue", "t")
    mesh = Mesh(host, hub.transport(pid), roles=["runner"], inventory={"os": "linux"},
                options=MeshOptions(announce_interval_s=0.5, presence_interval_s=0.2, tick_s=0.1))
    await nursery.start(mesh.serve)
    return host, q, mesh


async def _wait(cond, timeout=20):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def test_three_nodes_converge_and_prefetch_task_bodies(tmp_path) -> None:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        nodes = [await _node(nursery, hub, tmp_path, i) for i in range(3)]
        (h0, q0, m0), (h1, q1, m1), (h2, q2, m2) = nodes
        # Node 0 enqueues 50 tasks whose bodies live only in its store.
        cids = []
        for i in range(50):
            cid, data = codec.encode_block({"t": "meshd/task", "v": 1, "input": {"value": i}})
            h0.store.put(cid, data)
            cids.append(cid)
        await h0.commit(q0, queue.enqueue_ops(cids))
        await _wait(lambda: q1.replica.state.count("available") == 50 and q2.replica.state.count("available") == 50)
        # The bodies followed the queue, without anyone asking for them by hand.
        await _wait(lambda: all(h1.store.has(c) and h2.store.has(c) for c in cids))
        # Concurrent writes on two nodes merge everywhere.
        await h1.commit(q1, [queue.assign_op(cids[0], "p1", 1, 10_000, 1)])
        await h2.commit(q2, [queue.assign_op(cids[1], "p2", 1, 10_000, 1)])
        await _wait(lambda: q0.replica.state == q1.replica.state == q2.replica.state and q0.replica.state.count("assigned") == 2)
        assert q0.replica.heads == q1.replica.heads == q2.replica.heads
        # Presence: each node sees the other two as live runners.
        await _wait(lambda: len(m0.live_runners()) == 3)
        nursery.cancel_scope.cancel()


async def test_a_node_that_was_down_catches_up(tmp_path) -> None:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        (h0, q0, _), (h1, q1, _) = [await _node(nursery, hub, tmp_path, i) for i in range(2)]
        hub.down.add(next(p for p in hub.nodes if p != next(iter(hub.nodes))))
        for i in range(5):
            await h0.commit(q0, queue.enqueue_ops([codec.cid_of({"i": i})]))
        await trio.sleep(0.3)
        assert q1.replica.state.count("available") == 0
        hub.down.clear()
        await _wait(lambda: q1.replica.state.count("available") == 5)
        nursery.cancel_scope.cancel()


def test_rendezvous_rank_is_deterministic_and_spreads_tasks() -> None:
    peers = ["a", "b", "c"]
    tasks = [codec.cid_of({"i": i}) for i in range(300)]
    firsts = [rendezvous_rank(t, peers)[0] for t in tasks]
    assert firsts == [rendezvous_rank(t, list(reversed(peers)))[0] for t in tasks]
    for p in peers:
        assert 60 < firsts.count(p) < 140


async def test_rejections_are_summed_over_every_object(tmp_path) -> None:
    # Each object's syncer counts what it refused; the mesh's statistics must
    # add them up (it used to copy each syncer's count over the previous one).
    signer = Signer.from_seed(b"\x09" * 32)
    heads = HeadsStore.open(tmp_path / "heads.db")
    host = ObjectHost(MemoryBlockStore(), heads, signer)
    mesh = Mesh(host, Hub().transport(peer_id_from_public_key(signer.public)), roles=["runner"],
                inventory={"os": "linux"})
    for name in ("a", "b", "c"):
        syncer = mesh._syncer(host.follow("dataset", name))
        assert syncer.receive_untrusted("12D3KooWpeer", b"\xff", 0.0) == []
    assert mesh.statistics().rejected["hpcp_BadEncoding"] == 3
    heads.close()


async def test_a_prefetch_nobody_answered_is_retried_until_the_blocks_arrive(tmp_path) -> None:
    # The only holder of the task bodies fails the first requests for them
    # (as a peer whose connection is still settling does): the bodies must
    # still arrive, since a runner waits for a body through prefetch only.
    hub = Hub()
    async with trio.open_nursery() as nursery:
        (h0, q0, _), (h1, q1, _) = [await _node(nursery, hub, tmp_path, i) for i in range(2)]
        cid, data = codec.encode_block({"t": "meshd/task", "v": 1, "input": {"value": "retry"}})
        h0.store.put(cid, data)
        refused = []

        def refuse(src: str, dst: str, payload: bytes) -> bool:
            if cid.raw in payload and len(refused) < 2:
                refused.append(dst)
                return True
            return False

        hub.refuse = refuse
        await h0.commit(q0, queue.enqueue_ops([cid]))
        await _wait(lambda: q1.replica.state.count("available") == 1)
        await _wait(lambda: h1.store.has(cid), timeout=30)
        assert len(refused) == 2
        nursery.cancel_scope.cancel()
