"""Private meshes: every message sealed with an AEAD under the shared mesh secret.

``[p2p] secret`` turns a mesh private.  Each gossip message, block request,
response and farewell is sealed with ChaCha20-Poly1305 (``cryptography``)::

    sealed = b"MS2" || ts (8 bytes, big-endian ms) || nonce (12 random bytes) || ciphertext || tag (16)
    key    = HKDF-SHA256(secret, salt = "meshd mesh secret v2", info = "chacha20-poly1305")
    aad    = b"MS2" || ts || direction || origin || 0x00 || recipient [|| 0x00 || request nonce]

``direction`` is ``g`` (gossip: origin = the author's peer id, no
recipient), ``q`` (request: requester, responder) or ``r`` (response:
responder, requester, bound to the request's nonce).  So:

* an outsider (no secret) reads nothing: gossip (API URLs, addresses,
  heads), wants and blocks are ciphertext to it, and what it sends fails
  authentication (``bad_mesh_secret``);
* a sealed message cannot be re-sent under another origin, to another
  recipient, in the other direction, or as the answer to another request;
* a message is accepted once: its nonce is remembered for the replay
  window (``window_s``, 120 s), and a message whose timestamp is outside the
  window is refused (``stale_sealed``; nodes' clocks must agree within it).
  A nonce seen again is ``replayed_sealed``;
* only members receive wants: a peer is a member once a message sealed
  under its origin was opened (members gossip a presence every 2 s), and
  requests to anyone else are refused here, unsent (``want_to_non_member``);
  :meth:`SealedTransport.peers` lists members only, so outsiders are never
  offered as block providers or counted as runners.

Why an AEAD and not the HMAC of v1: the HMAC authenticated membership but
left every message readable by any peer that connected, and replayable.
Why not libp2p's private-network (pnet) PSK: py-libp2p 0.8 has none, and
wrapping the two-method transport interface keeps the mesh unaware of it
(go-ds-crdt's broadcaster split).  Random 96-bit nonces: no counter state to
keep across restarts, and a collision is negligible below 2^32 messages per
secret.

Large messages are sealed and opened in a worker thread (over
``THREAD_BYTES``), so a burst of 8 MiB answers does not hold the event loop;
ChaCha20-Poly1305 costs about 1 ms per MiB here.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .wire import PeerUnreachable, TransportError

__all__ = ["MAGIC", "SealedTransport", "SecretRefused", "Sealer", "mesh_key"]


class SecretRefused(TransportError):
    """A peer's answer did not carry the mesh secret."""


MAGIC = b"MS2"
_HEADER = len(MAGIC) + 8 + 12
_TAG = 16
#: Seal and open in a worker thread above this size.
THREAD_BYTES = 64 * 1024
GOSSIP, REQUEST, RESPONSE = b"g", b"q", b"r"


def mesh_key(secret: str) -> bytes:
    """The 32-byte ChaCha20-Poly1305 key of a mesh secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"meshd mesh secret v2",
                info=b"chacha20-poly1305").derive(secret.encode("utf-8"))


class Sealer:
    """Seals and opens messages under one mesh key, with a replay window.

    Args:
        secret: The mesh secret.
        window_s: How far a message's timestamp may be from our clock, and
            how long its nonce is remembered.
        max_remembered: Most nonces remembered; past it the oldest are
            forgotten early (a replay of one of those within the window is
            then let through: the bound on memory wins).
        clock: Wall-clock seconds (tests pass their own).
    """

    def __init__(self, secret: str, *, window_s: float = 120.0, max_remembered: int = 250_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._aead = ChaCha20Poly1305(mesh_key(secret))
        self.window_s = window_s
        self.max_remembered = max_remembered
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> its timestamp (s), oldest first
        self._lock = threading.Lock()  # opened from the event loop and from worker threads

    @staticmethod
    def _aad(head: bytes, direction: bytes, origin: str, recipient: str, bound: bytes) -> bytes:
        return head + direction + origin.encode() + b"\0" + recipient.encode() + (b"\0" + bound if bound else b"")

    def seal(self, data: bytes, direction: bytes, origin: str, recipient: str = "", bound: bytes = b"") -> bytes:
        """``data`` sealed; ``bound``: the nonce of the request a response answers."""
        head = MAGIC + struct.pack(">Q", int(self._clock() * 1000)) + os.urandom(12)
        return head + self._aead.encrypt(head[-12:], data, self._aad(head, direction, origin, recipient, bound))

    @staticmethod
    def nonce_of(sealed: bytes) -> bytes:
        """The nonce of a sealed message (what its response is bound to)."""
        return sealed[len(MAGIC) + 8:_HEADER]

    def open_untrusted(self, data: bytes, direction: bytes, origin: str, recipient: str = "",
                       bound: bytes = b"", *, once: bool = True) -> tuple[bytes | None, str]:
        """``(payload, "")``, or ``(None, reason)`` when ``data`` is refused.

        Reasons: ``bad_mesh_secret`` (malformed, or not sealed under this key
        for this direction, origin, recipient and request), ``stale_sealed``
        (timestamp outside the window), ``replayed_sealed`` (nonce seen
        within the window; only when ``once``).
        """
        if len(data) < _HEADER + _TAG or data[:len(MAGIC)] != MAGIC:
            return None, "bad_mesh_secret"
        head = data[:_HEADER]
        try:
            payload = self._aead.decrypt(head[-12:], data[_HEADER:], self._aad(head, direction, origin,
                                                                              recipient, bound))
        except InvalidTag:
            return None, "bad_mesh_secret"
        ts = struct.unpack(">Q", head[len(MAGIC):len(MAGIC) + 8])[0] / 1000
        now = self._clock()
        if abs(now - ts) > self.window_s:
            return None, "stale_sealed"
        if once:
            nonce = head[-12:]
            with self._lock:
                while self._seen and (len(self._seen) >= self.max_remembered
                                      or next(iter(self._seen.values())) < now - 2 * self.window_s):
                    self._seen.popitem(last=False)
                if nonce in self._seen:
                    return None, "replayed_sealed"
                self._seen[nonce] = ts
        return payload, ""


async def _maybe_thread(fn: Callable[[], Any], size: int) -> Any:
    if size > THREAD_BYTES:
        return await trio.to_thread.run_sync(fn)
    return fn()


class SealedTransport:
    """The same interface as :class:`meshd.p2p.transport.Transport`, sealed with a mesh secret."""

    def __init__(self, inner: Any, secret: str, *, on_reject: Callable[[str], None] | None = None,
                 window_s: float = 120.0) -> None:
        self.inner = inner
        self._sealer = Sealer(secret, window_s=window_s)
        self._refused: deque[str] = deque()
        self._members: set[str] = set()  # origins whose sealed messages opened
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

    def peer_ids(self) -> frozenset[str]:
        """The ids of :meth:`peers`."""
        inner = getattr(self.inner, "peer_ids", None)
        ids = inner() if inner is not None else frozenset(getattr(p, "peer_id", str(p)) for p in self.inner.peers())
        return ids & self._members

    def peers(self) -> list[Any]:
        """Connected peers that proved the secret (outsiders may connect, but are not peers of the mesh)."""
        return [p for p in self.inner.peers() if getattr(p, "peer_id", str(p)) in self._members]

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
            return None if data is None else self._sealer.seal(data, GOSSIP, self.peer_id)

        inner(sealed)

    async def connect_any(self, peer_id: str, addrs: list[str]) -> str:
        return await self.inner.connect_any(peer_id, addrs)

    async def broadcast(self, data: bytes) -> None:
        sealed = await _maybe_thread(lambda: self._sealer.seal(data, GOSSIP, self.peer_id), len(data))
        await self.inner.broadcast(sealed)

    async def receive(self) -> tuple[str, bytes]:
        while True:
            peer, data = await self.inner.receive()
            payload, why = await _maybe_thread(lambda: self._sealer.open_untrusted(data, GOSSIP, peer), len(data))
            if payload is not None:
                self._members.add(peer)
                return peer, payload
            self.on_reject(why)

    def set_request_handler(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        me = self.peer_id

        async def sealed(peer: str, data: bytes) -> bytes:
            payload, why = await _maybe_thread(
                lambda: self._sealer.open_untrusted(data, REQUEST, peer, me), len(data))
            if payload is None:
                self.on_reject(why)
                return b""
            answer = await handler(peer, payload)
            bound = Sealer.nonce_of(data)
            return await _maybe_thread(lambda: self._sealer.seal(answer, RESPONSE, me, peer, bound), len(answer))

        self.inner.set_request_handler(sealed)

    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes:
        if peer_id not in self._members:
            self.on_reject("want_to_non_member")
            raise PeerUnreachable(f"{peer_id} has not proved the mesh secret: nothing is sent to it")
        me = self.peer_id
        sealed = self._sealer.seal(data, REQUEST, me, peer_id)
        resp = await self.inner.request(peer_id, sealed, timeout_s=timeout_s)
        payload, why = await _maybe_thread(lambda: self._sealer.open_untrusted(
            resp, RESPONSE, peer_id, me, Sealer.nonce_of(sealed), once=False), len(resp))
        if payload is None:
            self.on_reject(why)
            raise SecretRefused(f"peer {peer_id} did not prove the mesh secret")
        return payload
