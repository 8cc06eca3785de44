"""The queue's indexes: how each record of a queue replica folds into per-task state.

:class:`lattice.queue.QueueView` answers Next and Status without scanning the
grow-only sets; this module keeps the indexes it reads.  :class:`QueueIndex`
follows the replica's change stream (it registers nothing: every read pulls
from a cursor), reads each record as a peer wrote it, ignores the malformed
ones, holds back a completion or failure the writing rules do not allow yet
(:mod:`lattice.queue`, module doc) and reads it again when the task gains an
assignment, a replica or its replication record.  :class:`TaskInfo` is what
it knows of one task, :class:`Assignment` one lease.

It is apart from the reads so that how state is built and how it is asked
about can be read, and changed, one at a time.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cid import CID
from .goho import Replica
from .lifecycle import CANCELLED, RETRIED, Generations, valid_cancel, valid_retry
from .queue_records import ASSIGNED, AVAILABLE, COMPLETED, FAILED, REPLICAS
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


class QueueIndex:
    """The indexes a :class:`lattice.queue.QueueView` reads, kept from a queue replica's changes.

    ``banned``, ``wanted`` and ``clock`` are the view's (see there); here a
    banned peer's cancel never counts, and ``clock`` dates when records arrived.
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
