"""Who the transport is connected to, since when, and when that last changed.

py-libp2p reports connections through a notifee; :class:`Connections` turns
those calls into the per-peer connection counts and connect times that
:meth:`~meshd.p2p.transport.Transport.peers` reports, and into the churn
signal (:meth:`Connections.wait_churn`, :meth:`Connections.quiet_s`) that lets
pollers (the graft loop, the mesh's watch loop) sleep while nothing changes
(issue 16: idle CPU).  Kept apart from the transport because it is state fed
by libp2p's callbacks, not a thing the transport does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, MutableMapping
from typing import Any

import trio

from ..runtime.logs import get_logger

__all__ = ["Connections"]

log = get_logger("meshd.p2p")


class _Notifee:
    """Tracks connections for :meth:`Transport.peers`; libp2p calls it."""

    def __init__(self, connections: Connections) -> None:
        self._c = connections

    async def connected(self, network: Any, conn: Any) -> None:
        # Quirk: a peer whose dials all failed (it was down) is refused by
        # new_stream for 60 s (the swarm's negative cache), even once it is
        # back and connected to us: a restarted node's blocks could not be
        # fetched for a minute.  A connection proves it reachable.
        unblock = getattr(network, "unblock_peer", None)
        if unblock is not None:
            unblock(conn.muxed_conn.peer_id)
        # Inbound: the peer dialled us, so a dial of ours to it under way is dropped (see meshd.p2p.peer_dials).
        inbound = getattr(conn.muxed_conn, "is_initiator", None) is False
        self._c.connected(conn.muxed_conn.peer_id.to_base58(), inbound=inbound)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._c.disconnected(str(conn.muxed_conn.peer_id))

    async def _ignored(self, network: Any, what: Any) -> None:
        pass

    opened_stream = closed_stream = listen = listen_close = _ignored


class Connections:
    """Connection counts per peer, their connect times, and the churn event.

    Args:
        counts: The transport's counters; ``connects`` and ``disconnects`` are counted there.
        on_inbound: Called with a peer's id when it connects to us, before it is counted.
    """

    def __init__(self, counts: MutableMapping[str, int], on_inbound: Callable[[str], None]) -> None:
        self._counts = counts
        self._on_inbound = on_inbound
        self._conns: dict[str, int] = defaultdict(int)
        #: Peer id -> when (wall clock) its first open connection was made.
        self.since: dict[str, float] = {}
        # Connection churn, for pollers that slow down when nothing changes.
        self._churn = trio.Event()
        self._churn_at = time.monotonic()

    def notifee(self) -> _Notifee:
        """The object to register with the swarm (``register_notifee``)."""
        return _Notifee(self)

    def connected(self, peer_id: str, *, inbound: bool = False) -> None:
        """A connection to ``peer_id`` opened (``inbound``: the peer dialled us)."""
        if inbound:
            self._on_inbound(peer_id)
        self._conns[peer_id] += 1
        if self._conns[peer_id] == 1:
            self.since[peer_id] = time.time()
            self._counts["connects"] += 1
            log.debug("p2p_peer_connected", peer_id=peer_id)
            self._churned()

    def disconnected(self, peer_id: str) -> None:
        """A connection to ``peer_id`` closed."""
        self._conns[peer_id] -= 1
        if self._conns[peer_id] <= 0:
            self._conns.pop(peer_id, None)
            self.since.pop(peer_id, None)
            self._counts["disconnects"] += 1
            log.debug("p2p_peer_disconnected", peer_id=peer_id)
            self._churned()

    def _churned(self) -> None:
        self._churn_at = time.monotonic()
        self.wake_pollers()

    def wake_pollers(self) -> None:
        """Wake whoever waits in :meth:`wait_churn` (a connection or subscription changed)."""
        self._churn.set()
        self._churn = trio.Event()

    def quiet_s(self) -> float:
        """Seconds since a peer last connected or disconnected (since start, before any)."""
        return time.monotonic() - self._churn_at

    async def wait_churn(self, timeout_s: float) -> bool:
        """Wait until :meth:`wake_pollers` runs, at most ``timeout_s``; True if it did.

        Cancellation changes nothing.
        """
        with trio.move_on_after(timeout_s):
            await self._churn.wait()
            return True
        return False
