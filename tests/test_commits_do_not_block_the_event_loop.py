"""Group commit writes in worker threads: a slow block store stalls no other task.

The store here is the real on-disk store behind a wrapper whose writes
sleep (``time.sleep``: blocking, as an HTTP call to IPFS is).  Real time
throughout: worker threads and a virtual clock do not mix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from lattice.diskstore import DiskBlockStore
from lattice.queue import QueueView
from lattice.signing import Signer
from meshd.store.heads import HeadsStore
from meshd.store.objects import CommitOptions, ObjectHost

PUT_DELAY_S = 0.3


class SlowStore:
    """The disk store, with every write blocking for ``delay_s`` first."""

    def __init__(self, inner: DiskBlockStore, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.puts = 0

    def put(self, cid: Any, data: bytes) -> None:
        time.sleep(self.delay_s)
        self.puts += 1
        self.inner.put(cid, data)

    def put_many(self, blocks: Any) -> None:
        time.sleep(self.delay_s)
        self.puts += 1
        self.inner.put_many(blocks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingHeads(HeadsStore):
    """A heads store that remembers every row it wrote."""

    saved: list[tuple[Any, ...]]

    def save(self, genesis: Any, kind: str, name: str, heads: Any, base: Any = None) -> None:
        super().save(genesis, kind, name, heads, base)
        self.saved.append(tuple(heads))


def make_host(tmp_path: Path, delay_s: float = 0.0) -> tuple[ObjectHost, SlowStore, RecordingHeads]:
    store = SlowStore(DiskBlockStore.open(tmp_path / "blocks.db"), 0.0)
    heads = RecordingHeads.open(tmp_path / "heads.db")
    heads.saved = []
    host = ObjectHost(store, heads, Signer.from_seed(b"\x07" * 32), CommitOptions(window_s=0.002))
    store.delay_s = delay_s  # following the object below writes synchronously, at full speed
    return host, store, heads


async def test_a_slow_store_write_does_not_stall_a_concurrent_task(tmp_path: Path) -> None:
    host, store, _ = make_host(tmp_path)
    obj = host.follow("queue", "m")
    store.delay_s = PUT_DELAY_S
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        nursery.start_soon(ticker)
        t0 = time.monotonic()
        await host.commit(obj, [["add", "k", 1]], [(*_block(b"linked"),)])
        elapsed = time.monotonic() - t0
        nursery.cancel_scope.cancel()
    # Two blocking writes (linked blocks, delta): the commit took them both,
    # and the ticker kept running meanwhile (on the trio thread it would
    # have ticked about once).
    assert elapsed >= 2 * PUT_DELAY_S
    assert ticks >= 0.5 * elapsed / 0.01 - 5


async def test_commits_that_arrive_during_a_slow_flush_share_one_delta(tmp_path: Path) -> None:
    host, store, _ = make_host(tmp_path)
    obj = host.follow("queue", "m")
    store.delay_s = PUT_DELAY_S
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        first = trio.Event()

        async def one(i: int) -> None:
            await host.commit(obj, [["add", "k", i]])
            if i == 0:
                first.set()

        nursery.start_soon(one, 0)
        await trio.sleep(0.05)  # the first flush is now writing (blocking) in a thread
        async with trio.open_nursery() as burst:
            for i in range(1, 21):
                burst.start_soon(one, i)
        assert first.is_set()
        nursery.cancel_scope.cancel()
    # One delta for the first caller, one shared by the twenty that waited.
    assert host.statistics().commits == 2
    assert obj.replica.statistics().applied == 2
    assert obj.replica.state.count("k") == 21


async def test_a_commit_returns_only_after_its_heads_are_saved(tmp_path: Path) -> None:
    host, store, heads = make_host(tmp_path)
    obj = host.follow("queue", "m")
    store.delay_s = 0.05
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        for i in range(3):
            await host.commit(obj, [["add", "k", i]])
            # Durable on return: the row names the new delta, which is stored.
            (row,) = [o for o in heads.load() if o.genesis == obj.genesis]
            assert list(row.heads) == obj.replica.heads
            assert all(store.inner.has(h) for h in row.heads)
        nursery.cancel_scope.cancel()
    assert heads.saved[-1] == tuple(obj.replica.heads)


async def test_a_view_sees_a_commit_only_once_it_is_durable(tmp_path: Path) -> None:
    host, store, heads = make_host(tmp_path)
    obj = host.follow("queue", "m")
    view = QueueView(obj.replica)
    store.delay_s = 0.2
    task, _ = _block(b"task body")
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        nursery.start_soon(host.commit, obj, [["add", "available", task]])
        await trio.sleep(0.1)  # the delta is being written
        assert task not in view and not heads.saved[1:]
        with trio.fail_after(10):
            await host.wait_changed(obj)
        assert task in view and heads.saved[-1] == tuple(obj.replica.heads)
        nursery.cancel_scope.cancel()


async def test_a_shielded_commit_still_returns_when_the_host_stops_during_a_slow_flush(tmp_path: Path) -> None:
    host, store, _ = make_host(tmp_path)
    obj = host.follow("queue", "m")
    store.delay_s = PUT_DELAY_S
    done = trio.Event()

    async def shielded() -> None:
        with trio.CancelScope(shield=True):
            await host.commit(obj, [["add", "k", "kept"]])
        done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        nursery.start_soon(shielded)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()  # shutdown: the flush in its thread completes
    assert done.is_set()
    assert obj.replica.state.contains("k", "kept")
    assert [o.heads for o in host.heads.load() if o.genesis == obj.genesis] == [tuple(obj.replica.heads)]


def _block(data: bytes) -> tuple[Any, bytes]:
    from lattice import codec

    return codec.encode_block({"data": data})
