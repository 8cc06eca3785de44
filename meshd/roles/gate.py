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

The gate does no I/O; the runner commits the release records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from lattice.cid import CID


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


__all__ = ["Gate", "GateStatistics"]
