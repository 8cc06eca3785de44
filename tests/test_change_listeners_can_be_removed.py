"""One change-notification mechanism: listeners and waits that can be undone; views that register nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from lattice import codec, goho
from lattice.blockstore import MemoryBlockStore
from lattice.queue import QueueView
from lattice.results import ResultsView
from lattice.signing import Signer
from lattice.trust import TrustView
from meshd.store.heads import HeadsStore
from meshd.store.objects import ObjectHost

SIGNER = Signer.from_seed(b"\x09" * 32)


def make_host(tmp_path: Path) -> ObjectHost:
    return ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / "heads.db"), SIGNER)


async def test_an_unsubscribed_listener_is_no_longer_called(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    obj = host.follow("queue", "m")
    seen: list[Any] = []
    unsubscribe = host.subscribe(seen.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        await host.commit(obj, [["add", "k", 1]])
        assert seen == [obj]
        unsubscribe()
        unsubscribe()  # idempotent
        await host.commit(obj, [["add", "k", 2]])
        nursery.cancel_scope.cancel()
    assert seen == [obj]
    assert obj.version == 2


async def test_wait_changed_wakes_on_a_commit_and_times_out_without_one(tmp_path: Path) -> None:
    # Real time: commits write in worker threads, which a virtual clock
    # would skip past.
    host = make_host(tmp_path)
    obj = host.follow("queue", "m")
    assert await host.wait_changed(obj, 0.05) is False
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        before = obj.version
        nursery.start_soon(host.commit, obj, [["add", "k", 1]])
        assert await host.wait_changed(obj, 5.0) is True
        assert obj.version == before + 1
        # A change since a version the caller saw is not missed.
        assert await host.wait_changed(obj, 5.0, since=before) is True
        nursery.cancel_scope.cancel()


async def test_the_compatibility_hooks_still_fire(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    obj = host.follow("queue", "m")
    old_style: list[Any] = []
    host.on_change(old_style.append)  # ObjectHost.on_change: compatibility wrapper
    event = obj.changed  # Followed.changed: compatibility event
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        await host.commit(obj, [["add", "k", 1]])
        nursery.cancel_scope.cancel()
    assert old_style == [obj] and event.is_set()


async def test_a_wake_reaches_waiters_but_not_listeners(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    obj = host.follow("queue", "m")
    seen: list[Any] = []
    host.subscribe(seen.append)
    async with trio.open_nursery() as nursery:
        woke = trio.Event()

        async def waiter() -> None:
            await host.wait_changed(obj, 10.0)
            woke.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        host.wake(obj)  # e.g. the task bodies the queue names arrived
        with trio.fail_after(5):
            await woke.wait()
    assert seen == []


def test_views_register_nothing_and_pull_changes_when_read() -> None:
    rep = goho.Replica.empty(codec.encode_block({"g": 1})[0], MemoryBlockStore())
    views = [QueueView(rep), ResultsView(rep), TrustView(rep)]
    assert rep._observers == []  # nothing calls into a view
    task = codec.encode_block({"task": 1})[0]
    rep.update([["add", "available", task]], SIGNER)
    assert task in views[0]
    for view in views:
        view.close()
    rep.update([["add", "available", codec.encode_block({"task": 2})[0]]], SIGNER)
    assert rep._feed[1] == []  # closed cursors hold no changes


def test_a_replica_keeps_changes_only_until_every_open_cursor_pulled_them() -> None:
    rep = goho.Replica.empty(codec.encode_block({"g": 2})[0], MemoryBlockStore())
    rep.update([["add", "k", 0]], SIGNER)  # no cursor yet: nothing kept
    assert rep._feed[1] == []
    a, b = rep.cursor(), rep.cursor()
    rep.update([["add", "k", 1]], SIGNER)
    rep.update([["add", "k", 2]], SIGNER)
    assert [c.adds for c in a.pull()] == [[("k", codec.encode(1))], [("k", codec.encode(2))]]
    assert len(rep._feed[1]) == 2  # b has not pulled yet
    assert len(b.pull()) == 2 and rep._feed[1] == [] and a.pull() == []
    unsubscribe = rep.subscribe(lambda change: None)  # Replica.subscribe: compatibility, undoable
    unsubscribe()
    assert rep._observers == []
