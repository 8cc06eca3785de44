"""The node's GOHOs: replicas, their views, durable batched commits.

:class:`ObjectHost` owns every replica the node follows.  Local writes go
through :meth:`ObjectHost.commit`, which batches the ops of concurrent callers
into one signed delta per object (group commit): a burst of 1,000 enqueues
costs one delta, one block write and one heads write instead of 1,000.

Durability order of a flush, so that a SIGKILL at any point loses nothing
that was acknowledged:

1. the blocks the ops link to, then the signed delta block, go into the
   block store (committed);
2. the heads row is written (heads last: they never name a missing block);
3. only then are the waiting callers released (and the API answers 201).

Observers (the HPCP broadcaster, the evaluator) are told after step 2.

Threads.  Store and heads writes run in worker threads
(``trio.to_thread.run_sync``): with the IPFS store they are HTTP calls, and
the event loop keeps serving gossip, block requests and the API meanwhile.
The replica itself is only changed on the trio thread (the delta is signed
and written in a thread, then applied).  Each object has a lock
(:meth:`ObjectHost.locked`): a flush holds it from its first write to its
heads write, so flushes of one object never interleave and its heads row
never goes backwards.  Anything else that changes a replica and writes its
heads (the mesh merging peers' deltas) takes the same lock.

Change notification (one mechanism).  Every followed object has a
``version`` that :meth:`ObjectHost.notify` raises after its heads are saved.
Synchronous listeners subscribe with :meth:`ObjectHost.subscribe`, which
returns the function that unsubscribes them; tasks wait with
:meth:`ObjectHost.wait_changed`.  Views over a replica's state pull its
changes themselves (:meth:`lattice.goho.Replica.cursor`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
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
        inline: Carry a commit's small linked blocks inline in its delta
            (a v2 delta, ``lattice.records.choose_inline``; default True).
        io_in_threads: Run store and heads writes in worker threads (default
            True).  False runs them on the trio thread, as before: only for
            tests on a virtual clock (``MockClock`` with autojump treats a
            task waiting on a thread as idle and jumps time past it).
    """

    window_s: float = 0.002
    max_ops: int = 5_000
    inline: bool = True
    io_in_threads: bool = True

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.max_ops < 1:
            raise ValueError("window_s must be >= 0 and max_ops >= 1")


@dataclass
class _Batch:
    ops: list[list[Any]] = field(default_factory=list)
    blocks: list[tuple[CID, bytes]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None
    #: Set by a caller that wants no delay (ends a ``defer_s`` wait).
    urgent: trio.Event = field(default_factory=trio.Event)


@dataclass
class Followed:
    """One followed object.

    Attributes:
        version: Raised by :meth:`ObjectHost.notify` (and :meth:`ObjectHost.wake`)
            each time the object's change is durable (heads saved) or a
            waiter should look again.
    """

    genesis: CID
    kind: str
    name: str
    replica: goho.Replica
    batch: _Batch | None = None
    version: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock, repr=False)
    #: When (``trio.current_time``) the last flush of a commit of this object ended.
    flushed_at: float = float("-inf")
    # The tasks in ObjectHost.wait_changed; only ObjectHost.wake unparks them.
    _waiters: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot, repr=False)


@dataclass(frozen=True)
class ObjectStatistics:
    objects: int
    commits: int
    ops: int


class ObjectHost:
    """Replicas of the followed GOHOs plus durable group commit."""

    def __init__(self, store: Any, heads: HeadsStore, signer: Signer, options: CommitOptions | None = None,
                 replica_options: goho.ReplicaOptions | None = None,
                 checks: Mapping[str, Callable[[Any], None]] | None = None) -> None:
        """``checks`` maps an object kind to the check its peers' deltas must
        pass (``goho.ReplicaOptions.check_delta``), e.g. the queue's writing
        rules (``lattice.queue.check_delta``)."""
        self.store = store
        self.heads = heads
        self.signer = signer
        self.options = options or CommitOptions()
        self.replica_options = replica_options or goho.ReplicaOptions()
        self._checks = dict(checks or {})
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
            rep = goho.Replica.open(obj.genesis, self.store, obj.heads, self._options(obj.kind), base=obj.base)
            self.objects[obj.genesis] = Followed(obj.genesis, obj.kind, obj.name, rep)
            log.info("object_loaded", genesis=str(obj.genesis), kind=obj.kind, name=obj.name,
                     deltas=rep.statistics().applied, seconds=round(time.perf_counter() - t0, 3))

    def follow(self, kind: str, name: str, nonce: bytes = b"", *, genesis: CID | None = None) -> Followed:
        """Follow an object (creating its genesis block when we know the record).

        Synchronous store and heads writes: for start-up; the API and roles
        use :meth:`follow_async`.
        """
        if genesis is None:
            genesis, data = records.make_genesis(kind, name, nonce)
            self.store.put(genesis, data)
        found = self.objects.get(genesis)
        if found is not None:
            return found
        rep = goho.Replica.empty(genesis, self.store, self._options(kind))
        obj = Followed(genesis, kind, name, rep)
        self.objects[genesis] = obj
        self.heads.save(genesis, kind, name, rep.heads, rep.base)
        return obj

    async def follow_async(self, kind: str, name: str, nonce: bytes = b"", *,
                           genesis: CID | None = None) -> Followed:
        """:meth:`follow` with its block and heads writes in worker threads (API and role paths)."""
        if genesis is None:
            genesis, data = records.make_genesis(kind, name, nonce)
            if genesis not in self.objects:
                await self.run_io(self.store.put, genesis, data)
        found = self.objects.get(genesis)
        if found is not None:
            return found
        obj = self.objects[genesis] = Followed(genesis, kind, name, goho.Replica.empty(genesis, self.store, self._options(kind)))
        async with self.locked(obj):  # a first commit may already be flushing: heads never go back
            await self.save_heads(obj)
        return obj

    def _options(self, kind: str) -> goho.ReplicaOptions:
        check = self._checks.get(kind)
        if check is None:
            return self.replica_options
        return dataclasses.replace(self.replica_options, check_delta=check)

    def get(self, genesis: CID) -> Followed | None:
        return self.objects.get(genesis)

    # -- change notification ----------------------------------------------------------

    def subscribe(self, listener: Callable[[Followed], None]) -> Callable[[], None]:
        """Call ``listener(obj)`` on the trio thread after any object changes.

        Local commits and merged peer deltas both notify, once their heads are
        saved.  The listener must not block (note the object, wake a task).

        Returns:
            A function that removes the listener (idempotent).
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def wait_changed(self, obj: Followed, timeout_s: float = float("inf"), *, since: int | None = None) -> bool:
        """Wait until ``obj`` is notified after version ``since`` (default: now), or ``timeout_s``.

        A wake may carry no state change (:meth:`wake`: blocks the waiter
        needs arrived), so callers re-check what they wait for.

        Returns:
            True when notified, False on timeout.
        """
        start = obj.version if since is None else since
        if obj.version > start:
            return True
        with trio.move_on_after(timeout_s):
            # wake() raises the version and unparks every waiter together.
            await obj._waiters.park()
            return True
        return False

    def notify(self, obj: Followed) -> None:
        """Raise ``obj.version``, wake its waiters and call the listeners (trio thread, no I/O).

        Call it after the object's changed heads are saved.
        """
        self.wake(obj)
        for listener in list(self._listeners):
            listener(obj)

    def wake(self, obj: Followed) -> None:
        """Wake ``obj``'s waiters without a state change (listeners are not called).

        For when something they wait for arrived beside the object, e.g. the
        linked blocks (task bodies, outputs) its records name.
        """
        obj.version += 1
        obj._waiters.unpark_all()

    @asynccontextmanager
    async def locked(self, obj: Followed) -> AsyncIterator[Followed]:
        """Hold ``obj``'s lock: no flush of ``obj`` runs meanwhile.

        Take it around anything that changes ``obj.replica`` or writes its
        heads off the trio thread, e.g. merging peers' deltas in a worker
        thread, then :meth:`save_heads` and :meth:`notify` before leaving.
        Hold it only for bounded work (never across a network wait): a
        shutdown flush waits for it, shielded.
        """
        async with obj.lock:
            yield obj

    async def save_heads(self, obj: Followed) -> None:
        """Write ``obj``'s current heads row in a worker thread (call under :meth:`locked`).

        Written again if the replica moved on while the thread ran, so the
        row ends at the heads the replica has when this returns.
        """
        for _ in range(8):
            heads, base = obj.replica.heads, obj.replica.base
            await self.run_io(self.heads.save, obj.genesis, obj.kind, obj.name, heads, base)
            if obj.replica.heads == heads and obj.replica.base == base:
                return
        self.heads.save(obj.genesis, obj.kind, obj.name, obj.replica.heads, obj.replica.base)

    def changed(self, obj: Followed) -> None:
        """Persist ``obj``'s heads on the trio thread, then :meth:`notify`.

        For single-threaded drivers (tests that move deltas by hand); the
        mesh pump holds :meth:`locked`, awaits :meth:`save_heads`, then
        calls :meth:`notify`.
        """
        self.heads.save(obj.genesis, obj.kind, obj.name, obj.replica.heads, obj.replica.base)
        self.notify(obj)

    # -- committing -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus["ObjectHost"] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flusher nursery until cancelled.

        Cancellation flushes every batch still waiting for company (shielded:
        the flush finishes its writes in worker threads), so a caller that
        shields its commit (the runner recording a finished task) is never
        left waiting on a flusher that is gone; unshielded callers are
        cancelled before their acknowledgement, and their ops may or may not
        be on disk, as after a crash.  A commit made after ``serve`` ended is
        flushed by its caller.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def commit(self, obj: Followed, ops: list[list[Any]], blocks: list[tuple[CID, bytes]] = (), *,
                     defer_s: float = 0.0) -> None:
        """Add ``ops`` to ``obj`` durably; returns once they are on disk.

        ``blocks`` (verified by the store) are written in the same flush,
        before the delta: use it for blocks the ops link to (outputs, result
        records), so a batch costs one store transaction for all of them.
        Concurrent callers share one delta: those arriving within
        ``window_s``, and those arriving while an earlier flush of ``obj``
        still runs.  ``defer_s`` is for ops that may wait that long for
        company (a lease renewal): they ride in the next commit of ``obj``
        made within ``defer_s``, which is flushed without delay, or are
        flushed alone after it; a commit without ``defer_s`` never waits
        for them.

        Cancellation: the ops stay in their batch, which is flushed anyway;
        whether they are on disk when the caller is cancelled is unknown.
        """
        if not ops:
            return
        batch = obj.batch
        fresh = batch is None
        if batch is None:
            batch = obj.batch = _Batch()
        batch.ops.extend(ops)
        batch.blocks.extend(blocks)
        if defer_s <= 0:
            batch.urgent.set()
        if fresh and not self._start_flusher(obj, batch, defer_s):
            # serve() is ending or has ended (shutdown): nobody would flush
            # this batch later, so its caller flushes it now.
            await self._flush(obj, batch)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _start_flusher(self, obj: Followed, batch: _Batch, defer_s: float = 0.0) -> bool:
        nursery = self._nursery
        if nursery is None:
            return False
        try:
            nursery.start_soon(self._flush_later, obj, batch, defer_s)
        except RuntimeError:  # the nursery is closed to new arrivals: serve() is ending
            return False
        return True

    async def _flush_later(self, obj: Followed, batch: _Batch, defer_s: float = 0.0) -> None:
        # Let every task that is already runnable add its ops (a few
        # scheduler passes cost microseconds), then wait up to window_s only
        # while the batch keeps growing: a lone op is flushed at once (low
        # latency), a burst shares one delta (high throughput).  A deferred
        # batch first waits for an urgent commit to join it, at most defer_s.
        # After a quiet spell (no flush of this object for window_s) a batch
        # nobody joined in those passes is not held for the window either:
        # on an idle node that was 0.5 ms or more on each commit of a task's
        # critical path (enqueue, result).
        try:
            if defer_s > 0 and not batch.urgent.is_set():
                with trio.move_on_after(defer_s):
                    await batch.urgent.wait()
            first = len(batch.ops)
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            quiet = trio.current_time() - obj.flushed_at > self.options.window_s
            if self.options.window_s and not (quiet and len(batch.ops) == first):
                with trio.move_on_after(self.options.window_s):
                    seen = -1
                    while seen != len(batch.ops) and len(batch.ops) < self.options.max_ops:
                        seen = len(batch.ops)
                        await trio.sleep(self.options.window_s / 4)
        finally:
            # Flushed even when cancelled (shutdown) while waiting for
            # company: a shielded caller waits on batch.done, and nothing
            # else would ever set it (the hang of issue 11).  _flush shields
            # itself.
            await self._flush(obj, batch)

    async def _flush(self, obj: Followed, batch: _Batch) -> None:
        """Write ``batch`` (store and heads I/O in worker threads) and release its callers.

        Shielded from cancellation, so every caller of the batch is released
        (with success or the error); the daemon's shutdown watchdog bounds a
        store that never answers.
        """
        with trio.CancelScope(shield=True):
            try:
                async with obj.lock:
                    # The batch stays open to new callers until the lock is
                    # ours: callers that arrive while an earlier flush of
                    # this object writes share this delta.
                    if obj.batch is batch:
                        obj.batch = None  # later callers start the next batch
                    await self._write(obj, batch)
            except Exception as exc:  # reported to every caller of this batch
                log.error("commit_failed", genesis=str(obj.genesis), error=repr(exc))
                batch.error = exc
            finally:
                obj.flushed_at = trio.current_time()
                batch.done.set()

    async def _write(self, obj: Followed, batch: _Batch) -> None:
        # Caller holds obj.lock.  Order: linked blocks, deltas, heads (see the
        # module doc), and only then the in-memory apply, on the trio thread:
        # nobody reads a commit (views, peers' requests) before it is durable.
        rep = obj.replica
        first, height = rep.tip()
        made, heads = await self.run_io(self._write_chain, obj, batch, first, height, rep.heads, rep.base)
        for delta, data in made:
            rep.apply_local(delta.cid, data, delta)
        if rep.heads != heads:  # a merge landed while the row was written
            await self.save_heads(obj)
        self._commits += 1
        self._ops += len(batch.ops)
        self.notify(obj)

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread (inline when ``io_in_threads`` is off).

        For blocking store, heads and file work on async paths (the API's too).
        Not cancellable once started: the thread finishes its transaction.
        """
        if self.options.io_in_threads:
            return await trio.to_thread.run_sync(fn, *args)
        await trio.lowlevel.checkpoint()
        return fn(*args)

    def _write_chain(self, obj: Followed, batch: _Batch, first: list[CID], height: int, heads_now: list[CID],
                     base: CID | None) -> tuple[list[tuple[records.Delta, bytes]], list[CID]]:
        """Write a batch in one worker-thread call: its linked blocks, its
        deltas (signed), then the heads row; returns the deltas and the heads.

        One thread hop per commit, not one per step: on a busy event loop
        each hop waited for the loop to take the result (measured: 3.4 ms
        for a result's commit while the API answered a request).  The order
        is the module's: ops never name a missing block, heads never name a
        missing delta.  ``heads_now`` is the replica's heads when the write
        began; a merge that lands meanwhile is saved by the caller.
        """
        ops, step = batch.ops, self.options.max_ops
        if batch.blocks:
            self.store.put_many(batch.blocks)
        parents, made = first, []
        # Small linked blocks ride inline in the delta whose ops link them
        # (v2 deltas): a peer that fetches the delta fetches nothing per task.
        linked = dict(batch.blocks) if self.options.inline else {}
        for i in range(0, len(ops), step):  # a long batch: a chain of deltas
            chunk = ops[i : i + step]
            inline = records.choose_inline(chunk, linked, rest=i + step >= len(ops)) if linked else []
            made.append(self._write_delta(obj.genesis, parents, height, chunk, inline))
            parents, height = [made[-1][0].cid], height + 1
        heads = sorted((set(heads_now) - set(first)) | {made[-1][0].cid})
        self.heads.save(obj.genesis, obj.kind, obj.name, heads, base)
        return made, heads

    def _write_delta(self, genesis: CID, parents: list[CID], height: int, ops: list[list[Any]],
                     inline: list[bytes]) -> tuple[records.Delta, bytes]:
        # Worker thread: signing and encoding are pure, the put is the I/O.
        delta, data = records.signed_delta(self.signer, genesis, parents, height, ops, inline)
        self.store.put(delta.cid, data)
        return delta, data
