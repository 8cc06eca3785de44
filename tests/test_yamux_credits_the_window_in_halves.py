"""Yamux window updates and gossipsub IDONTWANT an idle mesh no longer pays for (issue 16: idle CPU).

* py-libp2p still has the yamux shape :mod:`meshd.p2p._yamux_tuning` relies on.
* Small gossip messages cost their receiver no WINDOW_UPDATE frame each
  (py-libp2p sent about three per message), and no IDONTWANT RPC.
* A message larger than the receive window still arrives: the window is
  credited once half of it is consumed.

Every transport listens on 127.0.0.1:0; waits are on conditions, each bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from typing import Any

import pytest
import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import TYPE_WINDOW_UPDATE, Yamux, YamuxStream

from meshd.p2p import P2POptions, Transport
from meshd.p2p import _pubsub_tuning as tuning
from meshd.p2p import _yamux_control_writes, _yamux_tuning
from meshd.p2p.budgets import BudgetOptions

MiB = 1024 * 1024


async def _start(nursery: trio.Nursery, **options: Any) -> Transport:
    t = Transport(os.urandom(32), P2POptions(**options))
    return await nursery.start(t.serve)


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Yamux frames written, by (the writing connection's local peer, frame type)."""
    seen: Counter = Counter()
    write = Yamux._write_frame

    async def counting(self: Yamux, data: bytes) -> None:
        seen[(str(self.secured_conn.get_local_peer()), data[1])] += 1
        await write(self, data)

    monkeypatch.setattr(Yamux, "_write_frame", counting)
    return seen


@pytest.fixture
def idontwant(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Gossipsub IDONTWANT RPCs sent, by the sending peer's id."""
    sent: Counter = Counter()
    emit = GossipSub.emit_idontwant

    async def counting(self: GossipSub, msg_ids: list[bytes], to_peer: Any) -> None:
        sent[str(self.pubsub.my_id)] += 1
        await emit(self, msg_ids, to_peer)

    monkeypatch.setattr(GossipSub, "emit_idontwant", counting)
    return sent


def test_yamux_still_has_the_window_accounting_the_patch_uses() -> None:
    source = inspect.getsource(YamuxStream._auto_tune_and_send_window_update) \
        if YamuxStream._auto_tune_and_send_window_update is not _yamux_tuning._credit_in_halves \
        else inspect.getsource(_yamux_tuning._original)
    # The window arithmetic the replacement keeps: GrowTo over target, window and buffer.
    assert "delta = self.target_recv_window - (self.recv_window + buffered)" in source
    init = inspect.getsource(YamuxStream.__init__)
    for name in ("self.window_lock", "self.recv_window", "self.target_recv_window", "self._pending_recv_release"):
        assert name in init
    assert "recv_window -= len(" in inspect.getsource(_yamux_control_writes._original_handle_incoming)  # the library's loop
    assert "_auto_tune_and_send_window_update(" in inspect.getsource(YamuxStream.read)
    assert "await self._emit_idontwant_for_message(msg_id, pubsub_msg.topicIDs)" in inspect.getsource(GossipSub.publish)
    assert yamux_module.DEFAULT_WINDOW_SIZE == 256 * 1024


async def test_small_gossip_costs_no_window_update_or_idontwant_per_message(nursery, frames, idontwant) -> None:
    a = await _start(nursery)
    b = await _start(nursery, bootstrap=tuple(a.listen_addrs()))
    c = await _start(nursery, bootstrap=tuple(a.listen_addrs()))
    with trio.fail_after(20):
        for t in (a, b, c):
            await t.wait_peers(1)
        while len(a._pubsub.router.mesh.get(P2POptions().topic, ())) < 2:
            await trio.sleep(0.01)
        before = frames[(b.peer_id, TYPE_WINDOW_UPDATE)]
        for i in range(100):
            await a.broadcast(b"presence-sized " * 36 + b"%d" % i)  # ~550 bytes, like a presence
        got = 0
        while got < 100:
            peer, _data = await b.receive()
            got += peer == a.peer_id
    # py-libp2p alone: about 3 updates per message (one per read of the length prefix's bytes).
    assert frames[(b.peer_id, TYPE_WINDOW_UPDATE)] - before <= 2
    assert idontwant[b.peer_id] == 0 and idontwant[c.peer_id] == 0


async def _echo(peer: str, data: bytes) -> bytes:
    return data


async def test_a_message_larger_than_the_window_still_arrives_and_large_gossip_gets_idontwant(
        nursery, frames, idontwant) -> None:
    budgets = BudgetOptions(max_request_bytes=8 * MiB, request_bytes_per_s=8 * MiB)
    a = await _start(nursery, budgets=budgets)
    b = await _start(nursery, budgets=budgets, bootstrap=tuple(a.listen_addrs()))
    b.set_request_handler(_echo)
    payload = os.urandom(4 * MiB)  # 16 windows of 256 KiB each way
    large = [os.urandom(4 * tuning.IDONTWANT_MIN_BYTES) for _ in range(3)]
    with trio.fail_after(30):
        await a.wait_peers(1)
        await b.wait_peers(1)
        assert await a.request(b.peer_id, payload) == payload
        while not a._pubsub.router.mesh.get(P2POptions().topic):
            await trio.sleep(0.01)
        for data in large:
            await a.broadcast(data)
        for data in large:
            assert await b.receive() == (a.peer_id, data)
    # Credited in halves of the window (auto-tuning may grow it): a few per MiB, not one per read.
    for t in (a, b):
        assert 4 <= frames[(t.peer_id, TYPE_WINDOW_UPDATE)] <= 4 * 8 + 4
    assert idontwant[b.peer_id] >= len(large)  # large gossip still tells mesh peers not to send it
