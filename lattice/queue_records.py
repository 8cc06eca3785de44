"""The queue's records as its writers make them, and the rules a peer's delta must obey.

Split from :mod:`lattice.queue` (which re-exports every name here, so
callers keep writing ``queue.assign_op``): that module is the view, which
reads states from the sets; this one is what goes into them, the record
constructors and :func:`check_delta`, the part of the writing rules that
reads only a delta (docs/protocol.md, *The queue state machine*, "Who may
write what").  The lifecycle records (cancel, retry) are in
:mod:`lattice.lifecycle` and checkpoints in :mod:`lattice.checkpoints`;
their writer rule (``by`` is the delta's author) is checked here with the
others.  Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checkpoints import CHECKPOINTS, check_record as _check_checkpoint
from .cid import CID
from .errors import BadRecord
from .lifecycle import CANCELLED, RETRIED
from .signing import peer_id_of

if TYPE_CHECKING:
    from .queue_index import Assignment

AVAILABLE = "available"
ASSIGNED = "assigned"
COMPLETED = "completed"
FAILED = "failed"
REPLICAS = "replicas"
STATES = (AVAILABLE, ASSIGNED, COMPLETED, FAILED, CANCELLED)
#: Longest error text kept in a failure record.
MAX_ERROR = 2000
#: Longest lease a claim may ask for (ms): a claim with ``until - at`` above it
#: is refused with its whole delta.  A runner's ``lease_s`` is at most this.
MAX_LEASE_MS = 600_000
#: Longest lease a renewal may ask for, from when it was made (``r``): a
#: started attempt's renewals grow to 8 leases (``meshd.roles.runner``).
MAX_RENEWAL_MS = 8 * MAX_LEASE_MS
_WRITTEN_BY = (ASSIGNED, COMPLETED, FAILED, CANCELLED, RETRIED, CHECKPOINTS)


def check_delta(delta: Any) -> None:
    """Refuse a peer's queue delta that breaks the writing rules (module doc).

    Called on every received delta of a queue object before it is stored
    (``lattice.goho.ReplicaOptions.check_delta``).  The checks read only the
    delta, so every peer refuses the same deltas; an honest node never
    writes one, so no honest delta descends from a refused one.  Records of
    the wrong shape are left to the view, which ignores them.

    Raises:
        BadRecord: a record names another writer than the author, or asks
            for a longer lease than the caps.
    """
    author = None
    for op, key, value in delta.ops:
        if key not in _WRITTEN_BY or type(value) is not dict:
            continue
        by = value.get("by")
        if type(by) is not str:
            continue
        if author is None:
            author = peer_id_of(delta.author)
        if by != author:
            raise BadRecord(f"queue record in {key} names {by[:60]!r}, not its delta's author")
        if key == CHECKPOINTS:
            _check_checkpoint(value)
        if key == ASSIGNED:
            at, until, r = value.get("at"), value.get("until"), value.get("r")
            if type(at) is not int or type(until) is not int:
                continue
            if r is None:
                if until - at > MAX_LEASE_MS:
                    raise BadRecord(f"lease of {until - at} ms is longer than {MAX_LEASE_MS} ms")
            elif type(r) is not int or r < at or until - r > MAX_RENEWAL_MS:
                raise BadRecord("renewal is older than its claim or longer than the renewal cap")


def enqueue_ops(tasks: list[CID]) -> list[list[Any]]:
    """Enqueue(data): add task CIDs to ``available``."""
    return [["add", AVAILABLE, t] for t in tasks]


def assign_op(task: CID, by: str, at_ms: int, lease_ms: int, attempt: int, *, settle_ms: int = 0) -> list[Any]:
    """Assign(task): claim ``task`` for ``lease_ms``.

    ``settle_ms`` marks a claim on a task of another runner's share (a
    steal, :class:`lattice.planner.ClaimPlanner`): it ranks in the winner
    rule as if made ``settle_ms`` later, and the stealer starts the task only
    after that.  So the owner, which claims its share and starts it at once,
    is never displaced by a stealer that claimed at about the same moment,
    while a steal still beats a claim made after it settled.
    """
    rec = {"task": task, "by": by, "at": at_ms, "until": at_ms + lease_ms, "n": attempt}
    if settle_ms > 0:
        rec["settle"] = settle_ms
    return ["add", ASSIGNED, rec]


def renew_op(lease: Assignment, until_ms: int, now_ms: int) -> list[Any]:
    """Renew a lease at ``now_ms``: the same attempt ``(task, by, at, n)`` with a later ``until``.

    The view merges records of one attempt (earliest ``at``, latest
    ``until``), so a task may run for hours on short leases, and a renewal
    changes no winner: the attempt's key ``(at, by, n)`` is the same.  The
    record carries ``r = now_ms``: a renewal asks for at most
    :data:`MAX_RENEWAL_MS` from when it was made.
    """
    rec = {"task": lease.task, "by": lease.by, "at": lease.at, "until": until_ms, "n": lease.n, "r": now_ms}
    if lease.settle:
        rec["settle"] = lease.settle
    return ["add", ASSIGNED, rec]


def replicate_op(task: CID, replicas: int, quorum: int) -> list[Any]:
    """Ask for ``replicas`` independent runs of ``task``, accepted on ``quorum`` agreeing."""
    return ["add", REPLICAS, {"task": task, "k": replicas, "q": quorum}]


def replica_done_op(task: CID, by: str, at_ms: int, result: CID) -> list[Any]:
    """One runner's replica of a replicated task is done (not the task itself:
    the Verifier completes it once a quorum agrees)."""
    return ["add", COMPLETED, {"task": task, "by": by, "at": at_ms, "result": result, "replica": True}]


def complete_op(task: CID, by: str, at_ms: int, result: CID) -> list[Any]:
    """Complete(task): record that ``task`` finished with result record ``result``."""
    return ["add", COMPLETED, {"task": task, "by": by, "at": at_ms, "result": result}]


def fail_op(task: CID, by: str, at_ms: int, attempt: int, error: str, final: bool, *, void: bool = False) -> list[Any]:
    """Record a failed attempt; ``final`` marks the task failed for good.

    ``void`` marks an attempt abandoned for reasons that are not the task's
    fault (its runner restarted): it frees the lease but does not count
    towards ``max_attempts``.
    """
    rec = {"task": task, "by": by, "at": at_ms, "n": attempt, "error": error[:MAX_ERROR], "final": final}
    if void:
        rec["void"] = True
    return ["add", FAILED, rec]


__all__ = ["ASSIGNED", "AVAILABLE", "COMPLETED", "FAILED", "MAX_ERROR", "MAX_LEASE_MS", "MAX_RENEWAL_MS", "REPLICAS",
           "STATES", "assign_op", "check_delta", "complete_op", "enqueue_ops", "fail_op", "renew_op",
           "replica_done_op", "replicate_op"]
