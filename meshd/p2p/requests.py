"""Both ends of one ``/meshd/blocks/1.0.0`` exchange over an open libp2p stream.

:mod:`meshd.p2p` opens the streams, applies timeouts and counts; this module
only speaks the frames described in :mod:`meshd.p2p.wire`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..runtime.logs import get_logger
from .wire import (
    RESPONSE_HANDLER_FAILED,
    RESPONSE_OK,
    BadFrame,
    FrameReader,
    MessageTooLarge,
    PeerUnreachable,
    RemoteHandlerError,
    encode_frame,
)

log = get_logger("meshd.p2p")

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]


class Served(enum.Enum):
    """How one inbound request ended; the value names its statistics counter."""

    OK = "requests_served"
    HANDLER_FAILED = "handler_errors"
    BAD_FRAME = "bad_frames"
    BROKEN = "requests_broken"
    REFUSED = "requests_refused"


async def call_over_stream(stream: Any, peer_id: str, data: bytes, max_bytes: int) -> bytes:
    """Write ``data`` as one frame, half-close, read and decode the response.

    The caller owns the stream: it applies the timeout and resets the stream
    if this raises (or is cancelled).  On success the stream is closed.

    Raises:
        PeerUnreachable: the stream broke, or ended before any response byte.
        BadFrame: malformed, truncated or oversize response, or unknown status.
        RemoteHandlerError: the peer answered with the handler-failed status.
    """
    reader = FrameReader(stream)
    try:
        await stream.write(encode_frame(data))
        await stream.close_write()
        reply = await reader.read_frame_untrusted(max_bytes + 1)  # + the status byte
    except BadFrame:
        if reader.bytes_read == 0:  # the stream ended before any answer: the peer left
            raise PeerUnreachable(f"{peer_id} closed the stream without answering") from None
        raise
    except Exception as exc:  # py-libp2p's stream/muxer errors, mapped at the boundary
        raise PeerUnreachable(f"request to {peer_id} broke: {exc}") from exc
    await close_quietly(stream)
    if not reply:
        raise BadFrame("empty response frame")
    if reply[0] == RESPONSE_HANDLER_FAILED:
        raise RemoteHandlerError(f"{peer_id}'s handler failed")
    if reply[0] != RESPONSE_OK:
        raise BadFrame(f"unknown response status {reply[0]}")
    return reply[1:]


async def answer_stream(stream: Any, peer_id: str, handler: RequestHandler | None, options: Any,
                        admit: Callable[[str, int], bool] = lambda peer, size: True) -> Served:
    """Read one request frame, run ``handler``, write one response frame.

    A request over ``options.budgets.max_request_bytes`` (or ``max_message_bytes``) is refused from its
    frame header, before its payload is read; one that ``admit(peer_id,
    size)`` refuses (the connection's budget is spent) is reset unanswered.

    Never raises except ``trio.Cancelled``: an oversize or malformed request
    resets the stream; a handler exception (or a response over the limit) is
    logged and answered with the handler-failed status, so a buggy handler
    can't take the host down.  Reading and writing are each bounded by
    ``options.request_timeout_s``; the handler itself is not (the client's
    timeout resets the stream, and its write then fails here).
    """
    try:
        with trio.fail_after(options.request_timeout_s):
            request = await FrameReader(stream).read_frame_untrusted(
                min(options.max_message_bytes, options.budgets.max_request_bytes))
    except BadFrame as exc:
        log.warning("p2p_bad_request_frame", peer_id=peer_id, error=str(exc))
        await reset_quietly(stream)
        return Served.BAD_FRAME
    except Exception as exc:  # includes trio.TooSlowError; Cancelled passes
        log.debug("p2p_request_read_failed", peer_id=peer_id, error=repr(exc))
        await reset_quietly(stream)
        return Served.BROKEN
    if not admit(peer_id, len(request)):
        await reset_quietly(stream)
        return Served.REFUSED
    status, body, outcome = RESPONSE_OK, b"", Served.OK
    try:
        if handler is None:
            raise LookupError("no request handler set")
        body = await handler(peer_id, request)
        if len(body) > options.max_message_bytes:
            raise MessageTooLarge(f"response of {len(body)} bytes exceeds {options.max_message_bytes}")
    except Exception as exc:  # trio.Cancelled is a BaseException: it passes
        log.warning("p2p_request_handler_failed", peer_id=peer_id, error=repr(exc))
        status, body, outcome = RESPONSE_HANDLER_FAILED, b"", Served.HANDLER_FAILED
    try:
        with trio.fail_after(options.request_timeout_s):
            await stream.write(encode_frame(bytes([status]) + bytes(body)))
            await stream.close()
    except Exception as exc:  # includes trio.TooSlowError; Cancelled passes
        log.debug("p2p_response_write_failed", peer_id=peer_id, error=repr(exc))
        await reset_quietly(stream)
        return Served.BROKEN
    return outcome


async def reset_quietly(stream: Any) -> None:
    """Reset ``stream`` (if any), shielded and bounded; a dead connection is fine."""
    if stream is None:
        return
    with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
        try:
            await stream.reset()
        except Exception:  # already reset or the connection is gone: nothing to undo
            pass


async def close_quietly(stream: Any) -> None:
    """Close ``stream``, shielded and bounded; a peer that closed first is fine."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
        try:
            await stream.close()
        except Exception:  # the peer closed first: nothing left to release
            pass
