"""The Runner's checkpoints: resume a task from its latest saved state, record new ones, ask before a vacate.

A task with ``checkpoint_s`` runs with a checkpoint directory (the engine
side of the protocol is :mod:`engines.checkpoint`):

1. before the engine starts, the latest checkpoint of the task
   (``lattice.checkpoints``, written by any runner of an earlier attempt) is
   fetched from peers and written to ``<dir>/checkpoint``, so the engine
   resumes from it;
2. while it runs, a watcher looks at ``<dir>/checkpoint`` every
   ``poll_s``; each new state is stored as blocks (a raw block sent with
   the record's delta, or a UnixFS file as engine files are) and recorded
   with a ``checkpoints`` record signed by this runner;
3. before a vacate, :meth:`Checkpointing.request` creates ``<dir>/request``
   and waits (at most ``grace_s``) for the engine's answer to be recorded,
   so the next runner loses almost no work.

A state that cannot be fetched in time is skipped: the task starts over,
which is slower but correct.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import outcome
import trio

from engines.checkpoint import REQUEST_FILE, STATE_FILE, CheckpointDir
from engines.errors import EngineCorrupt, EngineMissing
from engines.manifest import CHUNK_SIZE, missing_file_blocks, put_file, read_file
from lattice.checkpoints import MAX_CHECKPOINT_BYTES, checkpoint_op
from lattice.cid import CID, RAW
from lattice.errors import StoreError

from ..node import now_ms
from ..runtime.logs import get_logger

if TYPE_CHECKING:
    from .runner import RunnerNode

log = get_logger("meshd.runner")
T = TypeVar("T")


@dataclass(frozen=True)
class CheckpointOptions:
    """How the runner handles checkpoints.

    Attributes:
        poll_s: How often the watcher looks for a new state (default 0.25 s).
        grace_s: Longest wait for the engine's state before a vacate (default
            1 s: a SIGTERM's drain has 2 s beyond its deadline for this and
            the release records, ``meshd.daemon``).
        fetch_s: Longest wait for the latest state's blocks before a run (default 10 s).
        work_root: Parent of the checkpoint directories; None: the system temp.
    """

    poll_s: float = 0.25
    grace_s: float = 1.0
    fetch_s: float = 10.0
    work_root: str | None = None

    def __post_init__(self) -> None:
        if self.poll_s <= 0 or self.grace_s < 0 or self.fetch_s <= 0:
            raise ValueError("checkpoint options must be positive")


@dataclass
class _Spot:
    path: str
    attempt: int
    seen: tuple[int, int] | None  # (mtime_ns, size) of the state file last recorded or restored
    recorded: int = 0  # states recorded in this run
    changed: trio.Event = field(default_factory=trio.Event)


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _read_file(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class Checkpointing:
    """Checkpoints of the tasks one runner runs (module doc)."""

    def __init__(self, node: "RunnerNode", options: CheckpointOptions = CheckpointOptions()) -> None:
        self.node = node
        self.options = options
        self._spots: dict[CID, _Spot] = {}
        self.stats = {"restored": 0, "recorded": 0, "requested": 0}

    async def run(self, t: CID, attempt: int, interval_s: float,
                  run: Callable[[CheckpointDir], Awaitable[T]]) -> T:
        """Run ``run`` with a checkpoint directory for attempt ``attempt`` of ``t``.

        Cancellation stops the watcher (a state saved but not yet recorded is
        lost) and removes the directory.
        """
        path = tempfile.mkdtemp(prefix="meshd-ck-", dir=self.options.work_root)
        try:
            seen = await self._restore(t, path)
            spot = self._spots[t] = _Spot(path, attempt, seen)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, t, spot)
                # Captured, so the run's own errors (EngineMissing, which the
                # runner fetches for) come out as themselves, not in a group.
                result = await outcome.acapture(run, CheckpointDir(path, float(interval_s)))
                nursery.cancel_scope.cancel()
            return result.unwrap()
        finally:
            self._spots.pop(t, None)
            shutil.rmtree(path, ignore_errors=True)  # sync on purpose: it must run when cancelled too

    async def request(self, tasks: Iterable[CID]) -> int:
        """Ask the engines of ``tasks`` to save now; wait (at most ``grace_s``)
        until each has a new state recorded.  Returns how many answered.

        Cancellation leaves the request files; the engines may still save.
        """
        waiting: dict[CID, tuple[_Spot, int]] = {}
        for t in tasks:
            spot = self._spots.get(t)
            if spot is None:
                continue
            try:
                with open(os.path.join(spot.path, REQUEST_FILE), "wb"):
                    pass
            except OSError:
                continue
            waiting[t] = (spot, spot.recorded)
        if not waiting:
            return 0
        self.stats["requested"] += len(waiting)
        with trio.move_on_after(self.options.grace_s):
            while any(s.recorded == n and self._spots.get(t) is s for t, (s, n) in waiting.items()):
                await next(s for t, (s, n) in waiting.items() if s.recorded == n).changed.wait()
        return sum(1 for s, n in waiting.values() if s.recorded > n)

    async def _restore(self, t: CID, path: str) -> tuple[int, int] | None:
        """Write ``t``'s latest state to ``<path>/checkpoint``; its signature, or None."""
        ck = self.node.checkpoints.latest(t)
        if ck is None:
            return None
        store = self.node.store
        data = None
        with trio.move_on_after(self.options.fetch_s):
            for _ in range(8):
                missing = await trio.to_thread.run_sync(missing_file_blocks, store, ck.state)
                if not missing:
                    try:
                        data = await trio.to_thread.run_sync(read_file, store, ck.state)
                    except (EngineMissing, EngineCorrupt) as exc:
                        log.warning("checkpoint_unreadable", task=str(t), state=str(ck.state), error=str(exc)[:200])
                    break
                if not await self.node.fetch_blocks(missing, timeout_s=self.options.fetch_s):
                    break
        if data is None or len(data) != ck.size:
            log.warning("checkpoint_not_restored", task=str(t), state=str(ck.state))
            return None
        target = os.path.join(path, STATE_FILE)
        await trio.to_thread.run_sync(_write_file, target, data)
        self.stats["restored"] += 1
        log.info("checkpoint_restored", task=str(t), state=str(ck.state), size=ck.size, attempt=ck.n, by=ck.by)
        return _signature(target)

    async def _watch(self, t: CID, spot: _Spot) -> None:
        target = os.path.join(spot.path, STATE_FILE)
        while True:
            await trio.sleep(self.options.poll_s)
            sig = _signature(target)
            if sig is None or sig == spot.seen:
                continue
            spot.seen = sig
            try:
                await self._record(t, spot, target)
            except (OSError, StoreError) as exc:
                log.warning("checkpoint_not_recorded", task=str(t), error=str(exc)[:200])

    async def _record(self, t: CID, spot: _Spot, target: str) -> None:
        data = await trio.to_thread.run_sync(_read_file, target, MAX_CHECKPOINT_BYTES + 1)
        if len(data) > MAX_CHECKPOINT_BYTES:
            log.warning("checkpoint_too_large", task=str(t), limit=MAX_CHECKPOINT_BYTES)
            return
        node = self.node
        blocks: list[tuple[CID, bytes]] = []
        if len(data) <= CHUNK_SIZE:
            state = CID.for_block(RAW, data)
            blocks.append((state, data))  # small: stored with the delta, and may ride inline in it
        else:
            state = await trio.to_thread.run_sync(put_file, node.store, data)
        op = checkpoint_op(t, node.peer_id, now_ms(), spot.attempt, state, len(data))
        await node.objects.commit(node.queue_obj, [op], blocks)
        spot.recorded += 1
        self.stats["recorded"] += 1
        node.count("checkpoints_recorded")
        ev, spot.changed = spot.changed, trio.Event()
        ev.set()
        log.info("checkpoint_recorded", task=str(t), state=str(state), size=len(data), attempt=spot.attempt)


__all__ = ["CheckpointOptions", "Checkpointing"]
