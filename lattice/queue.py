"""The work queue: the whitepaper's Manager protocol as pure functions over a GOHO.

The queue GOHO holds these grow-only sets:

* ``available``: task CIDs (Enqueue adds here);
* ``assigned``: assignment records ``{task, by, at, until, n}`` (Assign);
  records of one attempt ``(by, n)`` are one lease, from the earliest
  ``at`` to the latest ``until`` (a renewal, :func:`renew_op`);
* ``completed``: completion records ``{task, by, at, result}`` (Complete);
* ``failed``: failed-attempt records ``{task, by, at, n, error, final}``;
* ``cancelled`` and ``retried``: the lifecycle records of
  :mod:`lattice.lifecycle` (cancel a task's current generation; start a new
  one with fresh attempts).
* ``checkpoints``: saved engine states ``{task, by, at, n, state, size}``
  (:mod:`lattice.checkpoints`).

**Who may write what** (enforced when a peer's delta is admitted, see
:func:`check_delta`, and when a record is read, see :class:`QueueView`).
The record constructors and :func:`check_delta` live in
:mod:`lattice.queue_records` and are re-exported here; this module is the
view:

* every ``assigned``, ``completed``, ``failed``, ``cancelled``,
  ``retried`` and ``checkpoints`` record names its writer in
  ``by``, which must be the peer id of the delta's author: nobody writes in
  another peer's name;
* a lease lasts at most :data:`MAX_LEASE_MS` from its claim, a renewal (which
  carries ``r``, when it was made) at most :data:`MAX_RENEWAL_MS` from ``r``;
  a reader also counts a lease as ending at most that long after it heard it,
  so a record dated in the future cannot hold a task longer;
* a plain task's completion or failure counts only from a peer that claimed
  it (``failed`` names the attempt ``n``, which must be one of the writer's);
  a replicated task is completed or failed by a peer that did not claim it
  (the Verifier) only once enough replicas are done: ``quorum`` of them, one
  of whose results the completion names, or ``replicas`` for a failure.

Times are integer milliseconds of the writer's clock.  Nothing is ever
removed; a task's state is a function of the four sets and the reader's
clock, so every replica with the same sets computes the same answer:

* ``completed`` if any completion names it;
* else ``cancelled`` if a cancel of its current generation names it;
* else ``failed`` if a failure record with ``final`` names an attempt of its
  current generation (above the latest retry's ``n``);
* else ``assigned`` if it has a *live lease*: an assignment of the current
  generation with ``until > now`` whose attempt did not fail;
* else ``available``.

**Deterministic winner rule.**  Two peers may assign the same task before they
see each other's assignment.  The lease holder is the live assignment with the
smallest ``(at + settle, by, n)`` (a steal carries ``settle``: it ranks as if
made that much later, so the owner of a task, which starts it at once, keeps
it against a steal made at about the same moment); every replica that has
both records agrees, and the loser abandons the task.  A lease that expires lets anyone steal the task with
attempt ``n + 1`` (Next returns it again).

:class:`QueueView` reads indexes kept from the replica's change stream
(:class:`lattice.queue_index.QueueIndex`, with :class:`Assignment` and
:class:`TaskInfo`), so Next and Status never scan the sets.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .cid import CID
from .lifecycle import CANCELLED
from .queue_index import Assignment, QueueIndex, TaskInfo
from .queue_records import (  # noqa: F401 - re-exported: callers write queue.assign_op etc.
    ASSIGNED,
    AVAILABLE,
    COMPLETED,
    FAILED,
    MAX_ERROR,
    MAX_LEASE_MS,
    MAX_RENEWAL_MS,
    REPLICAS,
    STATES,
    assign_op,
    check_delta,
    complete_op,
    enqueue_ops,
    fail_op,
    renew_op,
    replica_done_op,
    replicate_op,
)


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """Status(taskHash): the state and the attempts behind it."""

    task: CID
    state: str
    holder: Assignment | None
    assignments: tuple[Assignment, ...]
    completions: tuple[dict[str, Any], ...]
    failures: tuple[dict[str, Any], ...]
    replication: tuple[int, int] | None = None
    replicas_wanted: int = 1
    replica_done: tuple[dict[str, Any], ...] = ()
    holders: tuple[Assignment, ...] = ()
    generation: int = 0  # retries started so far (lattice.lifecycle)
    cancels: tuple[dict[str, Any], ...] = ()  # the cancels that count (current generation)

    @property
    def attempts(self) -> int:
        return len({(a.by, a.n) for a in self.assignments})


class QueueView(QueueIndex):
    """Manager protocol reads over a queue replica (Next, Status, counts).

    Records of the wrong shape (from a buggy or hostile peer) are ignored by
    the view: they stay in the grow-only set but never affect a state.

    Two hooks let the Verifier shape the reads without the queue knowing
    about trust: ``banned(peer)`` — a banned peer's assignments hold no lease
    and its completions do not count; ``wanted(task, info)`` — how many
    replicas a replicated task needs now (adaptive replication).  Both must be
    pure functions of replicated state so every peer reads the same queue.
    """

    # -- reads ---------------------------------------------------------------------

    def is_done(self, info: TaskInfo) -> bool:
        """Done for good (until a retry): a completion or a cancel by a peer
        that is not banned, or a final failure of the current generation."""
        return any(not self._banned(c["by"]) for c in info.completions) or info.failed_final \
            or any(not self._banned(c["by"]) for c in info.life.current_cancels())

    def wanted(self, task: CID) -> int:
        """Replicas ``task`` needs now (1 for a plain task)."""
        self.sync()
        return self._wanted_now(task)

    def _wanted_now(self, task: CID) -> int:
        info = self._tasks.get(task)
        if info is None or info.replication is None:
            return 1
        if self._wanted is not None:
            return self._wanted(task, info)
        return info.replication[0]

    def cancelled(self, task: CID) -> bool:
        """Whether ``task``'s current generation is cancelled (and it did not complete):
        the cheap check a Runner makes for each task it runs on every queue change."""
        self.sync()
        info = self._tasks.get(task)
        if info is None or not info.life.cancels or any(not self._banned(c["by"]) for c in info.completions):
            return False
        return any(not self._banned(c["by"]) for c in info.life.current_cancels())

    def holders(self, task: CID, now_ms: int) -> list[Assignment]:
        """Live leases of ``task``: the winner for a plain task; for a
        replicated task, one per runner, as many as replicas are still needed
        (earliest claims first)."""
        self.sync()
        return self._holders(task, now_ms)

    # Reads below call these unsynced helpers: a sync in the middle of a
    # read could change the indexes it is iterating.
    def _holders(self, task: CID, now_ms: int) -> list[Assignment]:
        info = self._tasks.get(task)
        if info is None or self.is_done(info):
            return []
        failed = {(f["by"], f["n"]) for f in info.failures}
        current = info.life.current
        live = sorted(
            (a for a in info.assignments
             if a.until > now_ms and current(a.n) and (a.by, a.n) not in failed and not self._banned(a.by)
             and a.by not in info.replica_done),
            key=Assignment.key,
        )
        if info.replication is None:
            return live[:1]
        room = max(0, self._wanted_now(task) - sum(1 for p in info.replica_done if not self._banned(p)))
        out: list[Assignment] = []
        seen: set[str] = set()
        for a in live:
            if a.by not in seen and len(out) < room:
                out.append(a)
                seen.add(a.by)
        return out

    def holder(self, task: CID, now_ms: int) -> Assignment | None:
        """The deterministic lease winner of ``task`` at ``now_ms`` (or None)."""
        self.sync()
        h = self._holders(task, now_ms)
        return h[0] if h else None

    def holds(self, task: CID, peer: str, now_ms: int) -> Assignment | None:
        """``peer``'s winning lease on ``task``, if it has one."""
        self.sync()
        for a in self._holders(task, now_ms):
            if a.by == peer:
                return a
        return None

    def status(self, task: CID, now_ms: int) -> TaskStatus | None:
        """Status(taskHash), or None when the task was never seen."""
        self.sync()
        info = self._tasks.get(task)
        if info is None or not info.available:
            return None
        holders = self._holders(task, now_ms)
        counted = [c for c in info.completions if not self._banned(c["by"])]
        cancels = [c for c in info.life.current_cancels() if not self._banned(c["by"])]
        if counted:
            state = COMPLETED
        elif cancels:
            state = CANCELLED
        elif info.failed_final:
            state = FAILED
        elif holders or (info.replication is not None and info.replica_done):
            state = ASSIGNED
        else:
            state = AVAILABLE
        return TaskStatus(
            task, state, holders[0] if holders else None, tuple(sorted(info.assignments, key=Assignment.key)),
            tuple(counted), tuple(info.failures), info.replication, self._wanted_now(task),
            tuple(info.replica_done.values()), tuple(holders), info.life.gen, tuple(cancels),
        )

    def rescan(self, now_ms: int) -> None:
        """Rebuild the ready list (after the ban set changed)."""
        self.sync()
        self._ready = {t: None for t in self._order
                       if self._tasks[t].replication is None and not self.is_done(self._tasks[t])
                       and not self._holders(t, now_ms)}

    def next_attempt(self, task: CID) -> int:
        """The attempt number a new assignment of ``task`` should carry."""
        self.sync()
        info = self._tasks.get(task)
        if info is None:
            return 1
        seen = [a.n for a in info.assignments] + [f["n"] for f in info.failures]
        return 1 + max(max(seen, default=0), info.life.base)

    def failures(self, task: CID) -> int:
        """Failed attempts of ``task``'s current generation that count towards ``max_attempts``."""
        self.sync()
        info = self._tasks.get(task)
        if info is None:
            return 0
        current = info.life.current
        return len({(f["by"], f["n"]) for f in info.failures if not f.get("void") and current(f["n"])})

    def _expire(self, now_ms: int) -> None:
        heap = self._leases
        while heap and heap[0][0] <= now_ms:
            _, raw = heapq.heappop(heap)
            task = CID(raw)
            info = self._tasks[task]
            if info.available and info.replication is None and not info.done and not self._holders(task, now_ms):
                self._ready[task] = None

    def next(
        self,
        now_ms: int,
        *,
        limit: int = 1,
        accept: Callable[[CID], bool] | None = None,
        scan: int = 10_000,
        me: str | None = None,
        newest_first: bool = False,
        plain: bool = True,
    ) -> list[CID]:
        """Next(): up to ``limit`` tasks that are available, not done, not leased.

        ``accept`` filters (constraints, rendezvous preference); at most
        ``scan`` candidates are examined per call so a long queue of tasks this
        node may not run costs bounded time.  Replicated tasks are offered
        only when ``me`` (the asking runner) is given.  ``newest_first``
        walks the ready tasks from the newest (a stealer takes from the far
        end of a busy runner's share, which claims from the oldest).
        ``plain=False`` offers only replicated tasks (a caller that keeps
        its own index of the plain ones, see :meth:`ready`).
        """
        self.sync()
        self._expire(now_ms)
        out: list[CID] = []
        stale: list[CID] = []
        examined = 0
        # A snapshot of the first ``scan`` + 1: ``accept`` may read the view,
        # which syncs it and can grow ``_ready`` while it is walked.
        walk = list(itertools.islice(reversed(self._ready) if newest_first else self._ready, scan + 1)) if plain else ()
        for task in walk:
            examined += 1
            if examined > scan:
                break
            info = self._tasks[task]
            if info.rejected or self.is_done(info) or self._holders(task, now_ms):
                stale.append(task)
                continue
            if accept is not None and not accept(task):
                continue
            out.append(task)
            if len(out) >= limit:
                break
        for task in stale:
            self._ready.pop(task, None)
        if me is not None and len(out) < limit:
            out.extend(self._next_replicated(now_ms, me, limit - len(out), accept, scan))
        return out

    def _next_replicated(self, now_ms: int, me: str, limit: int, accept: Callable[[CID], bool] | None,
                         scan: int) -> list[CID]:
        """Replicated tasks ``me`` may take: it has neither run nor claimed
        them, and fewer runners than the wanted replicas are on them."""
        out: list[CID] = []
        done: list[CID] = []
        # A snapshot, as in :meth:`next`: ``accept`` may sync the view.
        for task in list(itertools.islice(self._open_rep, scan)):
            info = self._tasks[task]
            if info.rejected or self.is_done(info):
                done.append(task)
                continue
            if me in info.replica_done or any(a.by == me and a.until > now_ms for a in info.assignments):
                continue
            busy = len(self._holders(task, now_ms)) + sum(1 for p in info.replica_done if not self._banned(p))
            if busy >= self._wanted_now(task):
                continue
            if accept is not None and not accept(task):
                continue
            out.append(task)
            if len(out) >= limit:
                break
        for task in done:
            self._open_rep.pop(task, None)
        return out

    def ready(self, task: CID, now_ms: int) -> bool | None:
        """Whether plain ``task`` is what :meth:`next` would offer now
        (available, not done, not rejected, no live lease); None once it is
        done or rejected for good, or is replicated (:meth:`next` offers
        those), so a caller's index may drop it.  The caller syncs first
        (:meth:`tasks_since`)."""
        info = self._tasks.get(task)
        if info is None or not info.available:
            return False
        if info.rejected or info.replication is not None or self.is_done(info):
            return None
        return not info.assignments or not self._holders(task, now_ms)

    def order_index(self, task: CID) -> int | None:
        """``task``'s index in the order tasks were enqueued here (None: not enqueued here)."""
        self.sync()
        return self._idx.get(task)

    def frontier(self, peer: str) -> int:
        """The largest :meth:`order_index` of a task ``peer`` claimed or completed (-1: none):
        how far into the queue a runner that takes its share oldest first has come."""
        self.sync()
        return self._frontier.get(peer, -1)

    def position(self, task: CID) -> int | None:
        """The number of the delta that enqueued ``task``, in the order deltas
        were applied here (None: not enqueued here)."""
        self.sync()
        return self._pos.get(task)

    def reach(self, peer: str) -> int:
        """The largest :meth:`position` of a task ``peer`` claimed or completed (-1: none).

        A peer that claimed a task enqueued by the same delta as ``t`` holds
        ``t``; one that claimed a task of a later delta of the same submitter
        holds it too (a submitter's deltas form a chain, applied in causal
        order).  So ``reach(peer) >= position(t)`` is evidence that ``peer``
        has seen ``t``: the claim planner steals a live owner's task only
        then (or after a grace period).  With several submitters it is a
        heuristic: their deltas interleave differently on each replica.
        """
        self.sync()
        return self._reach.get(peer, -1)

    def tasks_since(self, start: int) -> list[CID]:
        """Tasks enqueued here after the first ``start`` (in the order seen),
        and tasks a retry reopened (again, when it did): lets a caller index
        new tasks once instead of rescanning the queue."""
        self.sync()
        return self._feed[start:]

    def open_replicated(self) -> list[CID]:
        """Replicated tasks not yet completed (what the Verifier watches)."""
        self.sync()
        return [t for t in self._open_rep if not self._tasks[t].rejected]

    def reject(self, task: CID) -> None:
        """Stop offering ``task``: its body failed validation on this node.

        Safe to call from an ``accept`` filter during :meth:`next` (the
        indexes are pruned lazily).  Validity is a pure function of the
        task's content-addressed body, so every peer that reads the body
        rejects the same tasks.
        """
        self.sync()
        info = self._tasks.get(task)
        if info is None:
            info = self._info(task)
        info.rejected = True

    def completed_by(self, peer: str, before_ms: int | None = None) -> int:
        """Completion records (replicas included) that name ``peer`` as
        runner, stamped before ``before_ms`` if given; counted up to 1,024.

        What the claim planner caps a peer's advertised capacity by
        (:func:`lattice.claims.effective_capacity`): a pure function of the
        replicated sets, and with ``before_ms`` at an epoch boundary the same
        on every replica that has the completions made before it, so runners
        rank alike while their views of the newest completions differ.
        """
        self.sync()
        times = self._completed_at.get(peer, ())
        return len(times) if before_ms is None else bisect.bisect_left(times, before_ms)

    def info(self, task: CID) -> TaskInfo | None:
        self.sync()
        return self._tasks.get(task)

    def counts(self, now_ms: int) -> dict[str, int]:
        """Counts per state (assigned is computed against ``now_ms``)."""
        self.sync()
        self._expire(now_ms)
        total = len(self._order)
        assigned = sum(1 for t in self._leased if self._has(t) and self._holders(t, now_ms))
        return {
            AVAILABLE: max(0, total - self._done - assigned),
            ASSIGNED: assigned,
            COMPLETED: self._ended[COMPLETED],
            FAILED: self._ended[FAILED],
            CANCELLED: self._ended[CANCELLED],
            "total": total,
        }

    def tasks(self) -> Iterator[CID]:
        """Every enqueued task, in the order this replica saw them."""
        self.sync()
        return iter(self._order)

    def __contains__(self, task: CID) -> bool:
        self.sync()
        return self._has(task)

    def _has(self, task: CID) -> bool:
        info = self._tasks.get(task)
        return info is not None and info.available

    def __len__(self) -> int:
        self.sync()
        return len(self._order)
