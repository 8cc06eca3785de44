"""The leases one runner holds: whole leases and reservations, and their renewal.

A claim is one of two kinds (docs/protocol.md, *Claimed ahead vs running*):
a whole lease (``lease_s``) when the claim round takes no more tasks than
there are idle slots, so each starts at once; else every claim of the round
is a *reservation* (``reserve_s`` plus the claim's settle), because which of
them wins an engine slot first is up to the scheduler.  A stopped or slow
runner's reservations lapse within seconds and other runners take them,
while what it has started keeps a lease that grows with its age.

Split from the Runner, which decides what to claim and runs it: this keeps
the lease per claimed task, which of them have started, and the loop that
renews the started ones, one delta per round.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from lattice import queue
from lattice.cid import CID
from lattice.errors import StoreError

from ..node import now_ms
from ..runtime.logs import get_logger
from .ports import Counts, QueuePort

log = get_logger("meshd.runner")

#: How long a renewal waits to ride in another queue commit before it is
#: committed alone: far below any lease (a reservation is seconds), and well
#: above the time a finished task takes to record its completion.
RENEW_DEFER_S = 0.1


class LeaseNode(QueuePort, Counts, Protocol):
    """What the leases use of the node: the queue, commits and counters."""

    @property
    def peer_id(self) -> str: ...


class Leases:
    """One runner's leases.  See the module doc.

    Args:
        node: The runner's node.
        lease_ms: A whole lease (``RunnerOptions.lease_ms``).
        reserve_ms: A reservation before its settle (``RunnerOptions.reserve_ms``).
    """

    def __init__(self, node: LeaseNode, *, lease_ms: int, reserve_ms: int) -> None:
        self.node = node
        self.lease_ms, self.reserve_ms = lease_ms, reserve_ms
        self.held: dict[CID, queue.Assignment] = {}  # our lease per claimed task
        self.started: set[CID] = set()  # claimed tasks whose engine run began (renewed)
        self._renew_now = trio.Event()  # a started reservation's lease is short: renew without waiting

    def lease_for(self, settle_ms: int, ahead: bool) -> int:
        """The lease of a claim: whole unless the round claims ``ahead`` of the
        idle slots, then a reservation plus the claim's ``settle_ms`` (a steal
        starts only after settling)."""
        return self.reserve_ms + settle_ms if ahead else self.lease_ms

    def hold(self, t: CID, lease: queue.Assignment) -> None:
        """``t`` was won with ``lease``."""
        self.held[t] = lease

    def drop(self, t: CID) -> None:
        """``t`` is finished or given up here."""
        self.held.pop(t, None)
        self.started.discard(t)

    def start(self, t: CID, avg_s: float) -> None:
        """``t``'s engine run begins: its lease is renewed from now on.

        A reservation is renewed at once unless tasks here are short
        (``avg_s`` under a tenth of ``reserve_s``) and it is far from
        lapsing: a runner stopped right after starting a task must not leave
        a short lease on it (measured: ``bench spread``'s stalled node ran its
        0.5 s task again after another took it over).  Short tasks finish well
        within their reservation and cost no renewal.
        """
        self.started.add(t)
        held = self.held.get(t)
        if held is None:
            return
        left = held.until - now_ms()
        if left < self.lease_ms * 2 // 3 and (avg_s * 10_000 >= self.reserve_ms or left < self.reserve_ms // 2):
            self._renew_now.set()
        elif len(self.started) == 1:
            self._renew_now.set()  # the renew loop sleeps while nothing runs

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the leases of started attempts, all in one delta per round.

        An attempt's lease grows with its age (``max(lease, age)``, at most 8
        leases), so a long task costs a few records an hour.  Unstarted
        claims are not renewed: if the runner is stopped or too slow to start
        them, their leases (a reservation's is ``reserve_s``) expire and
        other runners take them.  Rounds come every third of the shorter of
        the two leases while anything runs, and at once when a started
        reservation needs it; with nothing started the loop sleeps.
        Cancellation leaves the leases to expire.
        """
        task_status.started()
        lease = self.lease_ms
        period = min(lease, self.reserve_ms) / 3000
        me = self.node.peer_id
        while True:
            if self.started:
                with trio.move_on_after(period):
                    await self._renew_now.wait()
            else:
                await self._renew_now.wait()
            self._renew_now = trio.Event()
            now = now_ms()
            ops: list[list[Any]] = []
            for t in list(self.started):
                a = self.held.get(t)
                if a is None or a.until - now > lease * 2 // 3:
                    continue
                renewed = queue.Assignment(a.task, me, a.at, now + min(8 * lease, max(lease, now - a.at)), a.n, a.settle)
                ops.append(queue.renew_op(a, renewed.until, now))
                self.held[t] = renewed
            if not ops:
                continue
            try:
                # Deferred: a renewal rides in the runner's next queue commit
                # (the completion of the task that freed this slot follows a
                # start's renewal within milliseconds), one delta, not two.
                await self.node.objects.commit(self.node.queue_obj, ops, defer_s=RENEW_DEFER_S)
                self.node.count("leases_renewed", len(ops))
            except StoreError as exc:
                log.warning("renew_failed", error=str(exc)[:200])


__all__ = ["LeaseNode", "Leases"]
