"""Allow-list membership and per-peer rate limits in the mesh layer (in process)."""

from __future__ import annotations

import trio

from lattice import codec, goho, queue
from lattice.blockstore import MemoryBlockStore
from lattice.signing import Signer, peer_id_of
from meshd.p2p.mesh import Mesh, MeshOptions, TokenBucket
from meshd.store.heads import HeadsStore
from meshd.store.objects import ObjectHost

from ._fake_transport import Hub


async def _node(nursery, hub, tmp_path, i, allow=None):
    signer = Signer.from_seed(bytes([i + 40]) * 32)
    pid = peer_id_of(signer.public)
    ropts = None
    if allow is not None:
        ropts = goho.ReplicaOptions(accept_author=lambda pk: peer_id_of(pk) in allow)
    host = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / f"h{i}.db"), signer, replica_options=ropts)
    await nursery.start(host.serve)
    q = host.follow("queue", "m")
    mesh = Mesh(host, hub.transport(pid), roles=["runner"], inventory={},
                options=MeshOptions(announce_interval_s=0.3, presence_interval_s=0.2, tick_s=0.1,
                                    allow_peers=allow))
    await nursery.start(mesh.serve)
    return pid, host, q, mesh


async def _wait(cond, timeout=20):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def test_allow_list_refuses_strangers_and_their_relayed_deltas(tmp_path) -> None:
    hub = Hub()
    members = frozenset(peer_id_of(Signer.from_seed(bytes([i + 40]) * 32).public) for i in (0, 1))
    async with trio.open_nursery() as nursery:
        a = await _node(nursery, hub, tmp_path, 0, allow=members)
        b = await _node(nursery, hub, tmp_path, 1)  # an open node: relays whatever it has
        c = await _node(nursery, hub, tmp_path, 2)  # a stranger
        _, hb, qb, _ = b
        _, hc, qc, _ = c
        await hb.commit(qb, queue.enqueue_ops([codec.cid_of({"member": 1})]))
        await hc.commit(qc, queue.enqueue_ops([codec.cid_of({"stranger": 1})]))
        # B (open) merges both; A (allow-list) gets only the member's work,
        # even though B would relay the stranger's deltas too.
        await _wait(lambda: qb.replica.state.count("available") == 2)
        await _wait(lambda: a[2].replica.state.count("available") == 1)
        await trio.sleep(1.0)
        assert a[2].replica.state.count("available") == 1
        assert a[2].replica.state.contains("available", codec.cid_of({"member": 1}))
        rejected = a[3].statistics().rejected
        # The stranger's own messages are refused at the door...
        assert rejected.get("not_member", 0) > 0, rejected
        # ...and the deltas B relays for it are refused as records whose
        # author is not a member (not merely never sent).
        assert rejected.get("hpcp_BadRecord", 0) > 0, rejected
        nursery.cancel_scope.cancel()


def test_token_bucket_limits_bursts_per_peer() -> None:
    bucket = TokenBucket(10.0)
    allowed = sum(bucket.allow("p") for _ in range(100))
    assert 19 <= allowed <= 21  # burst of twice the rate
    assert bucket.allow("other")  # per peer


async def _sealed_node(nursery, hub, tmp_path, i, secret):
    from meshd.p2p.secret import SealedTransport

    signer = Signer.from_seed(bytes([i + 60]) * 32)
    pid = peer_id_of(signer.public)
    host = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / f"s{i}.db"), signer)
    await nursery.start(host.serve)
    q = host.follow("queue", "s")
    wire = SealedTransport(hub.transport(pid), secret)
    mesh = Mesh(host, wire, roles=["runner"], inventory={},
                options=MeshOptions(announce_interval_s=0.3, presence_interval_s=0.2, tick_s=0.1))
    # No hook back from the wire to the mesh: the pump drains what the sealed transport refused.
    await nursery.start(mesh.serve)
    return host, q, mesh


async def test_a_private_mesh_ignores_peers_without_the_shared_secret(tmp_path) -> None:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        h0, q0, m0 = await _sealed_node(nursery, hub, tmp_path, 0, "correct horse battery staple")
        h1, q1, _ = await _sealed_node(nursery, hub, tmp_path, 1, "correct horse battery staple")
        h2, q2, _ = await _sealed_node(nursery, hub, tmp_path, 2, "a different secret entirely")
        await h0.commit(q0, queue.enqueue_ops([codec.cid_of({"private": 1})]))
        await h2.commit(q2, queue.enqueue_ops([codec.cid_of({"outsider": 1})]))
        await _wait(lambda: q1.replica.state.count("available") == 1)
        await trio.sleep(1.0)
        # Members share their work; the outsider neither gets it nor injects its own.
        assert q1.replica.state.contains("available", codec.cid_of({"private": 1}))
        assert q0.replica.state.count("available") == 1
        assert q2.replica.state.count("available") == 1
        assert m0.statistics().rejected.get("bad_mesh_secret", 0) > 0
        nursery.cancel_scope.cancel()


def test_replayed_and_forged_announcements_are_refused_and_counted() -> None:
    from lattice import hpcp, records

    g = records.make_genesis("queue", "replay")[0]
    signer = Signer.from_seed(b"\x09" * 32)
    src = goho.Replica.empty(g, MemoryBlockStore())
    src.update(queue.enqueue_ops([codec.cid_of({"r": 1})]), signer)
    msg = hpcp.encode_announce(signer, g, src.heads, 1000)
    dst = hpcp.Syncer(goho.Replica.empty(g, MemoryBlockStore()), Signer.generate())
    assert dst.receive_untrusted("p", msg, 10.0)  # first time: wants follow
    assert dst.receive_untrusted("p", msg, 10.0) == []  # the same bytes again
    forged = bytearray(msg)
    forged[-5] ^= 0xFF  # breaks the signature
    dst2 = hpcp.Syncer(goho.Replica.empty(g, MemoryBlockStore()), Signer.generate())
    assert dst2.receive_untrusted("p", bytes(forged), 10.0) == []
    assert dst.statistics().rejected.get("replayed", 0) == 1
    assert sum(dst2.statistics().rejected.values()) == 1
