"""The runner's gate: whether it may claim and start work, and how it gives work back.

Two things close the gate: a **drain** (``meshd drain``, the API, or the
first SIGTERM) and the machine's **owner policy** (:mod:`meshd.owner`:
the owner is using the machine).  While the gate is closed the runner claims
nothing; tasks it claimed but did not start are *released* at once, and
running ones are *vacated* (their engines killed, their leases released)
when a drain's deadline passes or the owner policy says so.

A release is the queue's ``failed`` record with ``void: true`` (see
docs/protocol.md): it frees the lease at once on every replica and does not
count towards ``max_attempts``, so another runner takes the task as soon as
the record reaches it, instead of after the lease expires.

:class:`Gate` does no I/O; :class:`Yielding`, the part of the Runner that
gives work back, commits the release records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from lattice import queue
from lattice.cid import CID
from lattice.errors import StoreError

from ..node import now_ms
from ..runtime.logs import get_logger

if TYPE_CHECKING:
    from .checkpointing import Checkpointing
    from .leases import Leases
    from .runner import RunnerNode

log = get_logger("meshd.runner")

#: Longest a release may take once shielded from cancellation.
_RELEASE_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class GateStatistics:
    """What ``GET /v1/owner`` and ``/v1/node`` show of the gate."""

    draining: bool
    owner_closed: bool
    reason: str
    running: int
    released: int
    vacated: int


class Gate:
    """Open or closed for claims, with a cancel scope per running task.

    ``draining`` is set by a drain and cleared by a resume; ``owner_closed``
    by the owner policy.  The gate is open when neither is set.
    """

    def __init__(self) -> None:
        self.draining = False
        self.owner_closed = False
        self.reason = ""
        self.released = 0
        self.vacated = 0
        self._changed = trio.Event()
        self._scopes: dict[CID, trio.CancelScope] = {}

    @property
    def open(self) -> bool:
        return not self.draining and not self.owner_closed

    def statistics(self) -> GateStatistics:
        return GateStatistics(self.draining, self.owner_closed, self.reason, len(self._scopes),
                              self.released, self.vacated)

    def set(self, *, draining: bool | None = None, owner_closed: bool | None = None, reason: str | None = None) -> None:
        """Change the gate and wake whoever waits on it."""
        if draining is not None:
            self.draining = draining
        if owner_closed is not None:
            self.owner_closed = owner_closed
        if reason is not None:
            self.reason = reason
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    async def wait_changed(self) -> None:
        """Return at the gate's next change."""
        await self._changed.wait()

    async def wait_open(self) -> None:
        """Return once the gate is open (at once when it is)."""
        while not self.open:
            await self._changed.wait()

    @contextmanager
    def running(self, tasks: Iterable[CID]) -> Iterator[trio.CancelScope]:
        """A cancel scope for the engine run of ``tasks``; :meth:`vacate`
        cancels it.  The caller checks ``scope.cancelled_caught`` (vacated)
        after the ``with``; a cancellation from outside (the daemon
        stopping) propagates as usual."""
        tasks = list(tasks)
        with trio.CancelScope() as scope:
            for t in tasks:
                self._scopes[t] = scope
            try:
                yield scope
            finally:
                for t in tasks:
                    if self._scopes.get(t) is scope:
                        del self._scopes[t]

    def running_tasks(self) -> list[CID]:
        """Tasks whose engines run now (or are about to)."""
        return list(self._scopes)

    def stop(self, tasks: Iterable[CID]) -> int:
        """Cancel the runs of ``tasks`` because they were cancelled (not counted as vacated)."""
        scopes = {id(s): s for t in tasks if (s := self._scopes.get(t)) is not None}
        for s in scopes.values():
            s.cancel()
        return len(scopes)

    def vacate(self, tasks: Iterable[CID] | None = None) -> int:
        """Cancel the runs of ``tasks`` (all when None); returns how many runs."""
        scopes = []
        for t in (list(self._scopes) if tasks is None else tasks):
            s = self._scopes.get(t)
            if s is not None:
                scopes.append(s)
        for s in {id(s): s for s in scopes}.values():
            s.cancel()
        self.vacated += len(scopes)
        return len(scopes)


class Yielding:
    """The Runner's drain, resume and release (a base of ``meshd.roles.runner.Runner``,
    which sets these attributes)."""

    node: "RunnerNode"
    gate: Gate
    running: set[CID]
    leases: "Leases"
    _given_back: set[CID]
    _slot_freed: trio.Event
    _nursery: trio.Nursery | None
    _drain_scope: trio.CancelScope | None
    checkpointing: "Checkpointing"

    async def release(self, tasks: Iterable[CID], reason: str) -> int:
        """Give claims back at once: a void failure per held attempt (docs/protocol.md,
        *release*), so every replica frees the lease and another runner takes
        the task now, not when the lease expires.  Shielded and bounded like
        a record; cancellation past that leaves the leases to expire."""
        me, now, ops = self.node.peer_id, now_ms(), []
        for t in tasks:
            a = self.leases.held.get(t)
            if a is not None and t not in self._given_back:
                self._given_back.add(t)
                ops.append(queue.fail_op(t, me, now, a.n, reason, False, void=True))
        if not ops:
            return 0
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _RELEASE_GRACE_S):
            try:
                await self.node.objects.commit(self.node.queue_obj, ops)
            except StoreError as exc:
                log.warning("release_failed", error=str(exc)[:200])
                return 0
        self.gate.released += len(ops)
        self.node.count("leases_released", len(ops))
        log.info("leases_released", count=len(ops), reason=reason[:100])
        return len(ops)

    async def vacate(self, tasks: Iterable[CID] | None = None) -> int:
        """Vacate the runs of ``tasks`` (all when None): ask their engines for a
        checkpoint first (tasks with ``checkpoint_s``, bounded by the
        checkpoint grace, :mod:`.checkpointing`), then cancel the runs (the
        runner kills the engines and releases the leases).  Returns how many
        runs were cancelled.  Cancellation while waiting for the checkpoints
        leaves the runs running."""
        chosen = self.gate.running_tasks() if tasks is None else list(tasks)
        await self.checkpointing.request(chosen)
        return self.gate.vacate(chosen)

    def unstarted(self) -> list[CID]:
        """Tasks claimed and not started (their engines have not begun)."""
        return [t for t in self.running if t not in self.leases.started]

    def _announce(self, draining: bool) -> None:
        """Say in this node's presence whether it drains (peers' planners skip a draining runner)."""
        if draining:
            self.node.inventory["draining"] = True
        else:
            self.node.inventory.pop("draining", None)
        mesh = self.node.mesh
        if mesh is not None:
            mesh.presence_soon()

    async def drain(self, deadline_s: float, reason: str = "node draining") -> None:
        """Stop claiming, release unstarted claims at once, let running tasks
        finish for ``deadline_s``, then vacate the rest (engines killed,
        leases released).  The node stays drained until :meth:`resume`.

        Cancellation (a resume, or the daemon stopping) leaves the gate
        closed and whatever still runs running.
        """
        self.gate.set(draining=True, reason=reason)
        self._announce(True)
        log.info("draining", deadline_s=deadline_s, running=len(self.leases.started), claimed=len(self.running))
        await self.release(self.unstarted(), f"released: {reason}")
        with trio.move_on_after(deadline_s):
            while self.leases.started:
                await self._slot_freed.wait()
        if await self.vacate():
            with trio.move_on_after(_RELEASE_GRACE_S):
                while self.leases.started:
                    await self._slot_freed.wait()
        log.info("drained", vacated=self.gate.vacated, released=self.gate.released)

    def begin_drain(self, deadline_s: float) -> None:
        """Drain in the background (the API's ``POST /v1/node/drain``)."""
        if self._nursery is None:
            raise RuntimeError("the runner is not serving")
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        scope = self._drain_scope = trio.CancelScope()
        self.gate.set(draining=True, reason="node draining")  # closed from this answer on

        async def run() -> None:
            with scope:
                await self.drain(deadline_s)

        self._nursery.start_soon(run)

    def resume(self) -> None:
        """End a drain: claim again (the owner policy may still keep the gate closed)."""
        if self._drain_scope is not None:
            self._drain_scope.cancel()
            self._drain_scope = None
        self.gate.set(draining=False, reason="" if not self.gate.owner_closed else None)
        self._announce(False)
        log.info("resumed")



__all__ = ["Gate", "GateStatistics", "Yielding"]
