"""Cancel and retry as queue records (issue 17 item 6; lattice/lifecycle.py):
a cancel ends a task's current generation and wins over everything but a
completion; a retry starts a new generation with fresh attempts; a cancel in
another peer's name is refused with its delta and a banned peer's cancel does
not count; and the state is a function of the records, not of the order they
arrive in (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec, goho, lifecycle, queue, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.errors import BadRecord

from ._queue_fixture import fresh_queue, task_cid

ME = signing.Signer.from_seed(b"\x11" * 32)
OTHER = signing.Signer.from_seed(b"\x66" * 32)
A = signing.peer_id_of(ME.public)
B = signing.peer_id_of(OTHER.public)


def _write(rep: goho.Replica, ops: list) -> None:
    rep.update(ops, ME)


def test_a_cancel_ends_a_running_task_and_nothing_claims_it_afterwards() -> None:
    rep, view = fresh_queue()
    t = task_cid(1)
    _write(rep, queue.enqueue_ops([t]) + [queue.assign_op(t, B, 1_000, 10_000, 1)])
    assert view.status(t, 2_000).state == queue.ASSIGNED
    _write(rep, [lifecycle.cancel_op(t, A, 2_000, 0, "not needed")])
    st_ = view.status(t, 2_000)
    assert st_.state == queue.CANCELLED
    assert [c["reason"] for c in st_.cancels] == ["not needed"]
    assert view.holds(t, B, 2_000) is None  # the runner's claim no longer holds it
    assert view.next(20_000) == []  # nor is it offered once the lease expires
    assert view.counts(20_000)[queue.CANCELLED] == 1
    assert view.counts(20_000)[queue.AVAILABLE] == 0


def test_a_completion_wins_over_a_cancel() -> None:
    rep, view = fresh_queue()
    t = task_cid(2)
    _write(rep, queue.enqueue_ops([t]) + [queue.assign_op(t, A, 1_000, 10_000, 1),
                                          lifecycle.cancel_op(t, A, 2_000, 0)])
    _write(rep, [queue.complete_op(t, A, 2_500, codec.cid_of("r"))])
    assert view.status(t, 3_000).state == queue.COMPLETED
    assert view.counts(3_000)[queue.COMPLETED] == 1 and view.counts(3_000)[queue.CANCELLED] == 0


def test_a_retry_reopens_a_failed_task_with_fresh_attempts() -> None:
    rep, view = fresh_queue()
    t = task_cid(3)
    _write(rep, queue.enqueue_ops([t]))
    for n in (1, 2):
        _write(rep, [queue.assign_op(t, A, n * 1_000, 10_000, n),
                     queue.fail_op(t, A, n * 1_000 + 500, n, "boom", n == 2)])
    assert view.status(t, 3_000).state == queue.FAILED
    assert view.failures(t) == 2
    fed = len(view.tasks_since(0))
    _write(rep, [lifecycle.retry_op(t, A, 4_000, 1, view.next_attempt(t) - 1)])
    st_ = view.status(t, 4_000)
    assert st_.state == queue.AVAILABLE and st_.generation == 1
    assert view.failures(t) == 0  # max_attempts counts again from zero
    assert view.next_attempt(t) == 3
    assert view.next(4_000) == [t]
    assert view.tasks_since(fed) == [t]  # fed again to indexes that dropped it
    _write(rep, [queue.assign_op(t, B, 5_000, 10_000, 3)])
    assert view.status(t, 5_000).state == queue.ASSIGNED
    _write(rep, [queue.complete_op(t, B, 6_000, codec.cid_of("ok"))])
    assert view.status(t, 6_000).state == queue.COMPLETED
    assert view.counts(6_000) == {"available": 0, "assigned": 0, "completed": 1, "failed": 0, "cancelled": 0,
                                  "total": 1}


def test_a_cancel_made_before_a_retry_stops_counting_and_one_made_after_counts() -> None:
    rep, view = fresh_queue()
    t = task_cid(4)
    _write(rep, queue.enqueue_ops([t]) + [lifecycle.cancel_op(t, A, 1_000, 0)])
    assert view.status(t, 1_000).state == queue.CANCELLED
    _write(rep, [lifecycle.retry_op(t, A, 2_000, 1, 0)])
    assert view.status(t, 2_000).state == queue.AVAILABLE
    # A peer that had not seen the retry cancels generation 0 again: no effect.
    _write(rep, [lifecycle.cancel_op(t, B, 2_100, 0)])
    assert view.status(t, 2_200).state == queue.AVAILABLE
    _write(rep, [lifecycle.cancel_op(t, A, 3_000, 1)])
    assert view.status(t, 3_000).state == queue.CANCELLED


def test_a_lease_from_before_a_retry_holds_nothing() -> None:
    rep, view = fresh_queue()
    t = task_cid(5)
    _write(rep, queue.enqueue_ops([t]) + [queue.assign_op(t, B, 1_000, 60_000, 1),
                                          lifecycle.cancel_op(t, A, 2_000, 0)])
    _write(rep, [lifecycle.retry_op(t, A, 3_000, 1, 1)])
    assert view.status(t, 3_000).state == queue.AVAILABLE  # B's lease is history
    assert view.holder(t, 3_000) is None


def _checked_pair() -> tuple[goho.Replica, goho.Replica, queue.QueueView]:
    g, _ = records.make_genesis("queue", "lifecycle")
    writer = goho.Replica.empty(g, MemoryBlockStore())
    reader = goho.Replica.empty(g, MemoryBlockStore(), goho.ReplicaOptions(check_delta=queue.check_delta))
    return writer, reader, queue.QueueView(reader)


def test_a_cancel_or_retry_in_another_peers_name_is_refused_with_its_delta() -> None:
    writer, reader, view = _checked_pair()
    t = task_cid(6)
    cid, data = writer.update(queue.enqueue_ops([t]), ME)
    reader.receive_untrusted(cid, data)
    parents, height = writer.tip()
    for op in (lifecycle.cancel_op(t, A, 1_000, 0, "forged"), lifecycle.retry_op(t, A, 1_000, 1, 5)):
        fcid, fdata = records.sign_delta(OTHER, writer.genesis, parents, height, [op], [])
        with pytest.raises(BadRecord, match="not its delta's author"):
            reader.receive_untrusted(fcid, fdata)
        assert not reader.store.has(fcid)
    assert view.status(t, 2_000).state == queue.AVAILABLE
    # Under its own name the same peer's cancel is taken.
    cid, data = writer.update([lifecycle.cancel_op(t, B, 1_000, 0)], OTHER)
    reader.receive_untrusted(cid, data)
    assert view.status(t, 2_000).state == queue.CANCELLED


def test_a_banned_peers_cancel_does_not_count() -> None:
    g, _ = records.make_genesis("queue", "banned")
    rep = goho.Replica.empty(g, MemoryBlockStore())
    view = queue.QueueView(rep, banned=lambda peer: peer == B)
    t = task_cid(7)
    rep.update(queue.enqueue_ops([t]), ME)
    rep.update([lifecycle.cancel_op(t, B, 1_000, 0)], OTHER)
    assert view.status(t, 1_000).state == queue.AVAILABLE
    assert view.next(1_000) == [t]


def test_records_of_the_wrong_shape_change_nothing() -> None:
    rep, view = fresh_queue()
    t = task_cid(8)
    _write(rep, queue.enqueue_ops([t]))
    _write(rep, [["add", lifecycle.CANCELLED, {"task": t, "by": A, "at": 1, "g": -1}],
                 ["add", lifecycle.CANCELLED, {"task": t, "by": A, "at": 1, "g": 0, "reason": 5}],
                 ["add", lifecycle.RETRIED, {"task": t, "by": A, "at": 1, "g": 0, "n": 3}],
                 ["add", lifecycle.RETRIED, "nonsense"]])
    st_ = view.status(t, 2)
    assert st_.state == queue.AVAILABLE and st_.generation == 0


# -- order independence ---------------------------------------------------------------

T = task_cid(100)
_RECORDS = [
    queue.assign_op(T, A, 1_000, 10_000, 1),
    queue.fail_op(T, A, 1_500, 1, "boom", False),
    queue.assign_op(T, B, 2_000, 10_000, 2),
    queue.fail_op(T, B, 2_500, 2, "boom", True),
    lifecycle.cancel_op(T, A, 3_000, 0),
    lifecycle.retry_op(T, A, 4_000, 1, 2),
    lifecycle.retry_op(T, B, 4_000, 1, 1),
    queue.assign_op(T, A, 5_000, 10_000, 3),
    queue.fail_op(T, A, 5_500, 3, "boom", True),
    lifecycle.cancel_op(T, B, 6_000, 1),
    lifecycle.retry_op(T, A, 7_000, 2, 3),
    queue.assign_op(T, B, 8_000, 10_000, 4),
    queue.complete_op(T, B, 9_000, codec.cid_of("done")),
]


def _read(view: queue.QueueView, now: int) -> tuple:
    s = view.status(T, now)
    return (s.state, s.generation, None if s.holder is None else s.holder.n, view.failures(T),
            view.next_attempt(T), tuple(sorted(view.counts(now).items())), view.next(now) == [T])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(range(len(_RECORDS))), unique=True, min_size=1),
       st.randoms(use_true_random=False), st.sampled_from([3_000, 8_500, 30_000]))
def test_the_state_does_not_depend_on_the_order_records_arrive_in(chosen: list[int], rnd, now: int) -> None:
    ops = [_RECORDS[i] for i in chosen]
    # One replica applies the records in the order chosen, with a view that
    # follows them as they arrive; another in a shuffled order, viewed once
    # at the end.
    rep1, view1 = fresh_queue()
    rep1.update(queue.enqueue_ops([T]), ME)
    for op in ops:
        rep1.update([op], ME)
        view1.status(T, now)  # the view follows each arrival
    shuffled = list(ops)
    rnd.shuffle(shuffled)
    g = rep1.genesis
    rep2 = goho.Replica.empty(g, MemoryBlockStore())
    for op in shuffled:
        rep2.update([op], ME)
    rep2.update(queue.enqueue_ops([T]), ME)
    view2 = queue.QueueView(rep2)
    assert _read(view1, now) == _read(view2, now)
