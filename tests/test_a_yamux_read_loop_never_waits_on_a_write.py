"""A yamux connection keeps reading while its socket cannot take a write.

py-libp2p's read loop wrote its own replies (a new stream's ACK, a ping's
answer) inline, so a full send buffer stopped it reading; two peers that
both sent faster than the other read then froze their connection for good (a
mutual write deadlock: under ``meshd bench mesh`` one connection in about
three runs, every request over it timing out).  With
:mod:`meshd.p2p._yamux_control_writes` the loop queues its replies for a
writer task beside it and reads on.

The connection here is a fake secured connection whose writes never finish
(a peer that reads nothing), fed frames by the test.  Waits are bounded by
``trio.fail_after``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_SYN,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
)

from meshd.p2p import _yamux_control_writes


class StuckWrites:
    """A secured connection: reads what the test feeds; every write blocks forever."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.fed = trio.Event()
        self.writes_started = 0

    def feed(self, data: bytes) -> None:
        self.inbox += data
        self.fed.set()

    async def read(self, n: int | None = None) -> bytes:
        while not self.inbox:
            self.fed = trio.Event()
            await self.fed.wait()
        n = len(self.inbox) if n is None else min(n, len(self.inbox))
        out = bytes(self.inbox[:n])
        del self.inbox[:n]
        return out

    async def write(self, data: bytes) -> None:
        self.writes_started += 1
        await trio.sleep_forever()  # the peer reads nothing: the send buffer stays full

    async def close(self) -> None:
        pass

    def get_remote_address(self) -> Any:
        return None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _syn(stream_id: int) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, 0)


def _ping(value: int) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, value)


async def _accepts_behind_a_stuck_reply(conn: StuckWrites) -> int:
    """Feed a ping and two new streams; how many streams the loop accepted within 3 s."""
    mux = Yamux(conn, ID(b"\x00\x01remote"), is_initiator=False)
    accepted = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mux.handle_incoming)
        conn.feed(_ping(7) + _syn(1) + _syn(3))
        with trio.move_on_after(3):
            for _ in range(2):
                await mux.accept_stream()
                accepted += 1
        nursery.cancel_scope.cancel()
    return accepted


async def test_the_read_loop_reads_on_while_its_replies_cannot_be_written() -> None:
    _yamux_control_writes.install_control_writes_aside()
    conn = StuckWrites()
    assert await _accepts_behind_a_stuck_reply(conn) == 2
    assert conn.writes_started >= 1  # the replies were tried, by the writer task, and are stuck there


async def test_without_the_patch_the_first_stuck_reply_stops_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The library's own loop, for contrast: what the patch exists for.
    monkeypatch.setattr(Yamux, "handle_incoming", _yamux_control_writes._original_handle_incoming)
    conn = StuckWrites()
    assert await _accepts_behind_a_stuck_reply(conn) == 0
    assert conn.writes_started == 1  # the ping's answer, and then nothing more is read


def test_the_patch_is_idempotent_and_checks_the_library_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    _yamux_control_writes.install_control_writes_aside()
    _yamux_control_writes.install_control_writes_aside()
    assert Yamux.handle_incoming is _yamux_control_writes._handle_incoming

    async def other(self: Any) -> None: ...

    monkeypatch.setattr(Yamux, "handle_incoming", other)
    with pytest.raises(RuntimeError):
        _yamux_control_writes.install_control_writes_aside()
