"""py-libp2p 0.8.1 yamux: credit a stream's receive window in halves, as go-yamux does.

Quirk: py-libp2p's ``YamuxStream`` sends a WINDOW_UPDATE frame after almost
every read, however small (its "partial slack" and "release on read"
branches), although its own docstring promises go-yamux's hysteresis.
Pubsub reads each RPC's length prefix one byte at a time, so every gossip
message of an idle mesh (presence, ~550 bytes) cost its receiver three
extra frames to write (Noise-encrypted, one ``send`` each) and its sender
three to read, decrypt and handle: three quarters of the frames an idle
daemon sent were window updates (issue 16: idle CPU).

:func:`install_window_hysteresis` replaces the method with go-yamux's rule
(``sendWindowUpdate``): credit what was consumed once it reaches half the
receive window, in one frame, and keep py-libp2p's window auto-tuning.  No
deadlock: a sender blocks only when the whole window is out, and a reader
waiting for data has an empty buffer, so it has consumed the whole window
and credits it.  Only the receiver's side changes, so peers that run the
unpatched library interoperate.  ``tests/test_yamux_credits_the_window_in_halves.py``
fails when the library's shape changes under this patch.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

__all__ = ["install_window_hysteresis"]

#: The methods the replacement calls; a library without them is not patched.
_NEEDS = ("_grow_threshold", "_apply_autotune_epoch", "send_window_update")

_original: Any = YamuxStream._auto_tune_and_send_window_update


async def _credit_in_halves(self: Any, *, bytes_read: int = 0) -> None:
    """go-yamux's ``sendWindowUpdate``: one update once half the window is consumed."""
    del bytes_read  # what was consumed is the window minus what is out and buffered
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self._grow_threshold():
            return
        self.recv_window += delta
        delta += self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    # Not under window_lock: an inbound WINDOW_UPDATE needs it (see send_window_update).
    await self.send_window_update(delta, skip_lock=True)


def install_window_hysteresis() -> None:
    """Replace ``YamuxStream``'s window update with :func:`_credit_in_halves` (idempotent, process-wide).

    Raises:
        RuntimeError: py-libp2p's yamux no longer has the shape this relies on.
    """
    current = YamuxStream._auto_tune_and_send_window_update
    if current is _credit_in_halves:
        return
    if current is not _original or not all(hasattr(YamuxStream, n) for n in _NEEDS):
        raise RuntimeError("YamuxStream changed: re-check meshd.p2p._yamux_tuning")
    YamuxStream._auto_tune_and_send_window_update = _credit_in_halves  # type: ignore[method-assign]
