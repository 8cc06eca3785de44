"""Notice when the event loop stops turning, and say so.

Everything a node does (gossip, block requests, the HTTP API, role loops)
shares one trio thread.  Synchronous work on that thread (a store write, a
long decode) stalls all of it: peers' block requests then time out and are
reset, which looks like a network fault from the other side.  This service
measures how late a short sleep wakes up; a wake-up more than
``stall_s`` late is logged as ``loop_stalled`` and counted, so an operator
(and a failing test's log) can tell a busy node from a broken network.

Costs one wake-up per ``interval_s``.  Cancellation leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .logs import get_logger

log = get_logger("meshd.loopwatch")


@dataclass(frozen=True)
class LoopWatchOptions:
    """How the loop is sampled.

    Attributes:
        interval_s: Sleep between samples (default 1 s: an idle daemon
            wakes for it once a second; a stall longer than ``stall_s`` is
            still seen, since it delays the sample it overlaps).
        stall_s: A wake-up this much later than asked is a stall (default 1 s).
    """

    interval_s: float = 1.0
    stall_s: float = 1.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.stall_s <= 0:
            raise ValueError("LoopWatchOptions: interval_s and stall_s must be > 0")


@dataclass
class LoopWatch:
    """Counts of event-loop stalls; ``on_stall(late_s)`` is told of each one
    (the daemon counts them in ``/v1/node`` ``counters.loop_stalls``)."""

    options: LoopWatchOptions = field(default_factory=LoopWatchOptions)
    on_stall: Callable[[float], None] | None = None
    stalls: int = 0
    worst_s: float = 0.0
    last_sample: float = field(default_factory=time.monotonic)  # monotonic time of the last wake-up
    #: Recent stalls as (monotonic end, seconds late), newest last (a few kept).
    recent: list[tuple[float, float]] = field(default_factory=list)

    def stalled(self, late_s: float, within_s: float) -> bool:
        """Whether the loop stalled ``late_s`` or longer within the last
        ``within_s``, or is stalled that long right now (its sample is
        overdue: the process was stopped, and the code asking runs before
        this watch's own overdue wake-up)."""
        now = time.monotonic()
        if now - self.last_sample - self.options.interval_s >= late_s:
            return True
        return any(late >= late_s and now - end < within_s for end, late in self.recent)

    def snapshot(self) -> dict[str, float | int]:
        return {"stalls": self.stalls, "worst_s": round(self.worst_s, 3)}

    async def serve(self, *, task_status: trio.TaskStatus["LoopWatch"] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        interval = self.options.interval_s
        while True:
            t0 = time.monotonic()
            await trio.sleep(interval)
            self.last_sample = time.monotonic()
            late = self.last_sample - t0 - interval
            if late > self.options.stall_s:
                self.recent = [*self.recent[-7:], (self.last_sample, late)]
                self.stalls += 1
                self.worst_s = max(self.worst_s, late)
                log.warning("loop_stalled", late_s=round(late, 3))
                if self.on_stall is not None:
                    self.on_stall(late)
