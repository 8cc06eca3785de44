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
