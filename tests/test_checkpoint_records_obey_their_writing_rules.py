"""Checkpoint records (issue 16, item 4): the runner of an attempt links its
engine's saved state from the task's status in the queue GOHO.

The rules of docs/protocol.md, *The queue state machine*: a checkpoint in
another peer's name, or announcing more than 256 MiB, is refused with its
delta; one by a peer that never claimed that attempt is held until the
claim arrives (so arrival order does not matter) and never counts without
it; the latest is the greatest ``(n, at, by)``, the same on every replica.
"""

from __future__ import annotations

import pytest

from lattice import checkpoints, codec, goho, queue, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, RAW
from lattice.errors import BadRecord

from ._queue_fixture import task_cid

ALICE = signing.Signer.from_seed(b"\x21" * 32)
BOB = signing.Signer.from_seed(b"\x22" * 32)
A = signing.peer_id_of(ALICE.public)
B = signing.peer_id_of(BOB.public)


def _state(text: str) -> CID:
    return CID.for_block(RAW, text.encode())


def _pair() -> tuple[goho.Replica, goho.Replica, checkpoints.CheckpointView]:
    g, _ = records.make_genesis("queue", "checkpoints")
    writer = goho.Replica.empty(g, MemoryBlockStore())
    reader = goho.Replica.empty(g, MemoryBlockStore(), goho.ReplicaOptions(check_delta=queue.check_delta))
    return writer, reader, checkpoints.CheckpointView(reader, queue.QueueView(reader))


def _send(writer: goho.Replica, reader: goho.Replica, ops: list, signer: signing.Signer) -> None:
    cid, data = writer.update(ops, signer)
    reader.receive_untrusted(cid, data)


def _forge(writer: goho.Replica, ops: list, signer: signing.Signer) -> tuple:
    parents, height = writer.tip()
    return records.sign_delta(signer, writer.genesis, parents, height, ops, [])


def test_a_checkpoint_in_another_peers_name_or_too_large_is_refused_with_its_delta() -> None:
    writer, reader, view = _pair()
    t = task_cid(1)
    _send(writer, reader, queue.enqueue_ops([t]) + [queue.assign_op(t, A, 1_000, 5_000, 1)], ALICE)
    forged = checkpoints.checkpoint_op(t, A, 2_000, 1, _state("forged"), 6)
    huge = checkpoints.checkpoint_op(t, B, 2_000, 1, _state("huge"), checkpoints.MAX_CHECKPOINT_BYTES + 1)
    for op, signer, match in ((forged, BOB, "not its delta's author"), (huge, BOB, "checkpoint of")):
        cid, data = _forge(writer, [op], signer)
        with pytest.raises(BadRecord, match=match):
            reader.receive_untrusted(cid, data)
        assert not reader.store.has(cid)
    assert view.of(t) == []


def test_a_checkpoint_counts_only_once_its_writer_claimed_that_attempt() -> None:
    writer, reader, view = _pair()
    t = task_cid(2)
    _send(writer, reader, queue.enqueue_ops([t]) + [queue.assign_op(t, A, 1_000, 5_000, 1)], ALICE)
    # Bob never claimed attempt 1: his checkpoint would plant a state for the next runner.
    _send(writer, reader, [checkpoints.checkpoint_op(t, B, 2_000, 2, _state("bob's"), 5)], BOB)
    assert view.latest(t) is None
    _send(writer, reader, [checkpoints.checkpoint_op(t, A, 3_000, 1, _state("alice's"), 7)], ALICE)
    assert view.latest(t).by == A
    # Bob claims attempt 2 (after Alice released hers): his earlier record now counts, and is the latest.
    _send(writer, reader, [queue.fail_op(t, A, 4_000, 1, "vacated: test", False, void=True)], ALICE)
    _send(writer, reader, [queue.assign_op(t, B, 4_100, 5_000, 2)], BOB)
    latest = view.latest(t)
    assert (latest.by, latest.n, latest.state) == (B, 2, _state("bob's"))
    assert [c.n for c in view.of(t)] == [1, 2]


def test_the_latest_is_the_greatest_attempt_then_time_whatever_the_arrival_order() -> None:
    t = task_cid(3)
    ops = [
        [queue.assign_op(t, A, 1_000, 5_000, 1)],
        [checkpoints.checkpoint_op(t, A, 9_000, 1, _state("a, clock ahead"), 14)],  # attempt 1, late clock
        [checkpoints.checkpoint_op(t, A, 2_000, 1, _state("a, early"), 8)],
        [queue.assign_op(t, A, 6_000, 5_000, 2)],
        [checkpoints.checkpoint_op(t, A, 7_000, 2, _state("a, resumed"), 10)],
    ]
    seen = []
    for order in (ops, list(reversed(ops))):
        g, _ = records.make_genesis("queue", "order")
        writer = goho.Replica.empty(g, MemoryBlockStore())
        deltas = [writer.update(queue.enqueue_ops([t]), ALICE)] + [writer.update(o, ALICE) for o in ops]
        reader = goho.Replica.empty(g, MemoryBlockStore(), goho.ReplicaOptions(check_delta=queue.check_delta))
        view = checkpoints.CheckpointView(reader, queue.QueueView(reader))
        for cid, data in (deltas if order is ops else [deltas[0], *reversed(deltas[1:])]):
            reader.receive_untrusted(cid, data)
        seen.append(view.latest(t))
    assert seen[0] == seen[1] and seen[0].state == _state("a, resumed")


def test_a_checkpoint_record_of_the_wrong_shape_is_ignored() -> None:
    writer, reader, view = _pair()
    t = task_cid(4)
    _send(writer, reader, queue.enqueue_ops([t]) + [queue.assign_op(t, A, 1_000, 5_000, 1)], ALICE)
    bad = checkpoints.checkpoint_op(t, A, 2_000, 1, _state("x"), 1)
    bad[2]["state"] = "not a link"
    _send(writer, reader, [bad, ["add", checkpoints.CHECKPOINTS, codec.cid_of("junk")]], ALICE)
    assert view.of(t) == []


def test_a_retry_starts_over_without_the_earlier_generations_checkpoints() -> None:
    from lattice import lifecycle

    writer, reader, view = _pair()
    t = task_cid(5)
    _send(writer, reader, queue.enqueue_ops([t]) + [queue.assign_op(t, A, 1_000, 5_000, 1)], ALICE)
    _send(writer, reader, [checkpoints.checkpoint_op(t, A, 2_000, 1, _state("gen 0"), 5)], ALICE)
    _send(writer, reader, [queue.fail_op(t, A, 3_000, 1, "crashed", True)], ALICE)
    assert view.latest(t).state == _state("gen 0")
    _send(writer, reader, [lifecycle.retry_op(t, A, 4_000, 1, 1)], ALICE)
    assert view.latest(t) is None
    _send(writer, reader, [queue.assign_op(t, B, 5_000, 5_000, 2)], BOB)
    _send(writer, reader, [checkpoints.checkpoint_op(t, B, 6_000, 2, _state("gen 1"), 5)], BOB)
    assert view.latest(t).state == _state("gen 1")
