"""One stalled peer must not slow every broadcast, and a wedged connection is reset.

Measured on ``meshd bench mesh --remote``: a py-libp2p connection between two
runners wedged under load (gossip queues full both ways, requests on it timing
out) and stayed so for minutes.  ``Transport.broadcast`` waited the full
``request_timeout_s`` for that peer's queue on *every* message, under its
publish lock, so all of the node's gossip to every peer (announcements,
presence) went out at one message per 10 s: the submitter heard no results
and lone tasks timed out after 60 s.

Now a peer that overflowed once is not waited for again until its queue
drains, and after ``3 x request_timeout_s`` its connection is closed so the
membership layer dials afresh.  Driven here with a fake pubsub (queues as
lists) and a fake host under trio's virtual clock.
"""

from __future__ import annotations

import os

import trio

from meshd.p2p.options import P2POptions
from meshd.p2p.transport import Transport


class FakeID:
    def __init__(self, name: str) -> None:
        self.name = name

    def to_base58(self) -> str:
        return self.name


class FakePubsub:
    def __init__(self, topic: str, peers: list[FakeID]) -> None:
        self.peer_topics = {topic: peers}
        self.peer_queues: dict[FakeID, list[int]] = {p: [] for p in peers}
        self.published = 0

    async def publish(self, topic: str, data: bytes) -> None:
        self.published += 1


class FakeHost:
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def disconnect(self, peer: FakeID) -> None:
        self.closed.append(peer.to_base58())

    def get_connected_peers(self) -> list[FakeID]:
        return []


def _transport(peers: list[FakeID]) -> tuple[Transport, FakePubsub, FakeHost]:
    t = Transport(os.urandom(32), P2POptions())
    pubsub, host = FakePubsub(t._options.topic, peers), FakeHost()
    t._pubsub, t._host, t._serving = pubsub, host, True
    return t, pubsub, host


async def test_a_stalled_peer_is_waited_for_once_then_reset(autojump_clock) -> None:
    stuck, fine = FakeID("stuck"), FakeID("fine")
    t, pubsub, host = _transport([stuck, fine])
    timeout = t._options.request_timeout_s
    pubsub.peer_queues[stuck] = [0] * 100  # never drains

    start = trio.current_time()
    await t.broadcast(b"first")
    assert trio.current_time() - start >= timeout  # the first broadcast waits it out
    start = trio.current_time()
    for _ in range(50):
        await t.broadcast(b"next")
    assert trio.current_time() - start < 1.0  # the rest do not wait for it again
    assert pubsub.published == 51
    assert t.statistics().broadcast_overflows == 1
    assert host.closed == []

    await trio.sleep(3 * timeout + 1)
    await t.broadcast(b"later")
    assert host.closed == ["stuck"]  # wedged for 3 x timeout: its connection is closed
    assert t.statistics().wedged_resets == 1


async def test_a_peer_that_drains_is_waited_for_again(autojump_clock) -> None:
    slow = FakeID("slow")
    t, pubsub, host = _transport([slow])
    timeout = t._options.request_timeout_s
    pubsub.peer_queues[slow] = [0] * 100
    await t.broadcast(b"one")
    pubsub.peer_queues[slow] = []  # it caught up
    await t.broadcast(b"two")
    pubsub.peer_queues[slow] = [0] * 100  # and fell behind again: backpressure applies again

    async def drain_soon() -> None:
        await trio.sleep(1.0)
        pubsub.peer_queues[slow] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_soon)
        start = trio.current_time()
        await t.broadcast(b"three")
        waited = trio.current_time() - start
    assert 1.0 <= waited < timeout
    assert host.closed == []
