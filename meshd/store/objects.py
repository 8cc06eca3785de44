"""The node's GOHOs: replicas, their views, durable batched commits.

:class:`ObjectHost` owns every replica the node follows.  Local writes go
through :meth:`ObjectHost.commit`, which batches the ops of concurrent callers
into one signed delta per object (group commit): a burst of 1,000 enqueues
costs one delta, one block write and one heads write instead of 1,000.

Durability order of a flush, so that a SIGKILL at any point loses nothing
that was acknowledged:

1. ``replica.update`` writes the delta block to the block store (committed);
2. the heads row is written (heads last: they never name a missing block);
3. only then are the waiting callers released (and the API answers 201).

Observers (the HPCP broadcaster, the evaluator) are told after step 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from lattice import goho, records
from lattice.cid import CID
from lattice.signing import Signer

from ..runtime.logs import get_logger
from .heads import HeadsStore

log = get_logger("meshd.objects")


@dataclass(frozen=True)
class CommitOptions:
    """Group-commit tuning.

    Attributes:
        window_s: Longest a batch keeps waiting for company while it is still
            growing (2 ms); a batch that stops growing is flushed at once.
        max_ops: A batch is flushed once it holds this many ops (5,000).
    """

    window_s: float = 0.002
    max_ops: int = 5_000

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.max_ops < 1:
            raise ValueError("window_s must be >= 0 and max_ops >= 1")


@dataclass
class _Batch:
    ops: list[list[Any]] = field(default_factory=list)
    blocks: list[tuple[CID, bytes]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


@dataclass
class Followed:
    genesis: CID
    kind: str
    name: str
    replica: goho.Replica
    changed: trio.Event = field(default_factory=trio.Event)
    batch: _Batch | None = None


@dataclass(frozen=True)
class ObjectStatistics:
    objects: int
    commits: int
    ops: int


class ObjectHost:
    """Replicas of the followed GOHOs plus durable group commit."""

    def __init__(self, store: Any, heads: HeadsStore, signer: Signer, options: CommitOptions | None = None,
                 replica_options: goho.ReplicaOptions | None = None) -> None:
        self.store = store
        self.heads = heads
        self.signer = signer
        self.options = options or CommitOptions()
        self.replica_options = replica_options or goho.ReplicaOptions()
        self.objects: dict[CID, Followed] = {}
        self._listeners: list[Callable[[Followed], None]] = []
        self._commits = 0
        self._ops = 0
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> ObjectStatistics:
        return ObjectStatistics(len(self.objects), self._commits, self._ops)

    # -- following ------------------------------------------------------------------

    def load(self) -> None:
        """Replay every followed object from the heads database (startup)."""
        for obj in self.heads.load():
            t0 = time.perf_counter()
            rep = goho.Replica.open(obj.genesis, self.store, obj.heads, self.replica_options, base=obj.base)
            self.objects[obj.genesis] = Followed(obj.genesis, obj.kind, obj.name, rep)
            log.info("object_loaded", genesis=str(obj.genesis), kind=obj.kind, name=obj.name,
                     deltas=rep.statistics().applied, seconds=round(time.perf_counter() - t0, 3))

    def follow(self, kind: str, name: str, nonce: bytes = b"", *, genesis: CID | None = None) -> Followed:
        """Follow an object (creating its genesis block when we know the record)."""
        if genesis is None:
            genesis, data = records.make_genesis(kind, name, nonce)
            self.store.put(genesis, data)
        found = self.objects.get(genesis)
        if found is not None:
            return found
        rep = goho.Replica.empty(genesis, self.store, self.replica_options)
        obj = Followed(genesis, kind, name, rep)
        self.objects[genesis] = obj
        self.heads.save(genesis, kind, name, rep.heads, rep.base)
        return obj

    def get(self, genesis: CID) -> Followed | None:
        return self.objects.get(genesis)

    def on_change(self, listener: Callable[[Followed], None]) -> None:
        """Call ``listener(obj)`` after any object changes (local or remote)."""
        self._listeners.append(listener)

    def changed(self, obj: Followed) -> None:
        """Record that ``obj``'s replica advanced: persist heads, wake waiters."""
        self.heads.save(obj.genesis, obj.kind, obj.name, obj.replica.heads, obj.replica.base)
        ev, obj.changed = obj.changed, trio.Event()
        ev.set()
        for listener in self._listeners:
            listener(obj)

    # -- committing -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus["ObjectHost"] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flusher nursery until cancelled.

        Cancellation flushes every batch still waiting for company (a flush
        is synchronous and short), so a caller that shields its commit (the
        runner recording a finished task) is never left waiting on a flusher
        that is gone; unshielded callers are cancelled before their
        acknowledgement, and their ops may or may not be on disk, as after a
        crash.  A commit made after ``serve`` ended is flushed inline.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def commit(self, obj: Followed, ops: list[list[Any]], blocks: list[tuple[CID, bytes]] = ()) -> None:
        """Add ``ops`` to ``obj`` durably; returns once they are on disk.

        ``blocks`` (verified by the store) are written in the same flush,
        before the delta: use it for blocks the ops link to (outputs, result
        records), so a batch costs one store transaction for all of them.
        Concurrent callers within ``window_s`` share one delta.
        """
        if not ops:
            return
        batch = obj.batch
        fresh = batch is None
        if batch is None:
            batch = obj.batch = _Batch()
        batch.ops.extend(ops)
        batch.blocks.extend(blocks)
        if fresh and not self._start_flusher(obj, batch):
            # serve() is ending or has ended (shutdown): nobody would flush
            # this batch later, so its caller flushes it now.
            self._flush(obj, batch)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _start_flusher(self, obj: Followed, batch: _Batch) -> bool:
        nursery = self._nursery
        if nursery is None:
            return False
        try:
            nursery.start_soon(self._flush_later, obj, batch)
        except RuntimeError:  # the nursery is closed to new arrivals: serve() is ending
            return False
        return True

    async def _flush_later(self, obj: Followed, batch: _Batch) -> None:
        # Let every task that is already runnable add its ops (a few
        # scheduler passes cost microseconds), then wait up to window_s only
        # while the batch keeps growing: a lone op is flushed at once (low
        # latency), a burst shares one delta (high throughput).
        try:
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            if self.options.window_s:
                with trio.move_on_after(self.options.window_s):
                    seen = -1
                    while seen != len(batch.ops) and len(batch.ops) < self.options.max_ops:
                        seen = len(batch.ops)
                        await trio.sleep(self.options.window_s / 4)
        finally:
            # Flushed even when cancelled (shutdown) while waiting for
            # company: a shielded caller waits on batch.done, and nothing
            # else would ever set it (the hang of issue 11).
            self._flush(obj, batch)

    def _flush(self, obj: Followed, batch: _Batch) -> None:
        """Write ``batch`` (synchronously) and release its callers."""
        if obj.batch is batch:
            obj.batch = None  # later callers start the next batch
        try:
            ops = batch.ops
            if batch.blocks:
                self.store.put_many(batch.blocks)  # linked blocks first: ops never name a missing block
            for i in range(0, len(ops), self.options.max_ops):
                obj.replica.update(ops[i : i + self.options.max_ops], self.signer)
            self._commits += 1
            self._ops += len(ops)
            self.changed(obj)
        except Exception as exc:  # reported to every caller of this batch
            log.error("commit_failed", genesis=str(obj.genesis), error=repr(exc))
            batch.error = exc
        finally:
            batch.done.set()
