"""Our dials of each peer: one at a time, and dropped when the peer dials us first.

py-libp2p keeps a second connection when two dials of the same pair cross
(ours to a peer we are already dialling, or ours and the peer's to us at
once), then trims one, each end its own choice, which resets the peer's pubsub
state on both ends.  :class:`PeerDials` holds the per-peer locks and the
cancel scopes of the dials under way that prevent that;
:class:`~meshd.p2p.transport.Transport` dials through it, and its
:class:`~meshd.p2p.connections.Connections` cancels a peer's dials when the
peer connects to us.  How one address or several are dialled is
:mod:`meshd.p2p.dialing`'s.  Kept apart from the transport because it is one
quirk's workaround with its own state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .dialing import dial_exact
from .wire import PeerUnreachable

__all__ = ["PeerDials"]


class PeerDials:
    """The dials of one transport under way, per peer.

    Args:
        local_id: Our libp2p peer id (``ID``).
        timeout_s: How long one dial may take.
        counts: The transport's counters; ``dials_superseded`` is counted there.
    """

    def __init__(self, local_id: Any, timeout_s: float, counts: MutableMapping[str, int]) -> None:
        self._id = local_id
        self._timeout_s = timeout_s
        self._counts = counts
        self._locks: dict[str, trio.Lock] = {}  # peer id -> held while we dial it
        self._scopes: dict[str, set[trio.CancelScope]] = {}  # peer id -> our dials under way

    def cancel(self, peer_id: str) -> None:
        """``peer_id`` connected to us: drop our dials to it under way (see :meth:`dial_exact`)."""
        for scope in self._scopes.get(peer_id, ()):
            scope.cancel()

    async def dial_exact(self, host: Any, multiaddr_: str) -> str:
        """Dial one address; dropped when the peer connects to us meanwhile (then we are connected).

        Quirk: two peers that dial each other at once keep two connections,
        and py-libp2p later trims one (each end its own choice), which resets
        the peer's pubsub state (subscriptions, mesh) on both ends.  That is
        what a restart did every time: the restarted node dials its known
        peers as its listener opens, while they redial it; their dials reach
        a process still busy starting and complete after its own.  So an
        inbound connection from a peer cancels our dial to it that is still
        being set up (the handshake is then abandoned on both ends).  Measured
        on 4 local nodes over 6 restarts of one: its 3 peers saw a second
        connection to it 22 times and a third 3 times; with this and
        :meth:`one_dial`, a second 11 times and a third never.  Two
        dials that each see the other's connection first both give up; the
        mesh's redial then connects (rare: both handshakes must end at once).
        """
        peer = multiaddr_.rsplit("/p2p/", 1)[-1]
        # The swarm's own view: our notifee may not have heard of a
        # connection that just closed, and a dead peer would pass as connected.
        connected = {p.to_base58() for p in host.get_connected_peers()}
        with trio.CancelScope() as scope:
            scopes = self._scopes.setdefault(peer, set())
            scopes.add(scope)
            try:
                return await dial_exact(host, multiaddr_, self._id, connected, self._timeout_s)
            finally:
                scopes.discard(scope)
                if not scopes and self._scopes.get(peer) is scopes:
                    del self._scopes[peer]
        if peer in {p.to_base58() for p in host.get_connected_peers()}:
            self._counts["dials_superseded"] += 1
            return peer
        raise PeerUnreachable(f"dial to {multiaddr_} dropped: the peer connected to us, and went")

    @asynccontextmanager
    async def one_dial(self, peer_id: str) -> AsyncIterator[None]:
        """One dial of ``peer_id`` at a time; a second waits, then finds it connected.

        Quirk: py-libp2p opens a second connection to a peer it is already
        dialling, and with ``max_connections_per_peer=1`` trims one after its
        grace period; each end may trim a different one, and pubsub drops the
        peer with the stream it lost.  A restarted node dialled a peer up to
        three times at once (bootstrap, ``peers.json``, presence).
        """
        lock = self._locks.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            stats = lock.statistics()
            if not stats.locked and not stats.tasks_waiting and self._locks.get(peer_id) is lock:
                del self._locks[peer_id]
