"""Wire helpers of the libp2p transport: errors, framing, key pair, logging.

Kept apart from :mod:`meshd.p2p` so that the transport module stays short and
so that the framing can be tested (and fuzzed) without a libp2p host.

Request/response framing on ``/meshd/blocks/1.0.0`` (one stream per request)::

    frame    = uvarint(len(payload)) || payload        (LEB128, at most 10 bytes)
    request  = frame(request bytes)                     then the client closes its write side
    response = frame(status || response bytes)          status 0x00 = ok, 0x01 = handler failed

A frame whose announced length exceeds ``max_message_bytes`` (plus the one
status byte on responses) is refused before its payload is read: the reader
raises :class:`BadFrame` and the caller resets the stream.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from ..errors import MeshdError

RESPONSE_OK: Final = 0x00
RESPONSE_HANDLER_FAILED: Final = 0x01
_MAX_VARINT_BYTES: Final = 10
_READ_CHUNK: Final = 256 * 1024


class TransportError(MeshdError):
    """The libp2p transport failed to deliver a message or a request."""


class PeerUnreachable(TransportError):
    """The peer could not be dialled, or its connection was lost mid-request."""


class RequestTimeout(TransportError):
    """The peer did not answer a request within its timeout."""


class BadFrame(TransportError):
    """A peer sent a malformed, truncated or oversize frame."""


class MessageTooLarge(TransportError):
    """A message we were asked to send exceeds the configured limit."""


class RemoteHandlerError(TransportError):
    """The peer's request handler failed; it answered with an error status."""


class TransportClosed(TransportError):
    """The transport is not serving (not started yet, or already torn down)."""


class _ReadableStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


def encode_varint(value: int) -> bytes:
    """The unsigned LEB128 encoding of ``value`` (``value >= 0``)."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """``payload`` prefixed with its length as an unsigned varint."""
    return encode_varint(len(payload)) + payload


def decode_frame_untrusted(data: bytes, max_bytes: int) -> tuple[bytes, bytes]:
    """Split one frame off the front of ``data``.

    Returns:
        ``(payload, rest)``.

    Raises:
        BadFrame: the varint is overlong, the length exceeds ``max_bytes``, or
            ``data`` ends before the frame does.
    """
    length, used = _decode_varint_untrusted(data)
    if length > max_bytes:
        raise BadFrame(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    end = used + length
    if len(data) < end:
        raise BadFrame("truncated frame")
    return bytes(data[used:end]), bytes(data[end:])


def _decode_varint_untrusted(data: bytes) -> tuple[int, int]:
    value = 0
    for i, byte in enumerate(data[:_MAX_VARINT_BYTES]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise BadFrame("non-minimal varint length")
            return value, i + 1
    if len(data) >= _MAX_VARINT_BYTES:
        raise BadFrame("varint length longer than 10 bytes")
    raise BadFrame("truncated varint length")


class FrameReader:
    """Reads length-prefixed frames from a libp2p stream, enforcing a limit.

    ``NetStream.read(n)`` returns *up to* ``n`` bytes, so frames are assembled
    from a small buffer.  The announced length is checked before any payload
    is buffered, so an oversize frame costs us at most one read chunk.

    Args:
        stream: Anything with ``async read(n) -> bytes`` (``b""`` or
            ``StreamEOF`` at end of stream).
    """

    def __init__(self, stream: _ReadableStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.bytes_read = 0  # lets callers tell "closed without answering" from "sent garbage"

    async def _fill(self) -> bool:
        try:
            chunk = await self._stream.read(_READ_CHUNK)
        except EOFError:  # libp2p's StreamEOF derives from EOFError
            return False
        if not chunk:
            return False
        self._buf += chunk
        self.bytes_read += len(chunk)
        return True

    async def read_frame_untrusted(self, max_bytes: int) -> bytes:
        """The next frame's payload.

        Cancellation leaves the reader with a partial frame buffered; it must
        not be reused (the stream is reset by our callers anyway).

        Raises:
            BadFrame: oversize, overlong or truncated frame (end of stream
                before the frame is complete, including before its first byte).
            Whatever the stream raises other than end of stream.
        """
        while True:
            try:
                length, used = _decode_varint_untrusted(self._buf)
                break
            except BadFrame:
                if len(self._buf) >= _MAX_VARINT_BYTES or not await self._fill():
                    raise
        if length > max_bytes:
            raise BadFrame(f"frame of {length} bytes exceeds the limit of {max_bytes}")
        del self._buf[:used]
        while len(self._buf) < length:
            if not await self._fill():
                raise BadFrame("stream ended inside a frame")
        payload = bytes(self._buf[:length])
        del self._buf[:length]
        return payload


def ed25519_key_pair(seed: bytes):  # -> libp2p.crypto.keys.KeyPair
    """The libp2p key pair whose private seed is ``seed`` (32 bytes)."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    if len(seed) != 32:
        raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
    return create_new_key_pair(seed)


def adopt_libp2p_logging(level: int = logging.WARNING) -> None:
    """Give the ``libp2p`` loggers back to the application's logging config.

    Quirk: ``import libp2p`` runs ``libp2p.utils.logging.setup_logging()``,
    which sets ``propagate = False`` on the ``libp2p`` logger and clears its
    handlers, so its warnings go to Python's last-resort stderr handler,
    bypassing our logfmt formatter; with ``LIBP2P_DEBUG`` set it also starts a
    queue-listener thread writing to a temp file.  We stop that listener,
    strip the handlers it attached, let records propagate to the root logger
    (configured by :mod:`meshd.runtime.logs`) and cap the level so its debug chatter
    never reaches our handlers.  Root logging is not touched.
    """
    try:
        from libp2p.utils import logging as libp2p_logging

        libp2p_logging.cleanup_logging()
    except ImportError:  # pragma: no cover - layout changed; nothing to stop
        pass
    for name in list(logging.root.manager.loggerDict):
        if name == "libp2p" or name.startswith("libp2p."):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.propagate = True
            lg.setLevel(logging.NOTSET)
    logging.getLogger("libp2p").setLevel(level)
