"""What a runner claims: its claim rounds over the queue, as the planner decides.

The Runner runs tasks; this module decides which to claim, one round at a
time, with :class:`lattice.planner.ClaimPlanner` (the same rules the
many-runner simulation runs), and keeps what a round needs cheap: a task's
body is read once and an engine's platforms once, and how late peers'
claims arrive is fed to the planner, which stretches steals to match.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from lattice.cid import CID
from lattice.claims import TaskFacts
from lattice.errors import BadInput, BlockNotFound
from lattice.planner import ClaimPlanner, Fit
from lattice.task import engine_of

from ..runtime.logs import get_logger

if TYPE_CHECKING:
    from .runner import RunnerNode

log = get_logger("meshd.runner")

#: Longest a runner holds its claims after a stall of its own (see ``Claimer._stale_view``).
STALE_HOLD_S = 10.0
#: After such a stall, how long a runner keeps holding once a peer is heard (its backlog of gossip).
STALE_SETTLE_S = 0.5


class Claimer:
    """Claim rounds of one runner.

    Args:
        node: The runner's node (``RunnerNode``).
        defer_s / recent_s / fresh_s: as in ``RunnerOptions``.
    """

    def __init__(self, node: "RunnerNode", *, defer_s: float, recent_s: float, fresh_s: float) -> None:
        self.node = node
        self.recent_s, self.fresh_s = recent_s, fresh_s
        self._stale_since: float | None = None  # when a stall of this node's own began a hold
        self._heard_again: float | None = None  # when, in such an episode, a runner was heard again
        self._episode_end = float("-inf")  # when the last such episode ended
        #: Whether the last round ranked another runner: reservations help only then.
        self.peers_ranked = False
        self.planner = ClaimPlanner(node.peer_id, defer_s=defer_s)
        self._accept_cache: dict[CID, Fit] = {}
        self._needs: dict[CID, tuple[tuple[Any, ...], CID | None]] = {}  # task -> (constraints, engine)
        self._engine_platforms: dict[CID, frozenset[str] | None] = {}
        self._manifest_retry: dict[CID, float] = {}  # engine -> when to look for its manifest again

    def fit(self, t: CID) -> Fit | None:
        """What a task asks of a runner (constraints, engine platforms) and
        whether this node meets it; None while its body is not here.

        A body is read once: what it asks (constraints, engine) is kept once
        its definition is here too (a linked definition is fetched when the
        task runs, so until then the task is judged on its body alone).  An
        engine's platforms are looked up once per engine, and a manifest
        that is not here yet at most once a second, so a claim round over a
        long queue costs no store reads.

        Isolated per item: a task body or definition that fails validation is
        rejected for good (the node quarantines its CID and the queue stops
        offering it), and any other failure on one task is logged, counted
        and skips that task only, so no peer's data can stop this loop.
        """
        fit = self._accept_cache.get(t)
        if fit is not None:
            return fit
        try:
            needs = self._needs.get(t)
            if needs is None:
                try:
                    rec = self.node.task_record(t)
                except BlockNotFound:
                    return None  # body not here yet: it comes with its delta, or is fetched
                try:
                    td: dict[str, Any] | None = self.node.task_definition(rec)
                except BlockNotFound:
                    td = None
                except BadInput:
                    # A valid body with an invalid definition: claimed, so its
                    # run fails it at once with the reason (the node has
                    # quarantined the definition).
                    td = {}
                constraints = tuple(rec.get("constraints", ())) + tuple((td or {}).get("constraints", ()))
                needs = (constraints, engine_of(rec, td) if td is not None else None)
                if td is not None:
                    if len(self._needs) > 100_000:
                        self._needs.clear()
                    self._needs[t] = needs
            constraints, engine = needs
            platforms, known = self._platforms(engine)
            fit = Fit(Fit(True, constraints, platforms).runs_on(self.node.inventory), constraints, platforms)
            if known and t in self._needs:
                if len(self._accept_cache) > 100_000:
                    self._accept_cache.clear()
                self._accept_cache[t] = fit
            return fit
        except BadInput:
            self.node.queue.reject(t)  # counted and logged by the node's quarantine
            return Fit(False, (), None)
        except Exception:  # noqa: BLE001 - one task's defect must not stop the runner
            self._accept_cache[t] = Fit(False, (), None)
            self.node.count("role_item_errors")
            log.exception("task_skipped", task=str(t))
            return None

    def _platforms(self, engine: CID | None) -> tuple[frozenset[str] | None, bool]:
        """``engine``'s platform keys (None: any) and whether that is known
        (False while its manifest is not here: judged as any for now)."""
        if engine is None:
            return None, False
        if engine in self._engine_platforms:
            return self._engine_platforms[engine], True
        now = time.monotonic()
        if now < self._manifest_retry.get(engine, 0.0):
            return None, False
        try:
            platforms = self.node.engine_platforms(engine)
        except BlockNotFound:
            self._manifest_retry[engine] = now + 1.0
            return None, False
        if len(self._engine_platforms) > 10_000:
            self._engine_platforms.clear()
        self._engine_platforms[engine] = platforms
        return platforms, True

    def facts(self, t: CID) -> TaskFacts:
        node = self.node
        info = node.queue.info(t)
        replicated = info is not None and info.replication is not None
        return TaskFacts(wanted=node.queue.wanted(t), replicated=replicated,
                         claimed=info is not None and bool(info.assignments),
                         spot_checked=replicated and node.policy.spot_checked(t))

    def _stale_view(self, recent: Collection[str], fresh: Collection[str]) -> bool:
        """Whether to hold claims for now because this node's view is stale.

        A process that was stopped (SIGSTOP, a suspended laptop) or starved
        for seconds wakes with a queue view that misses what its peers did
        meanwhile; claiming its own share from it re-runs tasks they took
        over and finished (measured: a runner resumed after a 6 s SIGSTOP
        re-ran the reservation its peer had completed, because its
        connection had been reset and it heard nothing for another second).
        So after this process's own loop stalled ``fresh_s`` or more
        (:meth:`meshd.node.Node.stalled`, the loop watch's reading; a peer
        that merely went quiet is not this node's stall), while other runners are known, it holds until a peer is heard and
        the queue has caught up (``STALE_SETTLE_S`` after that, and no
        catch-up under way), or for ``STALE_HOLD_S`` at most.

        A peer counts as heard from the start of the episode if it already
        is: gossip buffered in the socket while the process was stopped is
        read on waking, often before the first claim round, and makes the
        peer look fresh although the queue view is still the old one
        (measured in CI: b woke after a 3.9 s stop, heard a's queued
        presence first, skipped the hold and re-ran the reservation a had
        completed).  So hearing a peer never skips the hold; it only starts
        the settle time.
        """
        me = self.node.peer_id
        others = [p for p in recent if p != me]
        heard = any(p != me for p in fresh)
        clock = time.monotonic()
        if self._stale_since is None:
            since_last = min(STALE_HOLD_S, clock - self._episode_end)  # a stall already held for counts once
            if not others or not self.node.stalled(self.fresh_s, since_last):
                return False
            self._stale_since, self._heard_again = clock, None
            log.info("claims_held_stale_view", quiet_runners=len(others) - sum(p in fresh for p in others))
        if not others:
            self._stale_since, self._episode_end = None, clock  # they left for good: nothing to catch up with
            return False
        if heard:
            if self._heard_again is None:
                self._heard_again = clock
            mesh = self.node.mesh
            syncer = mesh.syncers.get(self.node.queue_obj.genesis) if mesh is not None else None
            if clock - self._heard_again >= STALE_SETTLE_S and not (syncer is not None and syncer.syncing):
                self._stale_since, self._episode_end = None, clock
                return False
        else:
            self._heard_again = None
        if clock - self._stale_since < STALE_HOLD_S:
            return True
        self._stale_since, self._episode_end = None, clock
        return False

    def next(self, now: int, free: int, running: Collection[CID]) -> list[CID]:
        """Up to ``free`` tasks to claim: this runner's own share first, then
        tasks of other runners' shares whose deferral has passed
        (:class:`lattice.planner.ClaimPlanner`); ``running``: those it holds."""
        node = self.node
        mesh = node.mesh
        recent = {} if mesh is None else mesh.live_inventories("runner", within_s=self.recent_s)
        fresh = {} if mesh is None else mesh.live_inventories("runner", within_s=self.fresh_s)
        self.peers_ranked = any(p != node.peer_id for p in recent)
        if self._stale_view(recent, fresh):
            return []
        cands = {} if mesh is None else ClaimPlanner.candidates(
            recent, node.queue.completed_by, now, node.trust.banned_peers(), fresh=fresh)
        todo = self.planner.plan(
            node.queue, now, free, clock=time.monotonic(), cands=cands, fit=self.fit, facts=self.facts,
            trusted=lambda t, p: node.trust.trusted(p, node.policy.engine_of(t)), exclude=running)
        heard = node.queue.heard
        if heard:
            before = self.planner.lag_s
            self.planner.observe(list(heard), now)
            heard.clear()
            if abs(self.planner.lag_s - before) >= 0.5:
                log.info("queue_lag", seconds=round(self.planner.lag_s, 2))
        return todo
