"""The queue's writing rules (issue 14, finding 1): a peer writes queue
records only in its own name, asks for bounded leases, and concludes only
the tasks it claimed; a replicated task is concluded by a non-claimer only
once enough replicas are done.  Each rule is shown refusing what today's
hostile delta did: take any lease forever, fail any task for good, complete
a verified task without a quorum."""

from __future__ import annotations

import pytest

from lattice import codec, goho, queue, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.errors import BadRecord

from ._queue_fixture import task_cid

HONEST = signing.Signer.from_seed(b"\x11" * 32)
HOSTILE = signing.Signer.from_seed(b"\x66" * 32)
H = signing.peer_id_of(HONEST.public)
X = signing.peer_id_of(HOSTILE.public)
FOREVER = 2**62


def _pair(*, clock=None) -> tuple[goho.Replica, goho.Replica, queue.QueueView]:
    """A writer's replica (no checks: it signs anything) and a reader's
    replica that checks peers' deltas as a daemon's queue does."""
    g, data = records.make_genesis("queue", "rules")
    writer = goho.Replica.empty(g, MemoryBlockStore())
    reader = goho.Replica.empty(g, MemoryBlockStore(), goho.ReplicaOptions(check_delta=queue.check_delta))
    return writer, reader, queue.QueueView(reader, clock=clock)


def _send(writer: goho.Replica, reader: goho.Replica, ops: list, signer: signing.Signer) -> None:
    cid, data = writer.update(ops, signer)
    reader.receive_untrusted(cid, data)


def _forge(writer: goho.Replica, ops: list, signer: signing.Signer) -> tuple:
    """A delta on the writer's heads that the writer does not apply (so the
    next honest delta does not build on a refused one)."""
    parents, height = writer.tip()
    return records.sign_delta(signer, writer.genesis, parents, height, ops, [])


def test_a_record_in_another_peers_name_is_refused_with_its_delta() -> None:
    writer, reader, view = _pair()
    t = task_cid(1)
    _send(writer, reader, queue.enqueue_ops([t]), HONEST)
    for op in (queue.assign_op(t, H, 1_000, 5_000, 1),
               queue.complete_op(t, H, 2_000, codec.cid_of("forged")),
               queue.fail_op(t, H, 2_000, 1, "forged", True)):
        cid, data = _forge(writer, [op], HOSTILE)
        with pytest.raises(BadRecord, match="not its delta's author"):
            reader.receive_untrusted(cid, data)
        assert not reader.store.has(cid)  # refused before it was stored
    assert view.status(t, 3_000).state == queue.AVAILABLE


def test_a_lease_longer_than_the_caps_is_refused() -> None:
    writer, reader, view = _pair()
    t = task_cid(2)
    _send(writer, reader, queue.enqueue_ops([t]), HONEST)
    for op in (queue.assign_op(t, X, 0, FOREVER, 1),  # at 0, until 2^62: held for good
               queue.assign_op(t, X, 1_000, queue.MAX_LEASE_MS + 1, 1)):
        cid, data = _forge(writer, [op], HOSTILE)
        with pytest.raises(BadRecord, match="lease"):
            reader.receive_untrusted(cid, data)
    lease = queue.Assignment(t, X, 1_000, 11_000, 1)
    too_long = queue.renew_op(lease, 5_000 + queue.MAX_RENEWAL_MS + 1, 5_000)
    before_claim = queue.renew_op(lease, 20_000, 500)
    for op in (too_long, before_claim):
        cid, data = _forge(writer, [op], HOSTILE)
        with pytest.raises(BadRecord, match="renewal"):
            reader.receive_untrusted(cid, data)
    # Within the caps, a claim and its renewals are taken.
    _send(writer, reader, [queue.assign_op(t, X, 1_000, queue.MAX_LEASE_MS, 1)], HOSTILE)
    _send(writer, reader, [queue.renew_op(lease, 2_000 + queue.MAX_RENEWAL_MS, 2_000)], HOSTILE)
    assert view.holder(t, 2_000 + queue.MAX_RENEWAL_MS - 1).by == X


def test_a_lease_dated_ahead_of_the_readers_clock_lasts_no_longer_than_its_length() -> None:
    now = [1_000_000]
    writer, reader, view = _pair(clock=lambda: now[0])
    t = task_cid(3)
    _send(writer, reader, queue.enqueue_ops([t]), HONEST)
    # Dated a day ahead, with a 10 s lease: it would hold the task for a day.
    ahead = now[0] + 86_400_000
    _send(writer, reader, [queue.assign_op(t, X, ahead, 10_000, 1)], HOSTILE)
    assert view.holder(t, now[0] + 9_000) is not None
    assert view.holder(t, now[0] + 10_001) is None
    assert view.next(now[0] + 10_001) == [t]


def test_only_a_claimer_concludes_a_plain_task() -> None:
    writer, reader, view = _pair()
    t, u = task_cid(4), task_cid(5)
    _send(writer, reader, queue.enqueue_ops([t, u]), HONEST)
    _send(writer, reader, [queue.assign_op(t, H, 1_000, 10_000, 1)], HONEST)
    # The hostile peer never claimed t or u: its conclusions do not count.
    _send(writer, reader, [queue.complete_op(t, X, 1_500, codec.cid_of("forged")),
                           queue.fail_op(u, X, 1_500, 1, "forged", True)], HOSTILE)
    assert view.status(t, 2_000).state == queue.ASSIGNED
    assert view.status(u, 2_000).state == queue.AVAILABLE
    assert view.failures(u) == 0
    # A failure names the writer's own attempt: X claims attempt 1 of v, so
    # a failure of attempt 7 does not count, one of attempt 1 does.
    v = task_cid(8)
    _send(writer, reader, queue.enqueue_ops([v]), HONEST)
    _send(writer, reader, [queue.assign_op(v, X, 2_000, 10_000, 1)], HOSTILE)
    _send(writer, reader, [queue.fail_op(v, X, 2_100, 7, "not my attempt", True)], HOSTILE)
    assert view.status(v, 2_200).state == queue.ASSIGNED
    _send(writer, reader, [queue.fail_op(v, X, 2_200, 1, "exit status 1", False)], HOSTILE)
    assert view.failures(v) == 1
    assert view.status(u, 2_200).state == queue.AVAILABLE
    # The honest claimer completes t.
    _send(writer, reader, [queue.complete_op(t, H, 3_000, codec.cid_of("ok"))], HONEST)
    assert view.status(t, 3_000).state == queue.COMPLETED


def test_a_replicated_task_completes_without_a_claim_only_on_a_quorum_of_replicas() -> None:
    writer, reader, view = _pair()
    runners = [signing.Signer.from_seed(bytes([0x20 + i]) * 32) for i in range(3)]
    ids = [signing.peer_id_of(s.public) for s in runners]
    t = task_cid(6)
    _send(writer, reader, [queue.replicate_op(t, 3, 2)] + queue.enqueue_ops([t]), HONEST)
    results = [codec.cid_of({"r": i}) for i in range(3)]
    # A verifier (no claim) completing before any replica is done: held back.
    verdict = queue.complete_op(t, H, 5_000, results[0])
    _send(writer, reader, [verdict], HONEST)
    assert view.status(t, 5_000).state != queue.COMPLETED
    # A completion naming a result no replica produced never counts.
    _send(writer, reader, [queue.complete_op(t, X, 5_000, codec.cid_of("made up"))], HOSTILE)
    for i in range(2):
        _send(writer, reader, [queue.assign_op(t, ids[i], 1_000, 10_000, 1),
                               queue.replica_done_op(t, ids[i], 2_000, results[i])], runners[i])
    # Two of three replicas are done: the quorum; the held completion now counts.
    st = view.status(t, 6_000)
    assert st.state == queue.COMPLETED
    assert [c["by"] for c in st.completions] == [H]


def test_a_replicated_task_fails_without_a_claim_only_once_every_replica_is_done() -> None:
    writer, reader, view = _pair()
    runners = [signing.Signer.from_seed(bytes([0x30 + i]) * 32) for i in range(2)]
    ids = [signing.peer_id_of(s.public) for s in runners]
    t = task_cid(7)
    _send(writer, reader, [queue.replicate_op(t, 2, 2)] + queue.enqueue_ops([t]), HONEST)
    _send(writer, reader, [queue.fail_op(t, X, 1_000, 0, "no quorum", True)], HOSTILE)
    assert view.status(t, 1_000).state == queue.AVAILABLE
    _send(writer, reader, [queue.assign_op(t, ids[0], 1_000, 10_000, 1),
                           queue.replica_done_op(t, ids[0], 2_000, codec.cid_of("a"))], runners[0])
    assert view.status(t, 2_000).state != queue.FAILED
    _send(writer, reader, [queue.assign_op(t, ids[1], 1_000, 10_000, 1),
                           queue.replica_done_op(t, ids[1], 2_000, codec.cid_of("b"))], runners[1])
    assert view.status(t, 3_000).state == queue.FAILED
