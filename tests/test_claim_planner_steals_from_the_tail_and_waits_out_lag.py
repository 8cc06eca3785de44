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


def _mesh(n_tasks: int, *, owner_free: int = 0):
    """A queue of ``n_tasks`` that all rank ``owner`` first; the planner is the other runner's."""
    rep, view = fresh_queue()
    owner, thief = "owner", "thief"
    tasks = [t for t in (task_cid(i) for i in range(20 * n_tasks))
             if weighted_rank(t, {owner: 1, thief: 1})[0] == owner][:n_tasks]
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
    planner.observe([("owner", 1_000, 3_000)] * 20, 3_000)  # claims arriving 2 s after they were made
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
