"""How a runner steals (lattice.planner): from the newest end of the queue,
never sooner than peers' claims take to arrive, and from an idle owner only
once that owner has left a task unclaimed for a grace period."""

from __future__ import annotations

from lattice import queue, signing
from lattice.claims import TaskFacts, weighted_rank
from lattice.planner import (
    IDLE_OWNER_GRACE_S,
    MAX_LAG_S,
    STEAL_POOL,
    Candidate,
    ClaimPlanner,
    Fit,
)

from ._queue_fixture import fresh_queue, task_cid

SIGNER = signing.Signer.from_seed(b"\x03" * 32)
OK = Fit(True)


def _mesh(n_tasks: int, *, owner_free: int = 0, owner_has_them: bool = True):
    """A queue of ``n_tasks`` that all rank ``owner`` first; the planner is the other runner's.

    ``owner_has_them``: the owner claimed a task enqueued just before them in
    the same delta, which shows it has them (``QueueView.reach``)."""
    rep, view = fresh_queue()
    owner, thief = "owner", "thief"
    tasks = [t for t in (task_cid(i) for i in range(20 * n_tasks))
             if weighted_rank(t, {owner: 1, thief: 1})[0] == owner][:n_tasks]
    if owner_has_them:  # it claimed the first task of the same batch: it has the rest
        first = task_cid(10**6)
        rep.update(queue.enqueue_ops([first, *tasks]), SIGNER)
        rep.update([queue.assign_op(first, owner, 0, 10**9, 1)], SIGNER)
    else:
        rep.update(queue.enqueue_ops(tasks), SIGNER)
    cands = {owner: Candidate(1, {"free": owner_free}), thief: Candidate(1, {"free": 1})}
    return rep, view, tasks, ClaimPlanner(thief, defer_s=0.5), cands


def _plan(planner: ClaimPlanner, view: queue.QueueView, cands: dict, clock: float, free: int = 1) -> list:
    return planner.plan(view, 0, free, clock=clock, cands=cands, fit=lambda t: OK, facts=lambda t: TaskFacts())


def test_a_thief_takes_the_newest_tasks_of_a_busy_owner() -> None:
    _, view, tasks, planner, cands = _mesh(200)
    assert _plan(planner, view, cands, 0.0, free=4) == []  # first sight: the deferral starts
    planner.observe([("owner", 0, None)], 0)  # the owner is heard working since
    stolen = _plan(planner, view, cands, 10.0, free=4)
    # Chosen among the newest STEAL_POOL per free slot, not the oldest.
    assert len(stolen) == 4 and set(stolen) <= set(tasks[-STEAL_POOL * 4:])
    assert all(planner.settle_ms(t) > 0 for t in stolen)  # and they carry a settle


def test_steals_wait_out_twice_the_lag_peers_records_arrive_with() -> None:
    _, view, tasks, planner, cands = _mesh(8)
    # Records arriving 2 s after they were made (a third runner's: the owner's
    # own pace is not the point here).
    planner.observe([("owner", 1_000, 3_000)] + [("other", 1_000, 3_000)] * 20, 3_000)
    assert abs(planner.lag_s - 2.0) < 1e-9
    assert _plan(planner, view, cands, 0.0) == []
    assert _plan(planner, view, cands, 3.9) == []  # the deferral alone (1 s) has passed, 2 x lag has not
    (t,) = _plan(planner, view, cands, 4.1)
    assert planner.settle_ms(t) == 2000 and planner.settle_wait(t) == 2.0  # settles for at least the lag
    planner.observe([("thief", 0, 60_000)] * 200, 60_000)  # our own records say nothing of the lag
    planner.observe([("owner", 0, 60_000)] * 200, 60_000)
    assert planner.lag_s == MAX_LAG_S  # bounded


def test_an_idle_owner_keeps_its_task_only_for_a_grace_period() -> None:
    _, view, tasks, planner, cands = _mesh(1, owner_free=1)
    assert _plan(planner, view, cands, 0.0) == []
    assert _plan(planner, view, cands, IDLE_OWNER_GRACE_S - 0.1) == []  # it claims its share itself
    assert _plan(planner, view, cands, IDLE_OWNER_GRACE_S + 0.1) == tasks  # ...or it cannot: taken over


def test_a_busy_owner_not_heard_from_since_the_task_appeared_keeps_it_for_a_while() -> None:
    """A large batch takes a while to reach its owners: until an owner writes
    a claim or completion after the task appeared here, it has most likely
    not seen it, and a steal would run it twice."""
    _, view, tasks, planner, cands = _mesh(1)
    assert _plan(planner, view, cands, 0.0) == []
    assert _plan(planner, view, cands, 5.0) == []  # deferral passed, but the owner said nothing since
    planner.observe([("owner", 1, None)], 1)  # ...now it has
    assert _plan(planner, view, cands, 5.1) == tasks
    _, view, tasks, planner, cands = _mesh(1)
    assert _plan(planner, view, cands, 0.0) == []
    assert _plan(planner, view, cands, IDLE_OWNER_GRACE_S + 0.1) == tasks  # not for good


def test_a_working_owner_that_has_not_shown_it_has_the_task_keeps_it_for_a_while() -> None:
    """Measured on a loaded 3-node mesh: the submitter saw its second batch
    seconds before the other runners did, heard them claim tasks of the
    first batch, and stole their shares of the second: a fifth of the tasks
    ran twice.  A claim shows its writer has the delta that enqueued the
    claimed task (and that submitter's earlier ones), not later deltas."""
    rep, view = fresh_queue()
    tasks = [t for t in (task_cid(i) for i in range(40))
             if weighted_rank(t, {"owner": 1, "thief": 1})[0] == "owner"][:3]
    rep.update(queue.enqueue_ops(tasks[:1]), SIGNER)  # the first batch
    rep.update(queue.enqueue_ops(tasks[1:]), SIGNER)  # the second
    rep.update([queue.assign_op(tasks[0], "owner", 0, 10**9, 1)], SIGNER)  # the owner works on the first
    planner = ClaimPlanner("thief", defer_s=0.5)
    cands = {"owner": Candidate(1, {"free": 0}), "thief": Candidate(1, {"free": 1})}
    assert _plan(planner, view, cands, 0.0) == []
    planner.observe([("owner", 10, None)], 10)  # heard working since the tasks appeared
    assert _plan(planner, view, cands, 5.0) == []  # deferral and lag passed, but it has not shown it has them
    assert set(_plan(planner, view, cands, IDLE_OWNER_GRACE_S + 0.1, free=2)) == set(tasks[1:])  # ...for a while
    rep.update(queue.enqueue_ops([task_cid(99)]), SIGNER)
    view2 = queue.QueueView(rep)
    assert view2.reach("owner") == view2.position(tasks[2]) == 0  # a view built later counts what it found as one


def test_a_claim_in_the_same_batch_shows_the_owner_has_the_task() -> None:
    _, view, tasks, planner, cands = _mesh(3, owner_has_them=False)
    view.replica.update([queue.assign_op(tasks[0], "owner", 0, 10**9, 1)], SIGNER)
    assert _plan(planner, view, cands, 0.0) == []
    planner.observe([("owner", 10, None)], 10)
    assert set(_plan(planner, view, cands, 5.0, free=2)) == set(tasks[1:])  # stolen as before


def test_a_working_owner_keeps_what_it_will_reach_before_a_steal_could_settle() -> None:
    """Measured on a loaded mesh: 9 in 10 duplicates were steals of tasks
    their owner finished 0-2 s earlier.  A working owner takes its share
    oldest first; the tasks it reaches within two lags and a settle are
    left to it, and only those beyond are stolen."""
    _, view, tasks, planner, cands = _mesh(200)
    planner.observe([("owner", 0, 1_000)] * 200, 1_000)  # 20 tasks/s, records 1 s late
    assert _plan(planner, view, cands, 0.0, free=200) == []
    stolen = _plan(planner, view, cands, 10.0, free=200)
    pace = planner.rate("owner", 0) * (2 * planner.lag_s + planner.settle_wait(stolen[0]))
    order = {t: view.order_index(t) for t in tasks}
    kept = [t for t in tasks if t not in stolen]
    # What the owner reaches first (half the queue is its share: weight 1 of 2) is kept.
    assert min(order[t] for t in stolen) * 0.5 >= pace - 1 and len(kept) >= int(pace * 2) - 2, (len(stolen), pace)
