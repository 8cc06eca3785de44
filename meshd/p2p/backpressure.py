"""Broadcast back-pressure: publish only while every subscribed peer's queue has room.

Quirk (py-libp2p 0.8.1): ``publish()`` drops silently when a peer's outgoing
queue (32 RPCs) is full, and the queue has no "drained" event.  So before each
broadcast :class:`~meshd.p2p.transport.Transport` waits here until every
subscribed peer's queue is below a high-water mark, polling with a short
backoff.  A peer that stays full past ``request_timeout_s`` is marked stalled
and holds nobody back until it drains; one stalled for three times that has
its connection closed.  Kept apart from the transport because it is one
policy with its own state (the stalled peers) and its own tests
(``tests/test_a_stalled_peer_does_not_slow_every_broadcast.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

from ..runtime.logs import get_logger
from .options import P2POptions

__all__ = ["Backpressure"]

# Quirk: publish() drops silently when a peer's outgoing queue (32 RPCs) is
# full.  We only publish while every subscribed peer's queue is below this
# mark, leaving room for control RPCs and for messages we forward for others.
_QUEUE_HIGH_WATER: Final = 16
_BACKOFF_MIN_S: Final = 0.0005
_BACKOFF_MAX_S: Final = 0.002

log = get_logger("meshd.p2p")


class Backpressure:
    """The stalled peers of one transport, and the waits before its broadcasts.

    Args:
        options: The transport's options (``topic``, ``request_timeout_s``).
        counts: The transport's counters; ``broadcast_waits``,
            ``broadcast_overflows`` and ``wedged_resets`` are counted there.
    """

    def __init__(self, options: P2POptions, counts: MutableMapping[str, int]) -> None:
        self._options = options
        self._counts = counts
        # Peers whose queue stayed full past request_timeout_s: when first
        # seen so.  Broadcasts stop waiting for them until they drain.
        self._stalled: dict[Any, float] = {}

    async def wait_for_queue_room(self, pubsub: Any) -> None:
        """Return once no subscribed peer that is not stalled has a full queue.

        Cancellation changes nothing but the backoff already slept.
        """
        topic_peers = pubsub.peer_topics.get(self._options.topic, ())
        backoff = _BACKOFF_MIN_S
        deadline = None
        while True:
            full = [p for p in topic_peers if len(pubsub.peer_queues.get(p, ())) >= _QUEUE_HIGH_WATER]
            for p in [p for p in self._stalled if p not in full]:
                del self._stalled[p]  # it drained: it is waited for again
            # A peer known to be stalled holds nobody back: waiting the full
            # timeout on every broadcast made all our gossip (announcements,
            # presence) one message per request_timeout_s for every peer.
            full = [p for p in full if p not in self._stalled]
            if not full:
                return
            now = trio.current_time()
            if deadline is None:
                self._counts["broadcast_waits"] += 1
                deadline = now + self._options.request_timeout_s
            elif now >= deadline:
                self._counts["broadcast_overflows"] += 1
                log.warning("p2p_broadcast_overflow", stalled_peers=",".join(p.to_base58() for p in full))
                for p in full:
                    self._stalled[p] = now
                return
            # RpcQueue exposes no "drained" event: back off exponentially
            # (0.5 ms .. 20 ms) while the sender tasks drain the queues.
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def reset_wedged(self, disconnect: Callable[[Any], Awaitable[None]]) -> None:
        """Close, with ``disconnect(peer)``, the connections of peers stalled for ``3 x request_timeout_s``.

        Measured (bench mesh --remote, 3 daemons, 20,000 tasks): a py-libp2p
        connection between two runners wedged under load, both ways (gossip
        queues full, every request on it timing out), and stayed so for
        minutes.  Closing it lets the membership layer dial afresh (a
        reconnect is what a peer that really left costs anyway).
        Cancellation may leave a close half done; the next broadcast tries again.
        """
        if not self._stalled:
            return
        limit = trio.current_time() - 3 * self._options.request_timeout_s
        for peer in [p for p, since in self._stalled.items() if since <= limit]:
            del self._stalled[peer]
            self._counts["wedged_resets"] += 1
            log.warning("p2p_wedged_reset", peer_id=peer.to_base58())
            with trio.move_on_after(self._options.request_timeout_s):
                try:
                    await disconnect(peer)
                except Exception as exc:  # noqa: BLE001 - py-libp2p raises its own types; a failed close is logged
                    log.info("p2p_wedged_reset_failed", peer_id=peer.to_base58(), error=repr(exc))
