"""An in-process transport hub: the same interface as meshd.p2p.transport.Transport.

Used to test the mesh logic of several nodes inside one trio run without
sockets (httpx's MockTransport pattern: a fake behind the interface).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from meshd.p2p.wire import PeerUnreachable, RemoteHandlerError, RequestTimeout


class Hub:
    def __init__(self) -> None:
        self.nodes: dict[str, "FakeTransport"] = {}
        self.down: set[str] = set()
        #: ``refuse(src, dst, data)``: True makes that request fail (a timeout, a broken stream).
        self.refuse: Callable[[str, str, bytes], bool] = lambda src, dst, data: False

    def transport(self, peer_id: str) -> "FakeTransport":
        t = FakeTransport(self, peer_id)
        self.nodes[peer_id] = t
        return t


@dataclass
class FakePeer:
    peer_id: str
    addrs: tuple[str, ...] = ()


class FakeTransport:
    def __init__(self, hub: Hub, peer_id: str) -> None:
        self.hub = hub
        self._peer_id = peer_id
        self._send, self._recv = trio.open_memory_channel[tuple[str, bytes]](10_000)
        self._handler: Callable[[str, bytes], Awaitable[bytes]] | None = None

    @property
    def peer_id(self) -> str:
        return self._peer_id

    async def broadcast(self, data: bytes) -> None:
        if self._peer_id in self.hub.down:
            return
        for pid, t in self.hub.nodes.items():
            if pid != self._peer_id and pid not in self.hub.down:
                t._send.send_nowait((self._peer_id, data))

    async def receive(self) -> tuple[str, bytes]:
        return await self._recv.receive()

    def set_request_handler(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        self._handler = handler

    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes:
        other = self.hub.nodes.get(peer_id)
        if other is None or other._handler is None or peer_id in self.hub.down or self._peer_id in self.hub.down:
            raise PeerUnreachable(f"peer {peer_id} unreachable")
        if self.hub.refuse(self._peer_id, peer_id, data):
            raise RequestTimeout(f"no response from {peer_id} (refused by the test)")
        # Like the real transport, every failure is a TransportError.
        with trio.move_on_after(timeout_s or 10):
            try:
                return await other._handler(self._peer_id, data)
            except Exception as exc:  # the real transport answers "handler failed"
                raise RemoteHandlerError(f"{peer_id}'s handler failed: {exc!r}") from exc
        raise RequestTimeout(f"no response from {peer_id} within {timeout_s or 10} s")

    def peers(self) -> list[FakePeer]:
        return [FakePeer(p) for p in self.hub.nodes if p != self._peer_id and p not in self.hub.down]
