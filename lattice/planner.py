"""One runner's claim round, as pure code: which ready tasks to claim now.

The rules are :mod:`lattice.claims`' (capacity-weighted rendezvous, deferral
per rank); this module applies them to a queue view for one runner, so the
daemon's Runner and the many-runner simulation make the same decisions.

A round, given the runner's free room::

    planner = ClaimPlanner(me, defer_s=0.5)
    cands = planner.candidates(live_inventories, queue.completed_by, now_ms, banned)
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

import hashlib
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .cid import CID
from .claims import TaskFacts, constraints_ok, effective_capacity, runner_claim_delay, weighted_rank
from .queue import QueueView

#: First-seen times (and cached delays) kept per runner before the table is reset (bounded memory).
MAX_FIRST_SEEN = 200_000
_PLAIN = TaskFacts()
#: A stealer chooses among this many stealable tasks per free slot.
STEAL_POOL = 16
#: Ready tasks a steal pass examines at least (newest first) per round.
STEAL_SCAN = 2048
#: The window over which a runner's pace is measured (:meth:`ClaimPlanner.rate`).
RATE_WINDOW_MS = 5000
#: Weights change only at these wall-clock boundaries (ms); see :meth:`ClaimPlanner.candidates`.
EPOCH_MS = 2000
#: Completions count towards a weight only once they are this much older than
#: the boundary (ms): more than the lag a stealer allows for (``MAX_LAG_S``),
#: so every runner has them when it switches, and all switch alike.
EPOCH_MARGIN_MS = 6000
#: How long an idle owner that is heard from keeps a task of its share that
#: it does not claim: past this, it is stolen like a busy owner's (an owner
#: that cannot take a task, say its body never reached it, must not hold it).
IDLE_OWNER_GRACE_S = 10.0
#: Longest propagation lag (s) the planner adapts to; beyond it leases, not
#: waiting, sort out a duplicate.
MAX_LAG_S = 5.0


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
    """A live runner as one round sees it.

    Attributes:
        weight: Its weight (effective capacity).
        inventory: Its announced inventory (``free``: idle slots it announced).
        fresh: Its presence is current (heard within about one announce
            round); a silent runner still ranks, and its share may be stolen.
    """

    weight: int
    inventory: Mapping[str, Any]
    fresh: bool = True

    @property
    def idle(self) -> bool:
        """It is heard from and announced idle slots: it claims its share
        itself, so nobody steals from it (its view may only be late)."""
        free = self.inventory.get("free")
        return self.fresh and type(free) is int and free > 0


def _jitter(me: str, task: CID) -> float:
    """A per-(runner, task) number in [0, 1): stealers that may take the same
    tasks at once order them differently, so they mostly pick different ones."""
    return int.from_bytes(hashlib.blake2b(me.encode() + task.raw, digest_size=4).digest(), "big") / 2**32


class ClaimPlanner:
    """Claim decisions of one runner; remembers when it first saw each task.

    Args:
        me: This runner's peer id.
        defer_s: Deferral per rank (``RunnerOptions.defer_s``).
        settle_s: How long a stolen claim waits before it starts
            (:meth:`settled`; default ``defer_s / 2``).
        steal_ranks: Longest deferral of a steal, in ranks (default 2).
    """

    def __init__(self, me: str, *, defer_s: float, settle_s: float | None = None, steal_ranks: int = 2) -> None:
        self.me = me
        self.steal_ranks = steal_ranks
        self.defer_s = defer_s
        self.settle_s = defer_s / 2 if settle_s is None else settle_s
        self.first_seen: dict[CID, float] = {}
        self.first_seen_ms: dict[CID, int] = {}  # the same moment, on the queue's wall clock
        #: Per runner, the newest ``at`` of its claim and completion records seen here.
        self.last_heard: dict[str, int] = {}
        self.stolen: set[CID] = set()  # claimed from another runner's share, not yet finished
        self._version: frozenset[Any] | None = None
        self._delays: dict[CID, float] = {}
        self._owners: dict[CID, str | None] = {}  # a task's owner under _version (ranking hashes per peer)
        # The index of this runner's share (see plan): its tasks in arrival
        # order, how many of the queue's tasks were classified, and those
        # whose body had not arrived when they were.
        self._mine: dict[CID, None] = {}
        self._indexed = 0
        self._unsure: dict[CID, None] = {}
        self._indexed_queue: object | None = None
        self._lags: deque[float] = deque(maxlen=128)
        self.lag_s = 0.0
        #: Per runner, the ``at`` of its recent claim and completion records
        #: (the last RATE_WINDOW_MS): how fast it takes work, see :meth:`rate`.
        self._recent: dict[str, deque[int]] = {}

    def observe(self, heard: Iterable[tuple[str, int, int | None]], now_ms: int) -> None:
        """Learn how late peers' records arrive here: ``heard`` holds the
        ``(writer, at, arrived)`` of claim and completion records applied
        since the last call (``QueueView.heard``; ``arrived`` None: now).

        ``lag_s``, the 90th percentile of ``now - at`` over the last 128
        records of other runners (capped at ``MAX_LAG_S``), stretches a
        steal's wait and its settle: under load, gossip takes seconds, and a
        stealer that waits less than its victim's claim takes to arrive runs
        the task twice.  Clock skew between hosts distorts it by the skew;
        a record stamped in our future counts as no lag.
        """
        heard = list(heard)
        for by, at, _ in heard:
            recent = self._recent.get(by)
            if recent is None:
                if len(self._recent) >= MAX_FIRST_SEEN:
                    self._recent.clear()
                recent = self._recent[by] = deque(maxlen=4096)
            recent.append(at)
            while recent and recent[0] < at - RATE_WINDOW_MS:
                recent.popleft()
            if at > self.last_heard.get(by, -1):
                if by not in self.last_heard and len(self.last_heard) >= MAX_FIRST_SEEN:
                    self.last_heard.clear()
                self.last_heard[by] = at
        fresh = [min(MAX_LAG_S, max(0.0, ((now_ms if got is None else got) - at) / 1000))
                 for by, at, got in heard if by != self.me]
        if fresh:
            self._lags.extend(fresh)
            ordered = sorted(self._lags)
            self.lag_s = ordered[int(0.9 * (len(ordered) - 1))]

    def rate(self, peer: str, now_ms: int) -> float:
        """Tasks per second ``peer`` took lately: half its claim and completion
        records per second (each task it runs writes one of each)."""
        recent = self._recent.get(peer)
        if not recent:
            return 0.0
        # Over the peer's own latest window, not ours: its records arrive
        # seconds late under load, and counting only those stamped in our
        # last window would take a busy owner for a slow one.
        newest = max(recent)
        if newest < now_ms - RATE_WINDOW_MS - MAX_LAG_S * 1000:
            return 0.0  # nothing lately: no pace
        return sum(1 for at in recent if at >= newest - RATE_WINDOW_MS) * 500 / RATE_WINDOW_MS

    def _settle_s(self) -> float:
        return max(self.settle_s, self.lag_s)

    @staticmethod
    def candidates(live: Mapping[str, Mapping[str, Any]], completed_by: Callable[[str, int], int], now_ms: int,
                   banned: Collection[str] = frozenset(), *, epoch_ms: int = EPOCH_MS,
                   margin_ms: int = EPOCH_MARGIN_MS,
                   fresh: Collection[str] | None = None) -> dict[str, Candidate]:
        """The live runners (not banned, not draining) with their weights.

        A runner's weight is its announced ``slots`` capped by the
        completions the queue has seen from it
        (:func:`lattice.claims.effective_capacity`), counting only those
        stamped before the last ``epoch_ms`` boundary at least ``margin_ms``
        ago (``QueueView.completed_by(peer, before_ms)``): every runner weighs
        every other, itself included, by this one rule from the same
        records, so all rank alike even while the newest completions are
        still on their way.  ``fresh``: the runners heard from lately (None:
        all); the others are silent (:attr:`Candidate.fresh`).
        """
        # Measured (issue 13): with the boundary at the last second, a batch's
        # first completions reached the three runners of a loaded mesh 1-2 s
        # apart, so for a while each weighed the others differently, each took
        # some of the others' shares for its own (4,150 "own share" claims for
        # 2,060 tasks), and 30-40% of the tasks ran twice.  Counting only
        # completions older than the lag makes the weights the same
        # everywhere, at the price of a runner reaching its full weight 6-8 s
        # after it proved it.
        before = (now_ms - margin_ms) // epoch_ms * epoch_ms
        out: dict[str, Candidate] = {}
        for peer, inv in live.items():
            if peer in banned or inv.get("draining") is True:
                continue  # a draining runner announced that it takes no more work
            slots = inv.get("slots")
            slots = slots if type(slots) is int and slots > 0 else 1
            out[peer] = Candidate(effective_capacity(slots, completed_by(peer, before)), inv,
                                  fresh is None or peer in fresh)
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

    def owner(self, task: CID, fit: Fit, cands: Mapping[str, Candidate]) -> str | None:
        """The runner whose share ``task`` is (first by weighted rank among those that can run it)."""
        ranked = weighted_rank(task, {p: c.weight for p, c in cands.items() if fit.runs_on(c.inventory)})
        return ranked[0] if ranked else None

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

        # Ranking a task hashes it with every candidate: remember each task's
        # delay while the candidates and their weights stay the same (they
        # change as peers come, go, and prove capacity, then settle).
        version = frozenset((p, c.weight, c.inventory.get("platform"), repr(c.inventory.get("labels")))
                            for p, c in cands.items())
        if version != self._version or queue is not self._indexed_queue:
            self._version, self._delays, self._owners = version, {}, {}
            # This runner's share is decided anew: every task is classified again.
            self._mine, self._indexed, self._unsure, self._indexed_queue = {}, 0, {}, queue
        cache = self._delays

        def delay_of(t: CID) -> float | None:
            f = fit(t)
            if f is None or not f.ok:
                return None
            d = cache.get(t)
            if d is None:
                facts_t = facts(t)
                d = self.delay(t, f, cands, facts_t, lambda p: trusted(t, p))
                if facts_t == _PLAIN:  # replication facts change: not cached
                    if len(cache) >= MAX_FIRST_SEEN:
                        cache.clear()
                    cache[t] = d
            return d

        def share(t: CID) -> bool:
            d = delay_of(t)
            if d is None or t in exclude:
                return False
            if d == 0:
                return True
            if len(self.first_seen) >= MAX_FIRST_SEEN:
                self.first_seen.clear()
                self.first_seen_ms.clear()
            self.first_seen.setdefault(t, clock)  # another's share: its deferral starts now
            self.first_seen_ms.setdefault(t, now_ms)
            return False

        delays: dict[CID, float] = {}
        owners = self._owners
        if len(owners) >= MAX_FIRST_SEEN:
            owners.clear()
        def steal(t: CID) -> bool:
            d = delay_of(t)
            if not d or t in exclude:  # None: cannot run it; 0: offered by the first pass
                return False
            # Only from a runner that is behind (busy) or silent: an idle one
            # that is heard from claims its share itself, and stealing from it
            # would run the task twice whenever its view of the queue lags.
            owner = owners.get(t)
            if owner is None:
                f = fit(t)
                owner = owners[t] = self.owner(t, f, cands) if f is not None else None
            c = cands.get(owner) if owner is not None else None
            if c is not None and c.idle and clock - self.first_seen.get(t, clock) < IDLE_OWNER_GRACE_S:
                return False
            # Nor from a runner heard from that has written no claim or
            # completion since the task appeared here: it has most likely not
            # seen the task yet (a large batch takes a while to reach it), and
            # will claim it.  A silent runner is stolen from regardless.
            # Nor while it has not shown it has the task: it claimed or
            # completed nothing enqueued with it or after it (QueueView.reach).
            # A submitter sees its next batch seconds before the other runners
            # do, and their claims on the previous batch say nothing about it:
            # measured, a submitter that stole on that evidence ran a fifth of
            # a 2,000-task bulk twice.
            seen = self.first_seen_ms.setdefault(t, now_ms)
            pos = queue.position(t)
            if c is not None and c.fresh and owner != self.me \
                    and (self.last_heard.get(owner, -1) < seen or (pos is not None and queue.reach(owner) < pos)) \
                    and clock - self.first_seen.get(t, clock) < IDLE_OWNER_GRACE_S:
                return False
            # Nor what a working owner will reach soon anyway: taking its share
            # oldest first, it has about (tasks between its frontier and this
            # one) x (its share) to do first.  If that takes less than its
            # records take to reach us and a steal takes to settle, the owner
            # most likely runs the task before our claim reaches it (measured:
            # 9 in 10 duplicates of a loaded mesh were steals of tasks their
            # owner had finished 0-2 s before).  An owner that writes nothing
            # has no pace and is stolen from as before.
            if c is not None and c.fresh and owner != self.me:
                idx = queue.order_index(t)
                total = sum(x.weight for x in cands.values()) or 1
                if idx is not None:
                    before_it = max(0, idx - queue.frontier(owner)) * c.weight / total
                    if before_it < self.rate(owner, now_ms) * (2 * self.lag_s + self._settle_s()):
                        return False
            delays[t] = d + _jitter(self.me, t) * self.defer_s
            # Rank orders the stealers, but no idle runner waits longer than
            # ``steal_ranks`` deferrals: in a large mesh the last-ranked of 50
            # would otherwise sit idle for 25 s beside a backlog.
            # A victim's claim needs about two lags to show here (the task
            # reaching it, its claim coming back): never steal sooner.
            wait = max(min(d, self.steal_ranks * self.defer_s), 2 * self.lag_s)
            return clock - self.first_seen.setdefault(t, clock) >= wait

        # The share pass reads an index of this runner's share (tasks are
        # classified once, as they arrive) rather than walking every ready
        # task of every runner's share each round: on a submitter with a long
        # backlog that walk was a fifth of its CPU.
        new = queue.tasks_since(self._indexed)
        self._indexed += len(new)
        for t in (*self._unsure, *new):
            self._unsure.pop(t, None)
            if queue.ready(t, now_ms) is None:
                continue  # done, rejected, or replicated (offered by next below)
            if fit(t) is None:
                if len(self._unsure) < MAX_FIRST_SEEN:
                    self._unsure[t] = None  # its body is not here yet: classified when it is
                continue
            d = delay_of(t)
            if d == 0:
                self._mine[t] = None
            elif d is not None:
                share(t)  # another's share: its deferral starts now
        share_now: list[CID] = []
        gone: list[CID] = []
        for t in self._mine:
            if len(share_now) >= free:
                break
            r = queue.ready(t, now_ms)
            if r is None:
                gone.append(t)
            elif r and t not in exclude:
                share_now.append(t)
        for t in gone:
            del self._mine[t]
        if len(share_now) < free:
            share_now += queue.next(now_ms, limit=free - len(share_now), accept=share, me=self.me, plain=False)
        stolen: list[CID] = []
        if len(share_now) < free and cands:
            # Steal from the far end: the newest tasks, which a busy owner
            # (claiming its share oldest first) reaches last, so a steal's
            # claim has the most time to reach it before it would run the
            # task too (work stealing's owner-pops-head, thief-takes-tail).
            # Of those, a runner takes the ones it ranks highest for: idle
            # runners then mostly take different tasks.
            room = free - len(share_now)
            # Bounded scan: a round looks at the newest few thousand tasks,
            # not a whole long queue whose owners are all keeping up.
            pool = queue.next(now_ms, limit=STEAL_POOL * room, accept=steal, me=self.me, newest_first=True,
                              scan=max(STEAL_SCAN, 8 * STEAL_POOL * room))
            # A task that was claimed before and is ready again first: its
            # claim lapsed (a reservation its runner, stopped or slow, never
            # started, docs/protocol.md) or its attempt was given back, so it
            # has waited longest and its owner has shown it cannot run it.
            def lapsed(t: CID) -> bool:
                info = queue.info(t)
                return info is not None and bool(info.assignments)

            stolen = sorted(pool, key=lambda t: (not lapsed(t), delays[t]))[:room]
        self.stolen.update(stolen)
        if len(self.stolen) > MAX_FIRST_SEEN:
            self.stolen = set(stolen)
        return share_now + stolen

    def settled(self, task: CID, claimed_at: float, clock: float) -> bool:
        """Whether a claimed ``task`` may start: at once for this runner's
        share; for a stolen one, ``settle_s`` after the claim, so a claim by
        its owner or another stealer made at the same moment has arrived and
        the queue's winner rule has picked one (a duplicate run is then rare,
        not the usual outcome of a race)."""
        return task not in self.stolen or clock - claimed_at >= self._settle_s()

    def settle_wait(self, task: CID) -> float:
        """Seconds a just-claimed ``task`` waits before it starts (0 for this
        runner's own share; see :meth:`settled`)."""
        return self._settle_s() if task in self.stolen else 0.0

    def settle_ms(self, task: CID) -> int:
        """The ``settle`` a claim on ``task`` carries (``lattice.queue.assign_op``):
        the settle time (``settle_s``, stretched to the observed lag) for a
        stolen task, 0 for this runner's own share."""
        return int(self._settle_s() * 1000) if task in self.stolen else 0

    def forget(self, task: CID) -> None:
        """``task`` is finished or dropped here."""
        self.stolen.discard(task)
        self.first_seen.pop(task, None)
        self.first_seen_ms.pop(task, None)

    def waiting(self) -> bool:
        """Whether some task of another runner's share is waiting out its deferral here."""
        return bool(self.first_seen)


__all__ = ["EPOCH_MARGIN_MS", "EPOCH_MS", "Candidate", "ClaimPlanner", "Fit", "MAX_FIRST_SEEN"]
