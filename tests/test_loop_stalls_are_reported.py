"""A node says when its event loop stops turning (synchronous work on the trio thread)."""

from __future__ import annotations

import time

import pytest
import trio

from meshd.runtime.loopwatch import LoopWatch, LoopWatchOptions


async def test_a_blocked_loop_is_counted_and_reported(nursery) -> None:
    seen: list[float] = []
    watch = await nursery.start(LoopWatch(LoopWatchOptions(interval_s=0.05, stall_s=0.3), on_stall=seen.append).serve)
    await trio.sleep(0.2)
    assert watch.stalls == 0
    time.sleep(0.6)  # deliberately block the trio thread, as a synchronous store write would
    with trio.fail_after(5):
        while not seen:
            await trio.sleep(0.01)
    assert watch.stalls == 1 and seen[0] >= 0.3
    assert watch.snapshot()["worst_s"] >= 0.3


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        LoopWatchOptions(interval_s=0)
    with pytest.raises(ValueError):
        LoopWatchOptions(stall_s=-1)


async def test_the_watch_says_whether_this_process_stalled_lately_or_is_stalled_now(nursery) -> None:
    """What a runner asks after a stop (``Node.stalled``): a stall of at least
    ``late_s`` within ``within_s``, or a sample overdue by that much now (the
    process was stopped and the asker runs before the watch's own wake-up)."""
    watch = LoopWatch(options=LoopWatchOptions(interval_s=0.05, stall_s=0.2))
    await nursery.start(watch.serve)
    time.sleep(0.5)  # block the trio thread
    assert watch.stalled(0.3, 60)  # overdue right now, before the watch has woken
    with trio.fail_after(5):
        while watch.stalls == 0:
            await trio.sleep(0.01)
    assert watch.stalled(0.3, 60) and not watch.stalled(2.0, 60)  # as long as it was, no longer
    assert not watch.stalled(0.3, 0.0)  # only within the window asked about
