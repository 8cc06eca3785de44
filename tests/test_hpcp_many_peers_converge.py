"""50 replicas on a lossy, duplicating, reordering, partitioned network converge."""

from __future__ import annotations

import pytest

from lattice import codec, queue

from ._sim import SimNet, new_genesis


def _write_some(net: SimNet, names, per_peer: int, tag: str) -> None:
    for n in names:
        p = net.peers[n]
        for i in range(per_peer):
            task = codec.cid_of({"task": f"{tag}-{n}-{i}"})
            p.replica.update(queue.enqueue_ops([task]), p.signer)
        net.send(n, [])  # nothing queued; announcements come from anti-entropy


@pytest.mark.parametrize("seed", [1, 2])
def test_fifty_replicas_converge_with_loss_duplicates_reorder_and_partition(seed: int) -> None:
    net = SimNet(seed=seed, drop=0.2, duplicate=0.1, max_delay=3)
    peers = net.add_peers(50, new_genesis(f"s{seed}"))
    names = [p.name for p in peers]
    _write_some(net, names, 2, "a")
    net.run_until(net.converged)
    assert net.peers[names[0]].replica.state.count("available") == 100

    left, right = set(names[:25]), set(names[25:])
    net.partition(left, right)
    _write_some(net, names[:5], 3, "left")
    _write_some(net, names[30:35], 3, "right")
    net.run_until(lambda: net.converged(left) and net.converged(right))
    # Both sides kept working while cut off, and have not seen each other.
    assert net.peers[names[0]].replica.state.count("available") == 115
    assert net.peers[names[49]].replica.state.count("available") == 115
    assert not net.converged()

    net.heal()
    net.run_until(net.converged)
    assert net.peers[names[7]].replica.state.count("available") == 130
    assert net.dropped > 0 and net.delivered > 0


def test_concurrent_assignments_pick_the_same_winner_everywhere() -> None:
    net = SimNet(seed=7, drop=0.1, duplicate=0.1, max_delay=2)
    peers = net.add_peers(5, new_genesis("winner"))
    task = codec.cid_of({"task": "contested"})
    peers[0].replica.update(queue.enqueue_ops([task]), peers[0].signer)
    net.run_until(net.converged)
    # Every peer claims the task before hearing from the others.
    for i, p in enumerate(peers):
        p.replica.update([queue.assign_op(task, p.name, 1_000 + (i * 7) % 3, 30_000, 1)], p.signer)
    net.run_until(net.converged)
    views = [queue.QueueView(p.replica) for p in peers]
    holders = {v.holder(task, 2_000) for v in views}
    assert len(holders) == 1
    holder = holders.pop()
    assert holder is not None and holder.at == 1_000


def test_answers_capped_by_size_are_completed_by_asking_again() -> None:
    from lattice import hpcp as _h

    net = SimNet(seed=11)
    peers = net.add_peers(2, new_genesis("capped"), _h.SyncOptions(want_timeout_s=1000.0, max_blocks_bytes=600))
    a, b = peers
    for i in range(30):
        a.replica.update(queue.enqueue_ops([codec.cid_of({"big": i, "pad": "x" * 200})]), a.signer)
    net.send(a.name, [_h.Outgoing(None, a.syncer.announce(net.now))])
    # With a huge want timeout, only re-asking on a partial answer can finish.
    for _ in range(200):
        if net.converged():
            break
        net.step()
    assert net.converged()
    assert b.replica.state.count("available") == 30


def test_an_unreachable_sole_provider_is_backed_off_not_hammered() -> None:
    from lattice import hpcp as _h

    net = SimNet(seed=13)
    a, b = net.add_peers(2, new_genesis("backoff"))
    a.replica.update(queue.enqueue_ops([codec.cid_of({"x": 1})]), a.signer)
    wants = b.syncer.receive_untrusted(a.name, a.syncer.announce(1.0), 1.0)
    assert [w.to for w in wants] == [a.name]
    # The transport could not reach A: no immediate re-ask of the only provider...
    assert b.syncer.request_failed(a.name, 1.0) == []
    assert b.syncer.request_failed(a.name, 1.0) == []
    # ...but it is asked again once the backoff has passed.
    assert [w.to for w in b.syncer.tick(1.0 + 1.1)] == [a.name]
    assert isinstance(wants[0], _h.Outgoing)
