"""The claim planner: which node claims a task first, and when the others step in.

There is no coordinator.  Every node that could take a task (a runner a task,
a verifier a verdict) ranks the live candidates the same way, by rendezvous
hashing (highest random weight): ``sha256(peer id || task CID bytes)``.
Runners are ranked by *weighted* rendezvous (:func:`weighted_rank`), each
weighted by its :func:`effective_capacity` (the slots it advertises, capped
by the work it has been seen to complete), so a batch enqueued anywhere is
shared across the live runners in proportion to their capacity, as soon as
they see it.  The top ``wanted`` candidates may claim at once; the k-th after
them waits ``k * defer_s`` from when it first saw the task ready.  So most
tasks are claimed once, by the same node everywhere; a replicated task is
claimed by as many nodes as it wants replicas; and the unstarted work of a
dead, stopped or overloaded runner (which claims only what it can start
soon, see ``RunnerOptions.ahead_s``) is stolen by the others after a short
deferral.

Pure functions of plain values (the queue view's facts about a task, the live
candidates with their weights, trust facts, and times the caller passes in);
nothing here reads a clock.  A role keeps when it first saw each task and
claims when ``now >= first_seen + delay``::

    delay = runner_claim_delay(task, me, {peer: weight, ...}, facts, defer_s=0.5,
                               trusted=lambda p: trust.trusted(p, engine), banned=trust.banned_peers())
    if delay == 0 or now - first_seen.setdefault(task, now) >= delay:
        claim(task)

Every node that has the same live set and weights computes the same rank, so
the rules below hold across the mesh without messages (nodes whose views
differ for a moment may both claim; the queue's winner rule then picks one):

* exactly ``wanted`` candidates may claim at ``first_seen`` (fewer when there
  are fewer candidates);
* when the top-ranked candidates are dead, the next live one claims after at
  most ``len(candidates) * defer_s``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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


def weighted_rank(task: CID, weights: Mapping[str, float]) -> list[str]:
    """Peers in order of preference for ``task``, weighted by capacity.

    Weighted rendezvous hashing (Schindelhauer and Schomaker's "weighted
    distributed hash tables"; the logarithmic method): peer ``p`` scores
    ``-ln(u_p) / w_p`` with ``u_p`` uniform in (0, 1) from ``sha256(p ||
    task)``, lowest first.  Peer ``p`` then ranks first for a share
    ``w_p / sum(w)`` of all tasks, and removing a peer moves only its own
    share.  Peers of weight <= 0 are left out.  With equal weights this is
    exactly :func:`rendezvous_rank`.
    """
    live = {p: w for p, w in weights.items() if w > 0}
    if len(set(live.values())) <= 1:
        return rendezvous_rank(task, live)

    raw = task.raw

    def score(p: str) -> tuple[float, int]:
        digest = hashlib.sha256(p.encode() + raw).digest()
        u = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64
        return (-math.log(u) / live[p], -int.from_bytes(digest, "big"))

    return sorted(live, key=score)


def effective_capacity(advertised: int, completed: int) -> int:
    """The slots a peer's share is weighted by: what it advertises, but at
    most one more than the tasks it has been seen to complete (at least 1).

    So a new or lying peer that announces 10,000 slots ranks first for no
    more work than a 1-slot peer until it has done the work; an honest peer
    reaches its real capacity after ``slots - 1`` completions.
    """
    return max(1, min(int(advertised), 1 + int(completed)))


def constraints_ok(constraints: Iterable[Mapping[str, Any]], inv: Mapping[str, Any]) -> bool:
    """Whether an inventory (a node's own, or a peer's from its presence)
    satisfies every task constraint (``os``, ``arch``, ``label``,
    ``min_memory``, ``gpu``).  An inventory that lacks a field a constraint
    names does not satisfy it."""
    for c in constraints:
        t, v = c.get("type"), c.get("value")
        if t == "os" and str(v).lower() != inv.get("os"):
            return False
        if t == "arch" and str(v).lower() not in (inv.get("arch"),
                                                  {"x86_64": "amd64", "aarch64": "arm64"}.get(str(inv.get("arch")))):
            return False
        if t == "label" and v not in (inv.get("labels") or ()):
            return False
        if t == "min_memory":
            mem = inv.get("memory")
            if not isinstance(v, (int, float)) or type(mem) is not int or mem < v:
                return False
        if t == "gpu" and bool(v) and not inv.get("gpu"):
            return False
    return True


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
    return _delay_in(rendezvous_rank(task, candidates), me, wanted, defer_s)


def _delay_in(ranked: list[str], me: str, wanted: int, defer_s: float) -> float:
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
        spot_checked: Picked for full replication whatever the trust
            (``meshd.roles.verify.spot_checked``).
    """

    wanted: int = 1
    replicated: bool = False
    claimed: bool = False
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


def runner_claim_delay(task: CID, me: str, runners: Iterable[str] | Mapping[str, float], facts: TaskFacts, *,
                       defer_s: float, trusted: Callable[[str], bool] = lambda p: False,
                       banned: Collection[str] = frozenset()) -> float:
    """Seconds after first seeing ``task`` runnable from which the runner ``me`` may claim it.

    The task's first-ranked runner claims at once: its *share*.  Every other
    runner may take it ``k * defer_s`` after first seeing it ready (k: its
    rank below the ``wanted`` first), which is how a runner that falls
    behind, or died, has its unstarted work stolen.  Where a task was
    submitted plays no part: the submitter runs its share, not everything.

    Args:
        task: The task.
        me: This runner's peer id.
        runners: Live runners that could run the task (this one included
            when it can), or a map of them to their weights
            (:func:`effective_capacity`): shares then follow capacity
            (:func:`weighted_rank`).
        facts: The queue view's facts about ``task``.
        defer_s: The runner's deferral per rank (``RunnerOptions.defer_s``);
            replicated tasks wait :data:`REPLICATED_DEFER_FACTOR` times longer.
        trusted: Whether a peer is trusted for the task's engine; asked about
            the top-ranked runner only, and only when adaptive replication
            could apply (so the caller may look trust up lazily).
        banned: Banned peers: they are not candidates.

    Returns:
        0 to claim at once; else the delay (see :func:`claim_delay`).
    """
    weights = runners if isinstance(runners, Mapping) else dict.fromkeys(runners, 1.0)
    ranked = weighted_rank(task, {p: w for p, w in weights.items() if p not in banned})
    if len(ranked) <= 1 or me not in ranked:
        return 0.0
    wanted = facts.wanted
    if runner_wanted(facts, True) != wanted:  # the rule could apply: ask about the preferred runner only
        wanted = runner_wanted(facts, trusted(ranked[0]))
    defer = defer_s * (REPLICATED_DEFER_FACTOR if facts.replicated else 1)
    return _delay_in(ranked, me, wanted, defer)


def verifier_claim_delay(task: CID, me: str, verifiers: Iterable[str], *, defer_s: float) -> float:
    """Seconds after first seeing ``task`` ready to judge from which the verifier ``me`` judges it.

    The preferred live verifier judges at once and the k-th after ``k *
    defer_s``, so one verdict (not one per verifier) is the usual case and
    a dead verifier is still covered.  ``me`` is always a candidate.
    """
    return claim_delay(task, me, [*verifiers, me], wanted=1, defer_s=defer_s)


__all__ = ["REPLICATED_DEFER_FACTOR", "TaskFacts", "claim_at", "claim_delay", "constraints_ok",
           "effective_capacity", "rendezvous_rank", "runner_claim_delay", "runner_wanted", "verifier_claim_delay",
           "weighted_rank"]
