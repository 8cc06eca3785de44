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
from lattice.signing import Signer, peer_id_of
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


async def test_subscribe_is_the_only_listener_hook(tmp_path: Path) -> None:
    # ObjectHost.on_change and the hand-swapped Followed.changed event are gone.
    host = make_host(tmp_path)
    obj = host.follow("queue", "m")
    assert not hasattr(host, "on_change") and not hasattr(obj, "changed")
    seen: list[Any] = []
    unsubscribe = host.subscribe(seen.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        await host.commit(obj, [["add", "k", 1]])
        nursery.cancel_scope.cancel()
    unsubscribe()
    assert seen == [obj]


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


async def test_the_mesh_pump_and_the_node_unsubscribe_when_they_stop(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.p2p.mesh import Mesh, MeshOptions
    from tests._fake_transport import Hub

    host = make_host(tmp_path)
    host.follow("queue", "m")
    me = peer_id_of(SIGNER.public)
    mesh = Mesh(host, Hub().transport(me), roles=["runner"], inventory={},
                options=MeshOptions(tick_s=0.05))
    config = SimpleNamespace(node=SimpleNamespace(mesh="m", labels=(), name="n", roles=()), verify=VerifyConfig())
    node = Node(objects=host, peer_id=me, identity_seed=b"\x09" * 32, config=config)
    assert host._listeners == []  # constructors register nothing
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        await nursery.start(mesh.serve)
        await nursery.start(node.serve)
        assert len(host._listeners) == 2
        nursery.cancel_scope.cancel()
    assert host._listeners == []


def test_the_mesh_core_follows_a_replica_through_a_cursor() -> None:
    from lattice.meshcore import MeshCore

    store = MemoryBlockStore()
    rep = goho.Replica.empty(codec.encode_block({"g": 3})[0], store)
    core = MeshCore(peer_id_of(SIGNER.public), SIGNER, store, roles=["runner"])
    core.follow(rep, 0.0)
    assert rep._observers == []  # nothing calls into the core
    linked = codec.encode_block({"body": 1})[0]
    rep.update([["add", "available", linked]], SIGNER)
    assert [change.adds for _, change in core._pull_changes()] == [[("available", codec.encode(linked))]]
    assert core._pull_changes() == [] and rep._feed[1] == []  # pulled once, then not kept


async def test_the_verifier_reads_results_through_a_cursor_it_closes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from meshd.roles.verifier import Verifier
    from lattice.trust import TrustOptions

    host = make_host(tmp_path)
    results = host.follow("results", "m")
    queue_obj = host.follow("queue", "m")

    async def wait_changed(obj: Any, timeout_s: float) -> None:
        await host.wait_changed(obj, timeout_s)

    node = SimpleNamespace(
        peer_id="peer-v", mesh=None, results_obj=results, queue_obj=queue_obj, wait_changed=wait_changed,
        queue=SimpleNamespace(open_replicated=lambda: []), trust=SimpleNamespace(
            verdict=lambda t: None, options=TrustOptions(verifiers=frozenset({"peer-v", "peer-w"}))))
    verifier = Verifier(node, debounce_s=0.01)
    task = codec.encode_block({"task": "late"})[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        await nursery.start(verifier.serve)
        assert results.replica._observers == [] and len(results.replica._cursors) == 1
        await host.commit(results, [["add", str(task), 1]])
        with trio.fail_after(10):
            while verifier.stats["passes"] < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert verifier._late == set()  # pulled, and judged (no verdict yet: nothing to do)
    assert len(results.replica._cursors) == 0  # closed on exit
