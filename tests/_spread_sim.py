"""A seeded, virtual-time mesh of runners sharing one queue GOHO.

Each runner has its own queue replica (real :class:`lattice.goho.Replica`
and :class:`lattice.queue.QueueView`) and decides with the daemon's own
planner (:class:`lattice.planner.ClaimPlanner`, the queue's winner rule and
lease records).  What the daemon's Runner adds around the planner is modelled
here as it does it: a claim window of about ``ahead_s`` of work per slot,
claims beyond the idle slots leased for ``reserve_s`` only (reservations),
a claim that is run only if still held when a slot frees, renewals of
started attempts, and one delta per claim round and per completion round.

Deltas travel as gossip does: each to every other runner after a latency,
some dropped (and recovered by the next anti-entropy round, as HPCP's head
announcements recover them), some duplicated, and none across a partition
until it heals.  A runner's view of who is live follows presence: a peer
that died, or that a partition hides, leaves the view ``horizon_s`` later.
Nothing sleeps; one seeded RNG drives everything.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from lattice import codec, goho, queue, records
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.claims import TaskFacts
from lattice.planner import ClaimPlanner, Fit
from lattice.signing import Signer

X86, ARM = "linux-x86_64", "linux-aarch64"


@dataclass
class SimRunner:
    name: str
    slots: int
    platform: str
    signer: Signer
    replica: goho.Replica
    view: queue.QueueView
    planner: ClaimPlanner
    held: dict[CID, queue.Assignment] = field(default_factory=dict)  # claimed, not finished
    claimed_at: dict[CID, float] = field(default_factory=dict)
    running: dict[CID, float] = field(default_factory=dict)  # started: task -> end time
    dead: bool = False

    @property
    def inventory(self) -> dict[str, Any]:
        return {"slots": self.slots, "platform": self.platform, "free": self.slots - len(self.running)}


@dataclass
class Run:
    task: CID
    runner: str
    start: float
    end: float
    lease_lapsed_before: bool  # an earlier attempt's lease had expired when this one was claimed


class SpreadSim:
    """The mesh; ``tasks`` maps each task to ``(duration_s, platforms or None)``."""

    def __init__(self, seed: int, slots: list[int], platforms: list[str], *, latency_s: tuple[float, float] = (0.005, 0.05),
                 drop: float = 0.02, duplicate: float = 0.02, repair_s: float = 1.0, horizon_s: float = 3.0,
                 defer_s: float = 0.5, ahead_s: float = 2.0, lease_s: float = 10.0, tick_s: float = 0.05,
                 recent_s: float = 30.0, proven: bool = True, reserve_s: float = 3.0) -> None:
        """``proven``: the mesh has worked before the simulation starts: each
        runner completed ``slots`` tasks 20 s ago, so its weight is its slots
        from the start (``ClaimPlanner.candidates`` counts only completions
        older than ``EPOCH_MARGIN_MS``)."""
        self.rng = random.Random(seed)
        self.latency_s, self.drop, self.duplicate, self.repair_s = latency_s, drop, duplicate, repair_s
        self.horizon_s, self.ahead_s, self.lease_ms, self.tick_s = horizon_s, ahead_s, int(lease_s * 1000), tick_s
        self.recent_s = recent_s
        self.reserve_ms = int(min(reserve_s, lease_s) * 1000)
        self.now = 0.0
        self.genesis = records.make_genesis("queue", f"sim-{seed}")[0]
        self.runners: dict[str, SimRunner] = {}
        names = [f"r{i:02d}" for i in range(len(slots))]
        history = self._history(dict(zip(names, slots))) if proven else None
        for name, n, plat in zip(names, slots, platforms):
            rep = goho.Replica.empty(self.genesis, MemoryBlockStore(), goho.ReplicaOptions(verify_signatures=False))
            if history is not None:
                rep.receive_untrusted(*history)
            self.runners[name] = SimRunner(name, n, plat, Signer.from_seed(self.rng.randbytes(32)), rep,
                                           queue.QueueView(rep, clock=lambda: int(self.now * 1000)),
                                           ClaimPlanner(name, defer_s=defer_s))
        self.tasks: dict[CID, tuple[float, frozenset[str] | None]] = {}
        self.runs: list[Run] = []
        self.claims: Counter[str] = Counter()
        self.first_claim: dict[str, float] = {}
        self.done_at: dict[CID, float] = {}
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._died_at: dict[str, float] = {}
        self._stopped: dict[str, tuple[float, float]] = {}  # SIGSTOP: name -> (from, until)
        self._cut: tuple[set[str], float, float] | None = None  # (one side, from, until)

    def _history(self, slots: dict[str, int]) -> tuple[CID, bytes]:
        """One delta in which every runner claimed and completed ``slots`` old tasks."""
        ops: list[list[Any]] = []
        for name, n in slots.items():
            old = [codec.cid_of({"old": name, "i": i}) for i in range(n)]
            ops += queue.enqueue_ops(old)
            for t in old:
                ops.append(queue.assign_op(t, name, -30_000, self.lease_ms, 1))
                ops.append(queue.complete_op(t, name, -20_000, codec.cid_of({"result": str(t)})))
        scratch = goho.Replica.empty(self.genesis, MemoryBlockStore(), goho.ReplicaOptions(verify_signatures=False))
        return scratch.update(ops, Signer.from_seed(b"\x07" * 32))

    # -- the network -------------------------------------------------------------------------

    def _push(self, at: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def _apart(self, a: str, b: str, at: float) -> bool:
        if self._cut is None:
            return False
        side, start, end = self._cut
        return start <= at < end and ((a in side) != (b in side))

    def _gossip(self, src: str, cid: CID, data: bytes) -> None:
        for dst in self.runners:
            if dst == src:
                continue
            at = self.now + self.rng.uniform(*self.latency_s)
            if self.rng.random() < self.drop:
                at += self.repair_s  # lost: the next head announcement brings it (or a child's fetch, below)
            if self._apart(src, dst, at):
                at = self._cut[2] + self.rng.uniform(*self.latency_s)  # held until the partition heals
            self._push(at, "delta", (src, dst, cid, data))
            if self.rng.random() < self.duplicate:
                self._push(at + self.rng.uniform(*self.latency_s), "delta", (src, dst, cid, data))

    def _fetch(self, src: str, dst: str, missing: list[CID]) -> None:
        """HPCP: a delta whose parents are missing makes ``dst`` fetch them
        from the peer that sent it, one request round trip later (unless a
        partition is in the way, or the request is lost: the next head
        announcement then brings them)."""
        for cid in missing:
            at = self.now + 2 * self.rng.uniform(*self.latency_s)
            if self.rng.random() < self.drop or self.runners[src].dead:
                continue
            if self._apart(src, dst, at):
                continue
            self._push(at, "delta", (src, dst, cid, self.runners[src].replica.store.get(cid)))

    def _commit(self, r: SimRunner, ops: list[list[Any]]) -> None:
        cid, data = r.replica.update(ops, r.signer)
        self._gossip(r.name, cid, data)

    def _heard(self, r: SimRunner, within_s: float) -> list[SimRunner]:
        """Runners ``r`` has heard from within ``within_s``: alive then, and
        not cut off from it for longer than that."""
        out = []
        for p in self.runners.values():
            died = self._died_at.get(p.name)
            if died is not None and self.now >= died + within_s:
                continue
            stop = self._stopped.get(p.name)
            if stop is not None and stop[0] + within_s <= self.now < stop[1]:
                continue
            if self._cut is not None and p.name != r.name:
                side, start, end = self._cut
                if (p.name in side) != (r.name in side) and start + within_s <= self.now < end:
                    continue
            out.append(p)
        return out

    def live(self, r: SimRunner) -> dict[str, dict[str, Any]]:
        """``r``'s candidates, as the Runner reads them (``RunnerOptions.recent_s``):
        runners heard from within ``recent_s``, so a dead or cut-off runner
        ranks for ``recent_s`` after its last presence, and its share is stolen."""
        return {p.name: p.inventory for p in self._heard(r, self.recent_s)}

    def fresh(self, r: SimRunner) -> set[str]:
        """Runners ``r`` heard from within the last round: alive, and not cut off from it."""
        return {p.name for p in self._heard(r, self.repair_s)}

    # -- the world ---------------------------------------------------------------------------

    def enqueue(self, at: str, n: int, *, duration_s: float, platforms: frozenset[str] | None = None) -> list[CID]:
        r = self.runners[at]
        new = []
        for _ in range(n):
            t = codec.cid_of({"task": self.rng.randbytes(8)})
            self.tasks[t] = (duration_s, platforms)
            new.append(t)
        self._commit(r, queue.enqueue_ops(new))
        return new

    def kill(self, name: str) -> None:
        self.runners[name].dead = True
        self._died_at[name] = self.now

    def stop(self, name: str, duration_s: float) -> None:
        """SIGSTOP for ``duration_s``: it does nothing, hears nothing and is not heard
        (what reached it is read on resume), and its running tasks are frozen too."""
        self._stopped[name] = (self.now, self.now + duration_s)
        r = self.runners[name]
        for t in r.running:
            r.running[t] += duration_s

    def _is_stopped(self, name: str) -> bool:
        stop = self._stopped.get(name)
        return stop is not None and stop[0] <= self.now < stop[1]

    def partition(self, side: set[str], duration_s: float) -> None:
        self._cut = (set(side), self.now, self.now + duration_s)

    def run_until(self, until: float) -> None:
        next_tick = self.now
        while self.now < until:
            if self._events and self._events[0][0] <= next_tick:
                at, _, kind, payload = heapq.heappop(self._events)
                self.now = max(self.now, at)
                if kind == "delta":
                    src, dst, cid, data = payload
                    if self._is_stopped(dst):
                        self._push(self._stopped[dst][1], kind, payload)  # read once it resumes
                    elif not self.runners[dst].dead:
                        got = self.runners[dst].replica.receive_untrusted(cid, data)
                        self._fetch(src, dst, got.missing)
                continue
            self.now = next_tick
            for r in self.runners.values():
                if not r.dead and not self._is_stopped(r.name):
                    self._step(r)
            next_tick += self.tick_s

    def all_done(self) -> bool:
        return len(self.done_at) == len(self.tasks)

    def run_to_completion(self, limit_s: float = 600.0) -> float:
        while not self.all_done():
            assert self.now < limit_s, f"{len(self.done_at)}/{len(self.tasks)} done at {self.now:.1f} s"
            self.run_until(self.now + 1.0)
        return max(self.done_at.values())

    # -- one runner, as meshd.roles.runner.Runner does it -------------------------------------

    def _fit(self, r: SimRunner, t: CID) -> Fit | None:
        spec = self.tasks.get(t)
        if spec is None:
            return None
        plats = spec[1]
        return Fit(plats is None or r.platform in plats, (), plats)

    def _step(self, r: SimRunner) -> None:
        now_ms = int(self.now * 1000)
        # Finish what ended: one completion delta per round.
        ended = [t for t, end in r.running.items() if end <= self.now]
        if ended:
            ops = []
            for t in ended:
                del r.running[t]
                r.held.pop(t, None)
                r.planner.forget(t)
                ops.append(queue.complete_op(t, r.name, now_ms, codec.cid_of({"result": str(t)})))
                self.done_at.setdefault(t, self.now)
            self._commit(r, ops)
        # Renew started attempts whose lease is a third gone (one delta).
        renew = []
        for t in r.running:
            a = r.held[t]
            if a.until - now_ms <= self.lease_ms * 2 // 3:
                a2 = queue.Assignment(t, r.name, a.at, now_ms + min(8 * self.lease_ms, max(self.lease_ms, now_ms - a.at)), a.n,
                                      a.settle)
                renew.append(queue.renew_op(a, a2.until, now_ms))
                r.held[t] = a2
        if renew:
            self._commit(r, renew)
        # Claim: about ahead_s of work per slot, in batches (a quarter of the window).
        avg = 1.0  # what the runner's EWMA of attempt times settles at
        limit = r.slots * int(min(64, max(1, self.ahead_s / avg)))
        free = limit - len(r.held)
        if free <= 0 or (r.held and free < max(1, limit // 4)):
            self._start(r, now_ms)
            return
        cands = ClaimPlanner.candidates(self.live(r), r.view.completed_by, now_ms, fresh=self.fresh(r))
        todo = r.planner.plan(r.view, now_ms, free, clock=self.now, cands=cands, fit=lambda t: self._fit(r, t),
                              facts=lambda t: TaskFacts(), exclude=r.held)
        if r.view.heard:  # as the Runner does: how late peers' records arrive stretches steals
            r.planner.observe(list(r.view.heard), now_ms)
            r.view.heard.clear()
        if not todo:
            self._start(r, now_ms)
            return
        ahead = len(todo) > r.slots - len(r.held)  # as Runner._lease_for: reservations when claiming ahead
        self._commit(r, [queue.assign_op(t, r.name, now_ms,
                                         self.reserve_ms + r.planner.settle_ms(t) if ahead else self.lease_ms,
                                         r.view.next_attempt(t), settle_ms=r.planner.settle_ms(t))
                         for t in todo])
        for t in todo:
            h = r.view.holds(t, r.name, now_ms)
            if h is None:
                r.planner.forget(t)
            else:
                r.held[t] = h
                r.claimed_at[t] = self.now
                self.claims[r.name] += 1
                self.first_claim.setdefault(r.name, self.now)
        self._start(r, now_ms)

    def _start(self, r: SimRunner, now_ms: int) -> None:
        # Start claimed tasks on free slots, if still held.
        for t in list(r.held):
            if len(r.running) >= r.slots:
                break
            if t in r.running or not r.planner.settled(t, r.claimed_at[t], self.now):
                continue
            if r.view.holds(t, r.name, now_ms) is None:
                del r.held[t]  # expired before it started, or lost to an earlier claim
                r.planner.forget(t)
                continue
            r.running[t] = self.now + self.tasks[t][0]
            a = r.held[t]
            lapsed = any(x.until <= a.at for x in r.view.status(t, now_ms).assignments if x.by != r.name)
            self.runs.append(Run(t, r.name, self.now, r.running[t], lapsed))

    # -- figures -----------------------------------------------------------------------------

    def ran_per_runner(self) -> Counter[str]:
        return Counter(run.runner for run in self.runs)

    def duplicate_runs(self) -> tuple[int, int]:
        """(runs beyond the first of a task, those of them that followed a lapsed lease)."""
        by_task: dict[CID, list[Run]] = defaultdict(list)
        for run in self.runs:
            by_task[run.task].append(run)
        extra = sum(len(v) - 1 for v in by_task.values())
        after_lapse = sum(sum(1 for x in v[1:] if x.lease_lapsed_before) for v in by_task.values())
        return extra, after_lapse
