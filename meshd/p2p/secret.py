"""Private meshes: a shared secret that every message must prove.

``[p2p] secret`` turns a mesh private: each gossip message, block request
and response carries ``b"MS1" || HMAC-SHA256(key, payload) || payload``, with
``key = SHA-256("meshd mesh secret v1" || secret)``.  A peer without the
secret can connect at the transport level, but everything it sends is dropped
(counted as ``bad_mesh_secret``) and it learns nothing from requests.  The
transport is already encrypted by Noise; this authenticates *membership*.

Why not libp2p's private-network (pnet) PSK: py-libp2p 0.8 has no pnet
transport, and wrapping the two-method transport interface keeps the mesh
logic unaware of it (go-ds-crdt's broadcaster split).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .wire import TransportError


class SecretRefused(TransportError):
    """A peer's answer did not carry the mesh secret."""

MAGIC = b"MS1"
TAG = 32


def mesh_key(secret: str) -> bytes:
    return hashlib.sha256(b"meshd mesh secret v1" + secret.encode("utf-8")).digest()


def seal(key: bytes, payload: bytes) -> bytes:
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def open_untrusted(key: bytes, data: bytes) -> bytes | None:
    """The payload if ``data`` carries a valid tag, else None."""
    if len(data) < len(MAGIC) + TAG or data[:3] != MAGIC:
        return None
    tag, payload = data[3 : 3 + TAG], data[3 + TAG :]
    if not hmac.compare_digest(tag, hmac.new(key, payload, hashlib.sha256).digest()):
        return None
    return payload


class SealedTransport:
    """The same interface as :class:`meshd.p2p.transport.Transport`, sealed with a mesh key."""

    def __init__(self, inner: Any, secret: str, *, on_reject: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self._key = mesh_key(secret)
        self._refused: deque[str] = deque()
        #: Called (any thread) with the reason of each refused message; by
        #: default the reasons wait for :meth:`take_rejections`, which the
        #: mesh pump drains into its counters (no wiring after construction).
        self.on_reject: Callable[[str], None] = on_reject if on_reject is not None else self._refused.append

    def take_rejections(self) -> list[str]:
        """The reasons of messages refused since the last call (oldest first); any thread."""
        out: list[str] = []
        while self._refused:
            out.append(self._refused.popleft())
        inner = getattr(self.inner, "take_rejections", None)  # the connection budgets' refusals
        return out + (inner() if inner is not None else [])

    @property
    def peer_id(self) -> str:
        return self.inner.peer_id

    def listen_addrs(self) -> list[str]:
        return self.inner.listen_addrs()

    def peers(self) -> list[Any]:
        return self.inner.peers()

    async def connect(self, multiaddr: str) -> str:
        return await self.inner.connect(multiaddr)

    def set_farewell(self, farewell: Callable[[], bytes | None]) -> None:
        # Optional, as for any transport (the mesh looks it up with getattr):
        # an inner transport without farewells sends none.
        inner = getattr(self.inner, "set_farewell", None)
        if inner is None:
            return

        def sealed() -> bytes | None:
            data = farewell()
            return None if data is None else seal(self._key, data)

        inner(sealed)

    async def connect_any(self, peer_id: str, addrs: list[str]) -> str:
        return await self.inner.connect_any(peer_id, addrs)

    async def broadcast(self, data: bytes) -> None:
        await self.inner.broadcast(seal(self._key, data))

    async def receive(self) -> tuple[str, bytes]:
        while True:
            peer, data = await self.inner.receive()
            payload = open_untrusted(self._key, data)
            if payload is not None:
                return peer, payload
            self.on_reject("bad_mesh_secret")

    def set_request_handler(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        async def sealed(peer: str, data: bytes) -> bytes:
            payload = open_untrusted(self._key, data)
            if payload is None:
                self.on_reject("bad_mesh_secret")
                return b""
            return seal(self._key, await handler(peer, payload))

        self.inner.set_request_handler(sealed)

    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes:
        resp = await self.inner.request(peer_id, seal(self._key, data), timeout_s=timeout_s)
        payload = open_untrusted(self._key, resp)
        if payload is None:
            self.on_reject("bad_mesh_secret")
            raise SecretRefused(f"peer {peer_id} did not prove the mesh secret")
        return payload
