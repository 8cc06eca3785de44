"""Keep a role serving: restart it with backoff when it fails, and say when that happens too often.

A role (runner, evaluator, verifier, archivist) processes data that any
member of the mesh may have written.  Each role isolates its items, so one
bad item is skipped, not fatal; this supervisor is the second line: if a
defect still lets an exception out of a role's ``serve``, the role is
restarted after an exponential backoff instead of taking the daemon down
with it (today's failure mode was a crash on every restart, since the queue
replays).  More than ``unhealthy_restarts`` restarts inside
``unhealthy_window_s`` marks the node unhealthy in ``/v1/node`` and
``/v1/health``, so an operator or a monitor sees a role that keeps dying.

Roles must tolerate being restarted on the same object: their ``serve``
re-registers listeners, which are idempotent.  ``trio.Cancelled`` (shutdown)
is never caught here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .logs import get_logger

log = get_logger("meshd.supervisor")


@dataclass(frozen=True)
class SupervisorOptions:
    """Restart policy for roles.

    Attributes:
        backoff_initial_s: Wait before the first restart (default 1 s).
        backoff_max_s: Longest wait between restarts (default 60 s); a role
            that then serves that long without failing starts over at the
            initial backoff.
        unhealthy_restarts: More restarts than this inside the window mark
            the node unhealthy (default 3).
        unhealthy_window_s: The window (default 300 s, five minutes).
    """

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    unhealthy_restarts: int = 3
    unhealthy_window_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("SupervisorOptions: need 0 < backoff_initial_s <= backoff_max_s")
        if self.unhealthy_restarts < 0 or self.unhealthy_window_s <= 0:
            raise ValueError("SupervisorOptions: unhealthy_restarts >= 0 and unhealthy_window_s > 0")


@dataclass(frozen=True)
class RoleHealth:
    """One role's restart history."""

    restarts: int
    recent_restarts: int
    last_error: str | None


@dataclass(frozen=True)
class HealthStatistics:
    healthy: bool
    roles: dict[str, RoleHealth] = field(default_factory=dict)


class Health:
    """Restart history of supervised roles; decides whether the node is healthy."""

    def __init__(self, options: SupervisorOptions | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or SupervisorOptions()
        self._clock = clock
        self._times: dict[str, deque[float]] = {}
        self._totals: dict[str, int] = {}
        self._errors: dict[str, str] = {}

    def register(self, name: str) -> None:
        self._times.setdefault(name, deque())
        self._totals.setdefault(name, 0)

    def record_restart(self, name: str, error: str) -> None:
        self.register(name)
        self._times[name].append(self._clock())
        self._totals[name] += 1
        self._errors[name] = error[:500]

    def _recent(self, name: str) -> int:
        times = self._times.get(name, deque())
        horizon = self._clock() - self.options.unhealthy_window_s
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def statistics(self) -> HealthStatistics:
        roles = {name: RoleHealth(self._totals[name], self._recent(name), self._errors.get(name))
                 for name in self._times}
        healthy = all(r.recent_restarts <= self.options.unhealthy_restarts for r in roles.values())
        return HealthStatistics(healthy, roles)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


async def supervise(name: str, serve: Callable[..., Awaitable[None]], health: Health, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``serve`` (a trio service) until cancelled, restarting it when it fails.

    ``task_status.started()`` is called once: when the first run has
    started, or when the first run failed before starting (the daemon then
    comes up, reports the role as restarting, and keeps trying), so one
    poisoned role never blocks start-up.

    Cancellation stops the role where it is; the role's own docstring says
    what that leaves.
    """
    options = health.options
    health.register(name)
    backoff = options.backoff_initial_s
    signalled = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve)
                if not signalled:
                    task_status.started()
                    signalled = True
            error = "returned"  # a role's serve runs forever: returning is a defect too
        except Exception as exc:  # noqa: BLE001 - Cancelled is a BaseException and passes through
            error = _describe(exc)
            log.exception("role_failed", role=name, error=error[:500])
        if not signalled:
            task_status.started()
            signalled = True
        if trio.current_time() - began >= options.backoff_max_s:
            backoff = options.backoff_initial_s  # it served well for a while: start over
        health.record_restart(name, error)
        log.warning("role_restarting", role=name, in_s=backoff, healthy=health.statistics().healthy)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, options.backoff_max_s)
