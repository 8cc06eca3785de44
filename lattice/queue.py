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

:class:`QueueView` keeps indexes updated from the replica's change stream, so
Next and Status never scan the sets.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .cid import CID
from .goho import Replica
from .lifecycle import CANCELLED, RETRIED, Generations, valid_cancel, valid_retry
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
from .state import decode_value

#: Completion times kept per runner (enough to cap any advertised capacity).
_COMPLETIONS_KEPT = 1024
#: Largest ``settle`` a claim may carry (ms); larger values are read as 0.
_MAX_SETTLE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Assignment:
    task: CID
    by: str
    at: int
    until: int
    n: int
    settle: int = 0  # a steal's settling time (ms): it ranks as if made this much later

    def key(self) -> tuple[int, str, int]:
        """The winner rule's order: earliest ``at + settle`` first, then by peer id and attempt."""
        return (self.at + self.settle, self.by, self.n)


#: Most runners whose :meth:`QueueView.reach` is kept.
_MAX_REACH = 10_000


@dataclass(slots=True)
class TaskInfo:
    """Everything the queue knows of one task."""

    available: bool = False
    assignments: list[Assignment] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    replication: tuple[int, int] | None = None  # (replicas, quorum) for verified tasks
    replica_done: dict[str, dict[str, Any]] = field(default_factory=dict)  # runner -> its replica completion
    rejected: bool = False  # its body failed validation here: never offered by Next
    #: Completion and failure records not (yet) allowed by the writing rules
    #: (module doc), as ``(key, encoding)``: read again when the task gains
    #: an assignment, a replica or its replication record.
    held: list[tuple[str, bytes]] = field(default_factory=list)
    life: Generations = field(default_factory=Generations)  # cancels and retries

    @property
    def done(self) -> bool:
        return self.outcome() is not None

    @property
    def failed_final(self) -> bool:
        """A final failure of an attempt of the current generation."""
        return any(f.get("final") and self.life.current(f["n"]) for f in self.failures)

    def outcome(self) -> str | None:
        """The terminal state the records give (bans aside), or None while open."""
        if self.completions:
            return COMPLETED
        if self.life.cancels and self.life.current_cancels():
            return CANCELLED
        return FAILED if self.failed_final else None


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


def _valid_record(value: Any, fields: dict[str, type]) -> bool:
    if type(value) is not dict:
        return False
    for name, typ in fields.items():
        if type(value.get(name)) is not typ:
            return False
    return True


_ASSIGN_FIELDS = {"task": CID, "by": str, "at": int, "until": int, "n": int}
_COMPLETE_FIELDS = {"task": CID, "by": str, "at": int, "result": CID}
_FAIL_FIELDS = {"task": CID, "by": str, "at": int, "n": int, "error": str, "final": bool}


class QueueView:
    """Manager protocol reads over a queue replica (Next, Status, counts).

    Records of the wrong shape (from a buggy or hostile peer) are ignored by
    the view: they stay in the grow-only set but never affect a state.

    Two hooks let the Verifier shape the reads without the queue knowing
    about trust: ``banned(peer)`` — a banned peer's assignments hold no lease
    and its completions do not count; ``wanted(task, info)`` — how many
    replicas a replicated task needs now (adaptive replication).  Both must be
    pure functions of replicated state so every peer reads the same queue.
    """

    def __init__(self, replica: Replica, *, banned: Callable[[str], bool] | None = None,
                 wanted: Callable[[CID, TaskInfo], int] | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self.replica = replica
        self._clock = clock  # wall-clock ms: when ``heard`` records arrived
        self._banned = banned or (lambda peer: False)
        self._wanted = wanted
        self._open_rep: dict[CID, None] = {}  # replicated tasks not yet done
        self._tasks: dict[CID, TaskInfo] = {}
        self._ready: dict[CID, None] = {}  # available, not done, no known lease (FIFO)
        self._leases: list[tuple[int, bytes]] = []  # (until, task raw) min-heap
        self._order: list[CID] = []  # enqueue order as seen here
        #: A task -> the number of the delta that enqueued it, counted in the
        #: order deltas were applied here (0: already in the replica when the
        #: view was built); see :meth:`reach`.
        self._pos: dict[CID, int] = {}
        self._delta_no = 0
        #: runner -> the largest _pos of a task it claimed or completed
        self._reach: dict[str, int] = {}
        self._idx: dict[CID, int] = {}  # a task's index in _order
        #: runner -> the largest _idx of a task it claimed or completed
        self._frontier: dict[str, int] = {}
        self._leased: set[CID] = set()  # have assignments and are not done
        self._done = 0
        self._ended = {COMPLETED: 0, FAILED: 0, CANCELLED: 0}  # done tasks by outcome
        self._feed: list[CID] = []  # enqueued, then reopened by a retry (tasks_since)
        self._completed_at: dict[str, list[int]] = {}  # runner -> its earliest completion times, sorted
        #: ``(by, at, arrived)`` of the newest claim and completion records
        #: applied after the view was built, ``arrived`` from ``clock`` (None
        #: without one): the claim planner's lag estimate reads them.
        self.heard: deque[tuple[str, int, int | None]] = deque(maxlen=256)
        # Reads pull what was applied after this point (see sync()); the
        # view registers nothing with the replica.
        self._cursor = replica.cursor()
        # What was in the replica when the view was built arrived now.
        self._arrived: int | None = clock() if clock is not None else None
        state = replica.state
        for key in (REPLICAS, AVAILABLE, RETRIED, CANCELLED, ASSIGNED, COMPLETED, FAILED):
            for enc in list(state.encoded_members(key)):
                self._on_add(key, enc)

    # -- index maintenance -------------------------------------------------------

    def sync(self) -> None:
        """Catch up with the replica (every read does this first; the view registers nothing)."""
        changes = self._cursor.pull()
        if changes:
            self._arrived = self._clock() if self._clock is not None else None
        for change in changes:
            self._delta_no += 1
            for key, enc in change.adds:
                self._on_add(key, enc, heard=True)

    def close(self) -> None:
        """Stop following the replica (the view keeps answering from what it saw)."""
        self._cursor.close()

    def _info(self, task: CID) -> TaskInfo:
        info = self._tasks.get(task)
        if info is None:
            info = self._tasks[task] = TaskInfo()
        return info

    def _on_add(self, key: str, enc: bytes, *, heard: bool = False) -> None:
        if key == REPLICAS:
            rec = decode_value(enc)
            if not _valid_record(rec, {"task": CID, "k": int, "q": int}) or not 1 <= rec["q"] <= rec["k"] <= 16:
                return
            info = self._info(rec["task"])
            cur = info.replication or (0, 0)
            info.replication = (max(cur[0], rec["k"]), max(cur[1], rec["q"]))
            if info.held:
                self._retry_held(info)
            self._ready.pop(rec["task"], None)
            if info.available and not info.done:
                self._open_rep[rec["task"]] = None
        elif key == AVAILABLE:
            task = decode_value(enc)
            if type(task) is not CID:
                return
            info = self._info(task)
            if not info.available:
                info.available = True
                self._pos[task] = self._delta_no
                self._idx[task] = len(self._order)
                self._order.append(task)
                self._feed.append(task)
                if info.replication is not None:
                    if not info.done:
                        self._open_rep[task] = None
                elif not info.done and not info.assignments:
                    self._ready[task] = None
        elif key == ASSIGNED:
            rec = decode_value(enc)
            if not _valid_record(rec, _ASSIGN_FIELDS):
                return
            settle = rec.get("settle", 0)
            settle = settle if type(settle) is int and 0 <= settle <= _MAX_SETTLE_MS else 0
            until = rec["until"]
            if self._arrived is not None:
                # A lease ends at most its length after we heard it, so a
                # record dated ahead of our clock holds no longer.
                r = rec.get("r")
                start = r if type(r) is int and r > rec["at"] else rec["at"]
                until = min(until, self._arrived + max(0, until - start))
            a = Assignment(rec["task"], rec["by"], rec["at"], until, rec["n"], settle)
            info = self._info(a.task)
            for i, old in enumerate(info.assignments):
                if old.by == a.by and old.n == a.n:  # a renewal: one attempt, one lease
                    a = Assignment(a.task, a.by, min(a.at, old.at), max(a.until, old.until), a.n, min(a.settle, old.settle))
                    info.assignments[i] = a
                    break
            else:
                info.assignments.append(a)
                self._reached(a.by, a.task)
                if heard:  # a new claim (a renewal keeps its first ``at``)
                    self.heard.append((a.by, a.at, self._arrived))
            if info.life.current(a.n):  # a lease from before a retry holds nothing
                self._ready.pop(a.task, None)
            if not info.done:
                self._leased.add(a.task)
            heapq.heappush(self._leases, (a.until, a.task.raw))
            if info.held:
                self._retry_held(info)
        elif key == COMPLETED:
            rec = decode_value(enc)
            if not _valid_record(rec, _COMPLETE_FIELDS):
                return
            info = self._info(rec["task"])
            if not self._may_conclude(info, rec, replica=rec.get("replica") is True):
                info.held.append((key, enc))
                return
            self._reached(rec["by"], rec["task"])
            if heard:
                self.heard.append((rec["by"], rec["at"], self._arrived))
            times = self._completed_at.setdefault(rec["by"], [])
            if len(times) < _COMPLETIONS_KEPT or rec["at"] < times[-1]:
                bisect.insort(times, rec["at"])
                del times[_COMPLETIONS_KEPT:]
            if rec.get("replica") is True:
                if rec["by"] not in info.replica_done:
                    info.replica_done[rec["by"]] = rec
                    if info.held:
                        self._retry_held(info)
                return
            prev = info.outcome()
            info.completions.append(rec)
            self._settle(rec["task"], info, prev)
        elif key == FAILED:
            rec = decode_value(enc)
            if not _valid_record(rec, _FAIL_FIELDS):
                return
            info = self._info(rec["task"])
            if not self._may_conclude(info, rec, replica=False):
                info.held.append((key, enc))
                return
            prev = info.outcome()
            info.failures.append(rec)
            self._settle(rec["task"], info, prev)
            if not info.done and info.available and info.replication is None:
                # The failed attempt voids its lease: the task is ready again
                # (re-checked against other live leases in next()).
                self._ready[rec["task"]] = None

        elif key == CANCELLED or key == RETRIED:
            rec = decode_value(enc)
            if not (valid_cancel(rec) if key == CANCELLED else valid_retry(rec)):
                return
            if key == CANCELLED and self._banned(rec["by"]):
                return  # bans only grow: it never counts (a later ban is read by is_done)
            info = self._info(rec["task"])
            prev = info.outcome()
            if key == CANCELLED:
                info.life.add_cancel(rec)
            else:
                info.life.add_retry(rec)
            self._settle(rec["task"], info, prev)
            if key == RETRIED and not info.done and info.available and info.replication is None:
                self._ready[rec["task"]] = None  # its leases may be history now (next() re-checks)

    def _settle(self, task: CID, info: TaskInfo, prev: str | None) -> None:
        """Keep the counts and indexes right after ``task``'s outcome went from ``prev``.

        A retry can reopen a task that had ended (failed or cancelled): it is
        ready again, and fed to :meth:`tasks_since` as if newly enqueued, so
        a caller's index that dropped it takes it back.
        """
        now = info.outcome()
        if now == prev:
            return
        if prev is not None:
            self._done -= 1
            self._ended[prev] -= 1
        if now is not None:
            self._done += 1
            self._ended[now] += 1
            self._ready.pop(task, None)
            self._leased.discard(task)
            self._open_rep.pop(task, None)
        elif info.available:
            self._feed.append(task)
            if info.assignments:
                self._leased.add(task)  # a claim of the new generation may have come first
            if info.replication is not None:
                self._open_rep[task] = None
            else:
                self._ready[task] = None

    def _may_conclude(self, info: TaskInfo, rec: dict[str, Any], *, replica: bool) -> bool:
        """Whether ``rec`` (a completion or failure) is allowed by the writing rules.

        Its writer claimed the task (for a failure, the attempt it names);
        or, for a replicated task, enough replicas are done: a completion
        names one of their results and ``quorum`` are done, a failure needs
        ``replicas`` done.  A pure function of the sets (not of the reader's
        clock or bans), so every replica counts the same records.
        """
        by = rec["by"]
        if "error" in rec:  # a failure names its attempt
            if any(a.by == by and a.n == rec["n"] for a in info.assignments):
                return True
        elif any(a.by == by for a in info.assignments):
            return True
        if replica or info.replication is None:
            return False
        k, q = info.replication
        done = info.replica_done
        if "error" in rec:
            return len(done) >= k
        return len(done) >= q and any(d["result"] == rec["result"] for d in done.values())

    def _retry_held(self, info: TaskInfo) -> None:
        held, info.held = info.held, []
        for key, enc in held:
            self._on_add(key, enc)

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

    def _reached(self, peer: str, task: CID) -> None:
        pos = self._pos.get(task)
        if pos is not None and pos > self._reach.get(peer, -1):
            if peer not in self._reach and len(self._reach) >= _MAX_REACH:
                self._reach.clear()  # bounded: forgetting only makes steals wait their grace period
            self._reach[peer] = pos
        idx = self._idx.get(task)
        if idx is not None and idx > self._frontier.get(peer, -1):
            if peer not in self._frontier and len(self._frontier) >= _MAX_REACH:
                self._frontier.clear()
            self._frontier[peer] = idx

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
