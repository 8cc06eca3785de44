"""py-libp2p 0.8.1 yamux: the connection's read loop never waits on a write.

Quirk: ``Yamux.handle_incoming``, the one task that reads a connection,
writes its own replies inline (a new stream's ACK, a refused stream's RST,
a ping's answer) through ``_write_frame``, which waits for the connection's
write lock and then for room in the socket's send buffer.  When both peers
send faster than the other reads (each answering the other's block
requests under load), both send buffers fill; each read loop then blocks on
its reply write, stops reading, and so keeps the other's send buffer full:
a mutual write deadlock, which rust-yamux knows too (libp2p/rust-yamux#104,
#112, #227).  Measured here (``meshd bench mesh``, 10,000 tasks, about one
run in three): one connection froze with both receive queues full
(``ss``: 136 KB and 500 KB unread, unchanged for 15 s); every request over it
timed out after 10 s, gossip to that peer overflowed, and the peers it
joined re-ran thousands of tasks whose completions could not reach them
(duplicate runs 16-52 %).

:func:`install_control_writes_aside` lets the read loop hand its replies
to a writer task of the same connection and read on: it never blocks on
the socket, so the deadlock cannot close.  The writer takes the same
write lock, so frames never interleave; a reply may now follow a frame
other tasks wrote meanwhile, which yamux allows (a stream's data may
precede its ACK).  Only this side changes, so unpatched peers
interoperate.  ``tests/test_a_yamux_read_loop_never_waits_on_a_write.py``
fails when the library's shape changes under this patch, and without it.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.stream_muxer.yamux.yamux import Yamux

__all__ = ["install_control_writes_aside"]

_original_handle_incoming: Any = Yamux.handle_incoming

#: Replies the read loop may have queued before it waits for its writer
#: again: a peer that sends this many SYNs and pings without reading our
#: answers is held back as before, while an honest peer, each of whose
#: replies answers a frame it sent, never gets near it.
MAX_QUEUED_REPLIES = 4096


async def _write_aside(conn: Any, frames: trio.MemoryReceiveChannel[bytes]) -> None:
    """Write the read loop's replies, in order; a dead connection ends it."""
    async for data in frames:
        try:
            await type(conn)._write_frame(conn, data)
        except Exception:  # the connection is gone: the read loop sees that too and ends
            return


async def _handle_incoming(self: Any) -> None:
    """The library's read loop, with a writer task beside it for its replies.

    For the loop's life the connection's ``_write_frame`` (an instance
    attribute over the class's) queues what the loop itself writes and
    passes every other task's write to the class's method.  Cancellation
    (or the loop's end) cancels the writer: a closing connection needs no
    replies.
    """
    send, receive = trio.open_memory_channel(MAX_QUEUED_REPLIES)
    reader = trio.lowlevel.current_task()

    async def write_frame(data: bytes) -> None:
        if trio.lowlevel.current_task() is reader:
            try:
                await send.send(data)  # at once unless MAX_QUEUED_REPLIES are waiting
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the loop is ending: the connection is closing
            return
        await type(self)._write_frame(self, data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write_aside, self, receive)
        self._write_frame = write_frame
        try:
            await _original_handle_incoming(self)
        finally:
            del self._write_frame  # the class's method again
            send.close()
            nursery.cancel_scope.cancel()


def install_control_writes_aside() -> None:
    """Patch ``Yamux.handle_incoming`` as above (idempotent, process-wide).

    Raises:
        RuntimeError: py-libp2p's yamux no longer has the shape this relies on.
    """
    if Yamux.handle_incoming is _handle_incoming:
        return
    if Yamux.handle_incoming is not _original_handle_incoming or not hasattr(Yamux, "_write_frame"):
        raise RuntimeError("Yamux changed: re-check meshd.p2p._yamux_control_writes")
    Yamux.handle_incoming = _handle_incoming  # type: ignore[method-assign]
