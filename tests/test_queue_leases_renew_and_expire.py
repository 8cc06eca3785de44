"""Leases in the queue state machine: a renewal extends one attempt's lease
without changing who wins; an attempt that is not renewed expires, and its
task is offered again; per-runner completion counts weigh the claim planner."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec, queue, signing

from ._queue_fixture import fresh_queue, task_cid

A = signing.Signer.from_seed(b"\x01" * 32)
B = signing.Signer.from_seed(b"\x02" * 32)


_queue = fresh_queue
_task = task_cid


def test_a_renewed_lease_outlives_its_first_until_and_keeps_its_winner() -> None:
    rep, view = _queue()
    t = _task(1)
    rep.update(queue.enqueue_ops([t]), A)
    rep.update([queue.assign_op(t, "a", 1_000, 1_000, 1)], A)
    lease = view.holder(t, 1_500)
    assert lease is not None and lease.until == 2_000
    rep.update([queue.renew_op(lease, 5_000, 1_500)], A)
    held = view.holder(t, 4_000)
    assert held is not None and (held.by, held.at, held.until, held.n) == ("a", 1_000, 5_000, 1)
    assert view.next(4_000, limit=5) == []
    st_ = view.status(t, 4_000)
    assert st_ is not None and st_.attempts == 1 and len(st_.assignments) == 1  # one attempt, one lease
    assert view.next(5_000, limit=5) == [t]  # not renewed again: expired, offered again
    assert view.next_attempt(t) == 2


def test_a_late_claim_does_not_beat_a_renewed_earlier_one() -> None:
    rep, view = _queue()
    t = _task(2)
    rep.update(queue.enqueue_ops([t]), A)
    rep.update([queue.assign_op(t, "a", 1_000, 1_000, 1)], A)
    rep.update([queue.assign_op(t, "b", 1_500, 1_000, 1)], B)  # b claimed before a's renewal arrived
    rep.update([queue.renew_op(view.holder(t, 1_600), 9_000, 1_600)], A)
    assert view.holder(t, 1_600).by == "a"
    assert view.holder(t, 3_000).by == "a"  # b's lease lapsed, a's renewal holds


@settings(max_examples=100, deadline=None)
@given(untils=st.lists(st.integers(1_001, 100_000), min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_renewals_merge_to_the_latest_until_in_any_order(untils, order) -> None:
    """Replicas that receive an attempt's renewals in any order agree on its lease."""
    t = _task(3)
    ops = [queue.assign_op(t, "a", 1_000, u - 1_000, 1) for u in untils]
    leases = []
    for _ in range(2):
        rep, view = _queue()
        rep.update(queue.enqueue_ops([t]), A)
        order.shuffle(ops)
        for op in ops:
            rep.update([op], A)
        st_ = view.status(t, 0)
        leases.append([(a.at, a.until, a.n) for a in st_.assignments])
    assert leases[0] == leases[1] == [(1_000, max(untils), 1)]


def test_completions_are_counted_per_runner() -> None:
    rep, view = _queue()
    ts = [_task(i) for i in range(4)]
    rep.update(queue.enqueue_ops(ts), A)
    rec = codec.cid_of("result")
    rep.update([queue.assign_op(ts[0], "a", 0, 1_000, 1), queue.assign_op(ts[1], "a", 0, 1_000, 1),
                queue.assign_op(ts[2], "b", 0, 1_000, 1)], A)
    rep.update([queue.complete_op(ts[0], "a", 1, rec), queue.complete_op(ts[1], "a", 1, rec),
                queue.replica_done_op(ts[2], "b", 1, rec)], A)
    assert (view.completed_by("a"), view.completed_by("b"), view.completed_by("c")) == (2, 1, 0)
