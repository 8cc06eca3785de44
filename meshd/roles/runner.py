"""The Runner role: claim available tasks, run their engines, record results.

Loop: wait for the queue to change (or a lease to expire), ask the queue for
as many runnable tasks as there are free slots (``Next``), claim them in one
batched delta (``Assign``, with a lease), and run each task this node won
under the deterministic winner rule.  A run ends in ``Complete`` (result
record + completion) or a failed attempt; after ``max_attempts`` failures the
task is ``failed`` with the last reason.

Durability: the result record is committed before the completion, so a crash
between the two re-runs the task (a duplicate result, never a lost one); one
attempt's run and record are :class:`meshd.roles.attempts.Attempts`.  On
start the runner voids leases it still holds from a previous life (a failed
attempt "runner restarted"), so those tasks run again at once rather than
after their lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ContextManager, Protocol

import trio

from engines.errors import EngineMissing
from engines.outcome import Outcome
from lattice import codec, queue
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound, StoreError
from lattice.task import engine_of, metadata_of

from ..node import now_ms
from ..runtime.logs import get_logger
from .ports import (
    Counts,
    Datasets,
    PeerView,
    QueuePort,
    TaskSource,
    TrustPort,
)
from .attempts import Attempts
from .checkpointing import Checkpointing
from .claimer import Claimer
from .gate import Gate, Yielding
from .leases import Leases
from .replica_cap import ReplicaCap
from .resultcache import ResultCache
from .runner_options import RunnerOptions

if TYPE_CHECKING:
    from ..store.objects import Followed
    from . import RoleContext

log = get_logger("meshd.runner")

#: Longest a finished run may take to be recorded once it is shielded from
#: cancellation (the daemon's shutdown grace is longer).
_RECORD_GRACE_S = 5.0
#: Tasks averaging under this (s) run in batches on warm engines, at most
#: this many per engine call (a dead worker fails its whole batch).
_BATCH_BELOW_S = 0.05
_MAX_BATCH = 64


class RunnerMesh(PeerView, Protocol):
    """The mesh as the runner uses it: the peer view, plus catching up with an object."""

    @property
    def syncers(self) -> Mapping[CID, Any]:
        """Per object genesis, its syncer (``.syncing`` while a catch-up is under way)."""
        ...

    async def query(self, obj: Followed) -> None:
        """Ask peers for ``obj``'s state now."""
        ...

    def presence_soon(self) -> None:
        """Broadcast this node's presence (its inventory changed) now, not at the next period."""
        ...


class RunnerNode(QueuePort, TaskSource, Datasets, TrustPort, Counts, Protocol):
    """What the runner uses of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def mesh(self) -> RunnerMesh | None:
        """None on a node without the p2p layer."""
        ...

    @property
    def results_obj(self) -> Followed: ...

    @property
    def verdicts_obj(self) -> Followed: ...

    @property
    def inventory(self) -> dict[str, Any]:
        """This node's inventory, for task constraints."""
        ...

    def stalled(self, late_s: float, within_s: float) -> bool:
        """Whether this process's loop stalled ``late_s`` or longer lately (it was stopped)."""
        ...

    def runner_serving(self, runner: Any) -> ContextManager[None]:
        """Enqueues on this node may hand ``runner`` tasks while the block runs."""
        ...

    def engine_platforms(self, engine: CID) -> frozenset[str] | None:
        """Platform keys ``engine`` has builds for (None: any); BlockNotFound
        while its manifest is not here."""
        ...

    async def engine_for(self, rec: dict[str, Any], definition: dict[str, Any] | None) -> CID | None:
        """The engine a task runs, resolving a Docker ``metadata.image`` (:mod:`meshd.roles.images`)."""
        ...


class EngineRunner(Protocol):
    """Runs a task's input on an engine (``engines.host.EngineHost``)."""

    async def run(self, engine_cid: CID, task_input: Any, *, warm: bool | None = ...,
                  signatures: Iterable[CID] = ...) -> Outcome: ...

    async def run_batch(self, engine_cid: CID, inputs: list[Any], *, warm: bool | None = ...,
                        signatures: Iterable[CID] = ...) -> list[Outcome]: ...


class Runner(Yielding):
    """Runs tasks from the queue on this node's engines (drains and releases: :class:`.gate.Yielding`)."""

    name = "runner"

    def __init__(self, node: RunnerNode, host: EngineRunner, options: RunnerOptions) -> None:
        self.node = node
        self.host = host
        self.options = options
        self.running: set[CID] = set()
        self.claimer = Claimer(node, defer_s=options.defer_s, recent_s=options.recent_s, fresh_s=options.fresh_s)
        self.planner = self.claimer.planner
        self.replica_cap = ReplicaCap(node, options.slots, options.lease_ms)
        self._slot_freed = trio.Event()
        self.leases = Leases(node, lease_ms=options.lease_ms, reserve_ms=options.reserve_ms)  # held, started, renewed
        self._engine_slots = trio.CapacityLimiter(options.slots)
        self._avg_s = 1.0  # EWMA of attempt durations, seconds
        self.stats = {"runs": 0, "ok": 0, "failed": 0, "lost_race": 0}
        self.gate = Gate()  # drain and owner policy: may it claim, start, keep running
        self._given_back: set[CID] = set()  # claims released (void record written or on its way)
        self.checkpointing = Checkpointing(node)
        self.cache = ResultCache(node)  # lookups before a run, pairs on results (meshd/roles/resultcache.py)
        self.attempts = Attempts(node, host, options, leases=self.leases, checkpointing=self.checkpointing,
                                 cache=self.cache, replica_cap=self.replica_cap, stats=self.stats)  # run and record one
        self._cancelled: set[CID] = set()  # runs stopped because their task was cancelled
        self._nursery: trio.Nursery | None = None
        self._drain_scope: trio.CancelScope | None = None

    def claims_at_submit(self, tasks: list[CID], now: int) -> list[list[Any]]:
        """Claim records for tasks just submitted to this node that it will
        run itself, at once, because it has idle slots: one per idle slot at
        most, in submission order.  The node puts them in the same delta as
        the tasks (:meth:`meshd.node.Node.enqueue`), so every peer sees each
        such task already claimed when it first sees it: no other runner can
        take it, and nobody waits for a gossip round trip.

        Taken only when this runner is idle (nothing claimed or running
        beyond what its slots hold), its gate is open, it is not banned, the
        task is a plain one (no ``verify``: replicas are spread, see
        :mod:`lattice.claims`), and this node can run the engine (its
        platform, constraints, authorization) -- the same checks a claim
        round makes, so no task is taken here that a claim round would leave
        to others.  Bulk work still spreads: a batch larger than the idle
        slots leaves the rest to the claim planner.

        Reserves the slots: call :meth:`adopt_submitted` with the result
        once the delta is committed, or :meth:`drop_submitted` if it is not.
        """
        idle = self.options.slots - len(self.running)
        if idle <= 0 or self._nursery is None or not self.gate.open or self.node.trust.banned(self.node.peer_id):
            return []
        authorized = getattr(self.host, "authorized", None)
        me = self.node.peer_id
        ops: list[list[Any]] = []
        for t in tasks:
            if len(ops) >= idle:
                break
            fit = self.claimer.fit(t)
            if fit is None or not fit.ok or t in self.running:
                continue
            engine = self.node.task_engine(t)
            if engine is None or (authorized is not None and not authorized(engine, self.node.engine_signatures(engine))):
                continue
            ops.append(queue.assign_op(t, me, now, self.options.lease_ms, 1))
            self.running.add(t)  # the slot is this task's from now on
        return ops

    def adopt_submitted(self, ops: list[list[Any]]) -> None:
        """Start the tasks :meth:`claims_at_submit` claimed, now committed."""
        me = self.node.peer_id
        won: list[tuple[CID, int]] = []
        for op in ops:
            t = op[2]["task"]
            holder = self.node.queue.holds(t, me, now_ms())
            if holder is None or self._nursery is None:
                self._finished(t)  # lost (a peer's record came first) or the runner stopped
                continue
            self.leases.hold(t, holder)
            won.append((t, holder.n))
        self.stats["claimed_at_submit"] = self.stats.get("claimed_at_submit", 0) + len(won)
        if self._nursery is not None:
            for batch in self._batches(won):
                if len(batch) == 1:
                    self._nursery.start_soon(self._run_one, *batch[0])
                else:
                    self._nursery.start_soon(self._run_batch, batch)
        self._publish_load()

    def drop_submitted(self, ops: list[list[Any]]) -> None:
        """The delta with these claims was not committed: free their slots."""
        for op in ops:
            self._finished(op[2]["task"])

    def _next(self, now: int, free: int) -> list[CID]:
        """Up to ``free`` tasks to claim now (see :class:`.claimer.Claimer`)."""
        return self.claimer.next(now, free, self.running)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and run tasks until cancelled.

        Cancellation kills running engines (their attempts stay leased until
        the lease expires, or are voided by this runner's next start).
        """
        self.node.inventory["slots"] = self.options.slots
        self._publish_load()
        await self._catch_up_first()
        await self._void_own_leases()
        try:
            await self._serve_rounds(task_status)
        finally:
            self._nursery = None  # claims_at_submit takes nothing while no loop runs

    async def _serve_rounds(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            with self.node.runner_serving(self):  # enqueues here may hand it tasks (claims_at_submit)
                await self._rounds(nursery, task_status)

    async def _rounds(self, nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        await nursery.start(self.leases.serve)
        nursery.start_soon(self._watch_cancels)
        task_status.started()
        while True:
            if not self.gate.open:
                await self.gate.wait_open()  # draining, or the owner is using the machine
                continue
            if self.node.trust.banned(self.node.peer_id):
                # Banned by the mesh's verdicts: nobody accepts our claims
                # or results, so do not pretend to work.
                await self.node.wait_changed(self.node.verdicts_obj, 5.0)
                continue
            limit = self._claim_limit()
            free = limit - len(self.running)
            # Hysteresis: with work in flight, claim again only once a
            # quarter of the window is free, so claims go out in batches
            # (one delta per batch) rather than one delta per finished task.
            if free <= 0 or (self.running and free < max(1, limit // 4)):
                await self._slot_freed.wait()
                continue
            q = self.node.queue_obj
            now = now_ms()
            cands = self._next(now, free)
            kept = self.replica_cap.admit(cands, self.running, now)
            if cands and not kept:
                await self.node.wait_changed(q, 0.25)
                continue
            cands = kept
            if not cands:
                await self.node.wait_changed(q, self._idle_sleep(now))
                continue
            me = self.node.peer_id
            # Reservations only where another runner could take them: a lone
            # runner keeps whole leases (and the lease churn of a loaded one).
            ahead = self.claimer.peers_ranked and len(cands) > self.options.slots - len(self.running)
            ops = [queue.assign_op(t, me, now, self.leases.lease_for(self.planner.settle_ms(t), ahead), self.node.queue.next_attempt(t),
                                   settle_ms=self.planner.settle_ms(t)) for t in cands]
            try:
                await self.node.objects.commit(q, ops)
            except StoreError as exc:
                # The block store is down (e.g. its IPFS node died): claim
                # nothing, keep serving, try again shortly.
                log.warning("claim_failed", error=str(exc)[:200])
                await trio.sleep(self.options.idle_poll_s)
                continue
            won: list[tuple[CID, int]] = []
            for t in cands:
                holder = self.node.queue.holds(t, me, now_ms())
                if holder is None:
                    self.stats["lost_race"] += 1
                    self.planner.forget(t)
                    continue
                self.running.add(t)
                self.leases.hold(t, holder)
                won.append((t, holder.n))
            for batch in self._batches(won):
                if len(batch) == 1:
                    nursery.start_soon(self._run_one, *batch[0])
                else:
                    nursery.start_soon(self._run_batch, batch)
            self._publish_load()

    async def _watch_cancels(self) -> None:
        """Stop the engines of running tasks that were cancelled (docs/protocol.md,
        *Cancel and retry*): checked on every queue change, and at least every
        half second while this runner holds claims, so an engine stops well
        within 2 s of the cancel arriving (a cancel is a queue change, and so
        is a claim; the period is a backstop, which a runner holding nothing
        stretches to 5 s).  The run then releases its
        attempt.  Cancellation: nothing to undo."""
        q = self.node.queue
        while True:
            await self.node.wait_changed(self.node.queue_obj, 0.5 if self.running else 5.0)
            gone = [t for t in self.gate.running_tasks() if t not in self._cancelled and q.cancelled(t)]
            if gone:
                self._cancelled.update(gone)
                stopped = self.gate.stop(gone)
                self.node.count("runs_cancelled", len(gone))
                log.info("runs_cancelled", tasks=len(gone), engines_stopped=stopped)
            await trio.sleep(0.02)  # a busy queue changes constantly: look at most 50 times a second

    def _publish_load(self) -> None:
        """Keep the load this node announces in its presence current: idle
        engine slots (``free``) and tasks claimed but not started (``backlog``)."""
        busy = int(self._engine_slots.borrowed_tokens)
        self.node.inventory["free"] = self.options.slots - busy
        self.node.inventory["backlog"] = max(0, len(self.running) - busy)

    def _claim_limit(self) -> int:
        """How many tasks to hold claimed at once.

        More than ``slots`` when tasks are short: claims, results and
        completions are then batched across many tasks (group commit), which
        is where per-task overhead goes for tiny tasks.  In a mesh, bounded
        to about ``ahead_s`` of work per slot, so a batch stays in the shared
        queue where idle runners can take it (a claimed task waits for its
        lease), rather than in one runner's backlog; alone, bounded so
        queued claims finish well within their lease.
        """
        horizon = self.options.ahead_s if self.node.mesh is not None else self.options.lease_ms / 4000
        depth = int(min(64, max(1, horizon / max(self._avg_s, 1e-4))))
        return self.options.slots * depth

    def _idle_sleep(self, now: int) -> float:
        if self.planner.waiting() and self.node.mesh is not None:
            return min(self.options.idle_poll_s, self.options.defer_s / 2)
        return self.options.idle_poll_s

    async def _catch_up_first(self, timeout_s: float = 5.0) -> None:
        """A node that joins a mesh (it has bootstrap peers) first catches up
        with the queue before claiming: with a stale view it would re-run
        tasks its peers finished while it was away.  Bounded, so a node whose
        peers are all down still starts working."""
        mesh = self.node.mesh
        if mesh is None or not self.options.catch_up:
            return
        genesis = self.node.queue_obj.genesis
        with trio.move_on_after(timeout_s):
            while not mesh.any_presence():
                await trio.sleep(0.05)
            await self.node.wait_changed(self.node.queue_obj, 1.0)  # the answers to our query
            while (s := mesh.syncers.get(genesis)) is not None and s.syncing:
                await trio.sleep(0.05)

    async def _void_own_leases(self) -> None:
        now = now_ms()
        me = self.node.peer_id
        ops = []
        for t in list(self.node.queue.tasks()):
            h = self.node.queue.holds(t, me, now)
            if h is not None:
                ops.append(queue.fail_op(t, me, now, h.n, "runner restarted during the attempt", False, void=True))
        if ops:
            log.info("voided_own_leases", count=len(ops))
            await self.node.objects.commit(self.node.queue_obj, ops)

    async def _run_one(self, t: CID, attempt: int) -> None:
        started = time.perf_counter()
        outcome: Outcome | None = None
        rec: dict[str, Any] | None = None
        with self.gate.running([t]) as scope:
            try:
                if wait := self.planner.settle_wait(t):
                    # A stolen task: let a claim its owner made at about the same
                    # moment arrive, so the winner rule decides before it runs.
                    await trio.sleep(wait)
                async with self._engine_slots:
                    # A claim that waited longer than its lease may have gone to
                    # another runner: run only what this runner still holds.
                    if not self.gate.open:
                        await self.release([t], "released: " + (self.gate.reason or "gate closed"))
                    elif self.node.queue.holds(t, self.node.peer_id, now_ms()) is not None:
                        self.leases.start(t, self._avg_s)
                        self._publish_load()
                        t0 = time.perf_counter()
                        outcome, rec = await self.attempts.execute(t)
                        self._avg_s = 0.9 * self._avg_s + 0.1 * (time.perf_counter() - t0)
                    else:
                        self.stats["lease_lost"] = self.stats.get("lease_lost", 0) + 1
                        log.info("claim_expired_before_start", task=str(t))
            except Exception as exc:  # noqa: BLE001 - any defect becomes a failed attempt, never a crash
                log.error("run_crashed", task=str(t), error=repr(exc))
                outcome, rec = Outcome(ok=False, error=f"internal error: {exc!r}"[:500]), None
        if scope.cancelled_caught:  # cancelled, or vacated (drain deadline, owner policy): the engine is gone
            if t in self._cancelled:
                await self.release([t], "cancelled: the task was cancelled")
            else:
                await self.release([t], "vacated: " + (self.gate.reason or "vacated"))
            outcome = None
        if outcome is None:
            self._finished(t)
            return
        await self._conclude(t, attempt, outcome, rec, time.perf_counter() - started)

    async def _conclude(self, t: CID, attempt: int, outcome: Outcome, rec: dict[str, Any] | None,
                        seconds: float) -> None:
        """Record a finished attempt (result and completion, or a failure) and free its claim."""
        try:
            if not outcome.ok and trio.current_effective_deadline() == float("-inf"):
                # Shutting down: a failure now is most likely the shutdown's
                # own doing (pool stopped, host gone), not the task's.  Record
                # nothing; the lease is voided on this runner's next start.
                return
            # Shielded so a run that finished is recorded even while the
            # daemon stops, but bounded: a record that cannot finish must not
            # hold the shutdown (the task then runs again, a duplicate result
            # at worst, never a lost one).
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _RECORD_GRACE_S) as scope:
                await self.attempts.record(t, attempt, outcome, rec, seconds)
            if scope.cancelled_caught:
                log.warning("record_abandoned", task=str(t), seconds=_RECORD_GRACE_S)
        except StoreError as exc:
            # Could not record (store down): the lease expires and the task
            # runs again; nothing half-recorded is acknowledged.
            log.warning("record_failed", task=str(t), error=str(exc)[:200])
        finally:
            self._finished(t)

    def _batches(self, won: list[tuple[CID, int]]) -> list[list[tuple[CID, int]]]:
        """Split won claims into engine calls: one task each, or, for short
        tasks on warm engines, batches (one warm-pool message per batch,
        ``WarmPool.run_batch``) spread over the slots.  A stolen task runs
        alone: it waits out its settle first."""
        if not self.options.warm or self._avg_s > _BATCH_BELOW_S or len(won) < 2:
            return [[w] for w in won]
        alone: list[list[tuple[CID, int]]] = []
        rest: list[tuple[CID, int]] = []
        for w in won:
            if self.planner.settle_wait(w[0]):
                alone.append([w])
            else:
                rest.append(w)
        size = max(1, min(_MAX_BATCH, -(-len(rest) // self.options.slots)))
        return alone + [rest[i : i + size] for i in range(0, len(rest), size)]

    def _ready_input(self, t: CID) -> tuple[dict[str, Any], CID, Any] | None:
        """A task's (body, engine, JSON input) when all are here and inline;
        None sends it down the one-task path (fetches, dataset inputs, errors)."""
        try:
            rec = self.node.task_record(t)
            td = self.node.task_definition(rec)
        except (BlockNotFound, BadInput):
            return None
        engine = engine_of(rec, td)
        inp = rec["input"]
        if engine is None or "value" not in inp or metadata_of(rec, td) is not None or rec.get("checkpoint_s"):
            return None  # metadata, checkpoints: a cold run of its own (EngineHost.run)
        pair = self.cache.note(t, engine, inp["value"], None)
        if pair is not None and self.cache.candidates(pair):
            return None  # the one-task path looks it up in the result cache
        return rec, engine, codec.to_json(inp["value"])

    async def _run_batch(self, batch: list[tuple[CID, int]]) -> None:
        """Run short tasks as batches per engine in one engine slot, then
        record each (the records share deltas through group commit).  A task
        this runner no longer holds is dropped; one that needs fetching, or
        whose engine is not all here, runs alone afterwards."""
        me = self.node.peer_id
        done: list[tuple[CID, int, dict[str, Any], Outcome]] = []
        alone: list[tuple[CID, int]] = []
        started = time.perf_counter()
        try:
            async with self._engine_slots:
                groups: dict[CID, list[tuple[CID, int, dict[str, Any], Any]]] = {}
                for t, n in batch:
                    if not self.gate.open:
                        await self.release([t], "released: " + (self.gate.reason or "gate closed"))
                        self._finished(t)
                        continue
                    if self.node.queue.holds(t, me, now_ms()) is None:
                        self.stats["lease_lost"] = self.stats.get("lease_lost", 0) + 1
                        self._finished(t)
                        continue
                    ready = self._ready_input(t)
                    if ready is None:
                        alone.append((t, n))
                        continue
                    self.leases.start(t, self._avg_s)
                    groups.setdefault(ready[1], []).append((t, n, ready[0], ready[2]))
                self._publish_load()
                for engine, items in groups.items():
                    try:
                        with self.gate.running([i[0] for i in items]) as scope:
                            outs = await self.host.run_batch(engine, [i[3] for i in items], warm=None,
                                                             signatures=self.node.engine_signatures(engine))
                        if scope.cancelled_caught:
                            await self.release([i[0] for i in items], "vacated: " + (self.gate.reason or "vacated"))
                            for i in items:
                                self._finished(i[0])
                            continue
                    except EngineMissing:
                        alone.extend((t, n) for t, n, _, _ in items)  # the one-task path fetches it
                        continue
                    except Exception as exc:  # noqa: BLE001 - any defect fails the attempts, never the runner
                        log.error("run_crashed", tasks=len(items), error=repr(exc))
                        outs = [Outcome(ok=False, error=f"internal error: {exc!r}"[:500])] * len(items)
                    done.extend((t, n, rec, out) for (t, n, rec, _), out in zip(items, outs))
        finally:
            seconds = (time.perf_counter() - started) / max(1, len(done))
            if done:
                self._avg_s = 0.9 * self._avg_s + 0.1 * seconds
                self.node.count("tasks_batched", len(done))
            async with trio.open_nursery() as nursery:
                for t, n, rec, out in done:
                    nursery.start_soon(self._conclude, t, n, out, rec, seconds)
                for t, n in alone:
                    nursery.start_soon(self._run_one, t, n)

    def _finished(self, t: CID) -> None:
        self._given_back.discard(t)
        self._cancelled.discard(t)
        self.planner.forget(t)
        self.cache.forget(t)
        self.running.discard(t)
        self.leases.drop(t)
        self._publish_load()
        ev, self._slot_freed = self._slot_freed, trio.Event()
        ev.set()


def create(ctx: RoleContext) -> Runner:
    rc = ctx.config.runner
    return Runner(ctx.node, ctx.host, RunnerOptions(slots=rc.slots, max_attempts=rc.max_attempts, lease_s=rc.lease_s,
                                                   reserve_s=rc.reserve_s,
                                                   task_timeout_s=rc.task_timeout_s, warm=rc.warm,
                                                   catch_up=bool(ctx.config.p2p.bootstrap)))
