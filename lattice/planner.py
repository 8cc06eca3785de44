"""One runner's claim round, as pure code: which ready tasks to claim now.

The rules are :mod:`lattice.claims`' (capacity-weighted rendezvous, deferral
per rank); this module applies them to a queue view for one runner, so the
daemon's Runner and the many-runner simulation make the same decisions.

A round, given the runner's free room::

    planner = ClaimPlanner(me, defer_s=0.5)
    cands = planner.candidates(live_inventories, queue.completed_by, banned)
    todo = planner.plan(queue, now_ms, free, clock=time.monotonic(), cands=cands,
                        fit=fit_of, facts=facts_of)

* **Share first.**  Tasks this runner ranks first for, among the live
  runners that can run them, are claimed at once.
* **Then steal.**  Tasks of other runners' shares are claimed once they have
  been ready, as this runner saw them, for ``rank * defer_s``.  A runner
  claims only about ``ahead_s`` of work per slot (``RunnerOptions``), so the
  unstarted rest of a slow, stopped or dead runner's share stays in the
  shared queue, where this is what moves it.

Nothing here reads a clock or does I/O; ``clock`` is any monotonic time in
seconds, ``now_ms`` the queue's wall-clock milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .cid import CID
from .claims import TaskFacts, constraints_ok, effective_capacity, runner_claim_delay
from .queue import QueueView

#: First-seen times kept per runner before the table is reset (bounded memory).
MAX_FIRST_SEEN = 200_000


@dataclass(frozen=True, slots=True)
class Fit:
    """What one task asks of a runner, and whether this runner meets it.

    Attributes:
        ok: This runner can run it (constraints and engine platform).
        constraints: The task's constraints, matched against peers' inventories.
        platforms: Platform keys its engine has builds for (None: any).
    """

    ok: bool
    constraints: tuple[Mapping[str, Any], ...] = ()
    platforms: frozenset[str] | None = None

    def runs_on(self, inventory: Mapping[str, Any]) -> bool:
        """Whether a runner with ``inventory`` (from its presence) could run the task."""
        return ((not self.constraints or constraints_ok(self.constraints, inventory))
                and (self.platforms is None or inventory.get("platform") in self.platforms))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live runner as one round sees it: its weight and announced inventory."""

    weight: int
    inventory: Mapping[str, Any]


class ClaimPlanner:
    """Claim decisions of one runner; remembers when it first saw each task.

    Args:
        me: This runner's peer id.
        defer_s: Deferral per rank (``RunnerOptions.defer_s``).
    """

    def __init__(self, me: str, *, defer_s: float) -> None:
        self.me = me
        self.defer_s = defer_s
        self.first_seen: dict[CID, float] = {}

    @staticmethod
    def candidates(live: Mapping[str, Mapping[str, Any]], completed_by: Callable[[str], int],
                   banned: Collection[str] = frozenset()) -> dict[str, Candidate]:
        """The live runners (not banned) with their weights.

        A runner's weight is its announced ``slots`` capped by the
        completions the queue has seen from it
        (:func:`lattice.claims.effective_capacity`).  Every runner weighs
        every other, itself included, by this one rule, so all rank alike.
        """
        out: dict[str, Candidate] = {}
        for peer, inv in live.items():
            if peer in banned:
                continue
            slots = inv.get("slots")
            slots = slots if type(slots) is int and slots > 0 else 1
            out[peer] = Candidate(effective_capacity(slots, completed_by(peer)), inv)
        return out

    def delay(self, task: CID, fit: Fit, cands: Mapping[str, Candidate], facts: TaskFacts,
              trusted: Callable[[str], bool] = lambda p: False) -> float:
        """Seconds after first seeing ``task`` from which this runner may claim it.

        No candidates (no mesh) means no one to defer to: 0.
        """
        if not cands:
            return 0.0
        weights = {p: c.weight for p, c in cands.items() if fit.runs_on(c.inventory)}
        return runner_claim_delay(task, self.me, weights, facts, defer_s=self.defer_s, trusted=trusted)

    def plan(self, queue: QueueView, now_ms: int, free: int, *, clock: float,
             cands: Mapping[str, Candidate], fit: Callable[[CID], Fit | None],
             facts: Callable[[CID], TaskFacts], trusted: Callable[[CID, str], bool] = lambda t, p: False,
             exclude: Collection[CID] = ()) -> list[CID]:
        """Up to ``free`` tasks to claim now: this runner's share first, then stolen ones.

        Args:
            queue: The queue view (``Next`` supplies ready tasks in order).
            now_ms: The queue's clock (lease expiry).
            free: Room for more claims.
            clock: Monotonic seconds (deferrals).
            cands: This round's live runners (:meth:`candidates`); empty
                when there is no mesh: every task is this runner's.
            fit: A task's :class:`Fit`, or None while its body is not here.
            facts: The queue view's facts about a task.
            trusted: Whether a peer is trusted for a task's engine.
            exclude: Tasks this runner already holds.
        """

        def delay_of(t: CID) -> float | None:
            f = fit(t)
            if f is None or not f.ok:
                return None
            return self.delay(t, f, cands, facts(t), lambda p: trusted(t, p))

        def share(t: CID) -> bool:
            d = delay_of(t)
            if d is None or t in exclude:
                return False
            if d == 0:
                return True
            if len(self.first_seen) >= MAX_FIRST_SEEN:
                self.first_seen.clear()
            self.first_seen.setdefault(t, clock)  # another's share: its deferral starts now
            return False

        def steal(t: CID) -> bool:
            d = delay_of(t)
            if not d or t in exclude:  # None: cannot run it; 0: offered by the first pass
                return False
            return clock - self.first_seen.setdefault(t, clock) >= d

        out = queue.next(now_ms, limit=free, accept=share, me=self.me)
        if len(out) < free and cands:
            out += queue.next(now_ms, limit=free - len(out), accept=steal, me=self.me)
        return out

    def waiting(self) -> bool:
        """Whether some task of another runner's share is waiting out its deferral here."""
        return bool(self.first_seen)


__all__ = ["Candidate", "ClaimPlanner", "Fit", "MAX_FIRST_SEEN"]
