"""The claim planner: which node claims a task first, and when the others step in.

There is no coordinator.  Every node that could take a task (a runner a task,
a verifier a verdict) ranks the live candidates the same way, by rendezvous
hashing (highest random weight): ``sha256(peer id || task CID bytes)``, highest
first.  The top ``wanted`` candidates may claim at once; the k-th after them
waits ``k * defer_s`` from when it first saw the task ready.  So most tasks
are claimed once, by the same node everywhere, a replicated task is claimed by
as many nodes as it wants replicas, and a dead or busy preferred node is
covered after a short deferral.

Pure functions of plain values (the queue view's facts about a task, the live
candidates, trust facts, and times the caller passes in); nothing here reads a
clock.  A role keeps when it first saw each task and claims when
``now >= first_seen + delay``::

    delay = runner_claim_delay(task, me, live_runners, facts, defer_s=0.5,
                               trusted=lambda p: trust.trusted(p, engine), banned=trust.banned_peers())
    if delay == 0 or now - first_seen.setdefault(task, now) >= delay:
        claim(task)

Every node that has the same live set computes the same rank, so the rules
below hold across the mesh without messages:

* exactly ``wanted`` candidates may claim at ``first_seen`` (fewer when there
  are fewer candidates);
* when the top-ranked candidates are dead, the next live one claims after at
  most ``len(candidates) * defer_s``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from .cid import CID

#: A replicated (verified) task's backup runners wait this many times longer:
#: an extra replica costs a whole run, a late one only latency.
REPLICATED_DEFER_FACTOR = 4


def rendezvous_rank(task: CID, peers: Iterable[str]) -> list[str]:
    """``peers`` (duplicates dropped) in order of preference for ``task``, highest random weight first.

    Every node computes the same order from the same set, whatever order it
    lists them in.
    """
    return sorted(set(peers), key=lambda p: hashlib.sha256(p.encode() + task.raw).digest(), reverse=True)


def claim_delay(task: CID, me: str, candidates: Iterable[str], *, wanted: int = 1, defer_s: float) -> float:
    """Seconds after first seeing ``task`` ready from which ``me`` may claim it.

    Args:
        task: The task.
        me: This node's peer id.
        candidates: The live peers that could claim it (this node among them).
        wanted: How many may claim it at once (replicas a task wants).
        defer_s: The wait per rank below the first ``wanted``.

    Returns:
        0 when ``me`` ranks among the first ``wanted``, or is the only
        candidate, or is not a candidate (nobody to defer to); otherwise
        ``(rank - wanted + 1) * defer_s``.
    """
    ranked = rendezvous_rank(task, candidates)
    if len(ranked) <= 1 or me not in ranked:
        return 0.0
    rank = ranked.index(me)
    if rank < wanted:
        return 0.0
    return (rank - wanted + 1) * defer_s


def claim_at(task: CID, me: str, candidates: Iterable[str], *, wanted: int = 1, first_seen: float,
             defer_s: float) -> float:
    """The time from which ``me`` may claim ``task``: ``first_seen + claim_delay(...)``.

    ``first_seen`` (in the caller's clock) is when this node first saw the
    task ready; a candidate ranked below ``wanted`` gets ``first_seen``.
    """
    return first_seen + claim_delay(task, me, candidates, wanted=wanted, defer_s=defer_s)


@dataclass(frozen=True)
class TaskFacts:
    """What the queue view says about one task, as plain values.

    Attributes:
        wanted: Replicas the queue wants now (``QueueView.wanted``; 1 for a
            plain task).
        replicated: A verified task (``TaskInfo.replication`` is set).
        claimed: Some runner has claimed it (``TaskInfo.assignments``).
        submitted_here: It was enqueued through this node's API.
        spot_checked: Picked for full replication whatever the trust
            (``meshd.roles.verify.spot_checked``).
    """

    wanted: int = 1
    replicated: bool = False
    claimed: bool = False
    submitted_here: bool = False
    spot_checked: bool = False


def runner_wanted(facts: TaskFacts, preferred_trusted: bool) -> int:
    """How many runners may claim a task at once (adaptive replication).

    A replicated task nobody has claimed yet wants one runner only when its
    preferred runner is trusted for its engine and the task is not spot
    checked: the verifier then needs no more replicas, so the others hold back
    instead of all claiming at once.
    """
    if (facts.wanted > 1 and facts.replicated and not facts.claimed and preferred_trusted
            and not facts.spot_checked):
        return 1
    return facts.wanted


def runner_claim_delay(task: CID, me: str, runners: Iterable[str], facts: TaskFacts, *, defer_s: float,
                       trusted: Callable[[str], bool] = lambda p: False,
                       banned: Collection[str] = frozenset()) -> float:
    """Seconds after first seeing ``task`` runnable from which the runner ``me`` may claim it.

    Args:
        task: The task.
        me: This runner's peer id.
        runners: Live runners (this one included when it runs tasks).
        facts: The queue view's facts about ``task``.
        defer_s: The runner's deferral per rank (``RunnerOptions.defer_s``);
            replicated tasks wait :data:`REPLICATED_DEFER_FACTOR` times longer.
        trusted: Whether a peer is trusted for the task's engine; asked about
            the top-ranked runner only, and only when adaptive replication
            could apply (so the caller may look trust up lazily).
        banned: Banned peers: they are not candidates.

    Returns:
        0 to claim at once: a plain task submitted here runs here first
        (peers take what this node leaves), and see :func:`claim_delay`.
    """
    if facts.submitted_here and not facts.replicated:
        return 0.0
    live = [p for p in runners if p not in banned]
    ranked = rendezvous_rank(task, live)
    if len(ranked) <= 1 or me not in ranked:
        return 0.0
    wanted = facts.wanted
    if runner_wanted(facts, True) != wanted:  # the rule could apply: ask about the preferred runner only
        wanted = runner_wanted(facts, trusted(ranked[0]))
    defer = defer_s * (REPLICATED_DEFER_FACTOR if facts.replicated else 1)
    return claim_delay(task, me, ranked, wanted=wanted, defer_s=defer)


def verifier_claim_delay(task: CID, me: str, verifiers: Iterable[str], *, defer_s: float) -> float:
    """Seconds after first seeing ``task`` ready to judge from which the verifier ``me`` judges it.

    The preferred live verifier judges at once and the k-th after ``k *
    defer_s``, so one verdict (not one per verifier) is the usual case and
    a dead verifier is still covered.  ``me`` is always a candidate.
    """
    return claim_delay(task, me, [*verifiers, me], wanted=1, defer_s=defer_s)


__all__ = ["REPLICATED_DEFER_FACTOR", "TaskFacts", "claim_at", "claim_delay", "rendezvous_rank",
           "runner_claim_delay", "runner_wanted", "verifier_claim_delay"]
