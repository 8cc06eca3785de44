"""Options and records of the libp2p transport (re-exported by :mod:`meshd.p2p`).

Kept free of py-libp2p imports so configuration code can build and validate
:class:`P2POptions` without loading the network stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import multiaddr

from .addresses import parse_filter
from .budgets import BudgetOptions


@dataclass(frozen=True)
class P2POptions:
    """Options of the libp2p transport; validated by :meth:`validate`.

    Attributes:
        listen: Multiaddrs to listen on; ``tcp/0`` picks a free port.
        bootstrap: Peers to dial at start and to redial when they drop, as
            ``/ip4/…/tcp/…/p2p/<peer id>``.
        topic: The gossipsub topic of this mesh.
        mdns: Discover peers by mDNS (off by default: it multicasts).
        mdns_interfaces: IPv4 addresses of the interfaces mDNS may use;
            required when ``mdns`` is on, so it never talks on every interface.
        heartbeat_s: Gossipsub heartbeat (mesh repair, gossip emission).
        request_timeout_s: Default timeout of :meth:`Transport.request`, and how
            long :meth:`Transport.broadcast` waits on a stalled peer.
        max_message_bytes: Largest request/response payload accepted or sent.
        max_concurrent_requests: Requests served at once per peer; more wait.
        reconnect_s: Interval between redials of disconnected bootstrap peers.
        receive_buffer: Gossip messages buffered for :meth:`Transport.receive`;
            beyond it messages are dropped and counted.
        announce: Multiaddrs offered to peers instead of the listen and
            observed ones (Kubo's ``Addresses.Announce``); default none.
        no_announce: Multiaddrs, prefixes or ``/ip4|ip6/<net>/ipcidr/<bits>``
            ranges never offered (Kubo's ``Addresses.NoAnnounce``).
        budgets: What one connection may send us: size caps and rate limits
            in messages and bytes (:mod:`meshd.p2p.budgets`).
    """

    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    topic: str = "meshd/default/hpcp/2"
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    heartbeat_s: float = 1.0
    request_timeout_s: float = 10.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_concurrent_requests: int = 16
    reconnect_s: float = 2.0
    receive_buffer: int = 10_000
    announce: tuple[str, ...] = ()
    no_announce: tuple[str, ...] = ()
    budgets: BudgetOptions = BudgetOptions()

    def validate(self) -> None:
        """Check every field once.

        Raises:
            ValueError: a field is out of range or a multiaddr is malformed.
        """
        if not self.listen:
            raise ValueError("listen needs at least one multiaddr")
        for addr in self.listen:
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:  # multiaddr raises its own parse errors
                raise ValueError(f"malformed listen multiaddr {addr!r}") from exc
        for addr in self.bootstrap:
            try:
                multiaddr.Multiaddr(addr).value_for_protocol("p2p")
            except Exception as exc:  # multiaddr raises its own lookup errors
                raise ValueError(f"bootstrap address {addr!r} needs a /p2p/<peer id> part") from exc
        for addr in self.announce:
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:  # multiaddr raises its own parse errors
                raise ValueError(f"malformed announce multiaddr {addr!r}") from exc
        for addr in self.no_announce:
            try:
                multiaddr.Multiaddr(addr)
                parse_filter(addr)
            except Exception as exc:  # multiaddr and ipaddress raise their own errors
                raise ValueError(f"malformed no_announce multiaddr {addr!r}") from exc
        if not self.topic:
            raise ValueError("topic must not be empty")
        if self.mdns and not self.mdns_interfaces:
            raise ValueError("mdns needs mdns_interfaces (the interface addresses it may use)")
        for name in ("heartbeat_s", "request_timeout_s", "reconnect_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if self.max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be positive")
        if self.receive_buffer < 1:
            raise ValueError("receive_buffer must be positive")


@dataclass(frozen=True)
class PeerInfo:
    """A connected peer.

    Attributes:
        peer_id: Its libp2p peer id.
        addrs: Multiaddrs we know for it.
        connected_since: ``time.time()`` when its current connection opened.
    """

    peer_id: str
    addrs: tuple[str, ...]
    connected_since: float


@dataclass(frozen=True)
class TransportStatistics:
    """Counters of one :class:`Transport` since it started serving."""

    peers: int
    broadcasts_sent: int
    broadcast_bytes_sent: int
    broadcast_waits: int
    broadcast_overflows: int
    messages_received: int
    message_bytes_received: int
    messages_dropped: int
    requests_sent: int
    requests_failed: int
    requests_served: int
    requests_broken: int
    handler_errors: int
    bad_frames: int
    requests_refused: int
    connects: int
    disconnects: int
    #: Our dials dropped because the peer connected to us first (no second connection).
    dials_superseded: int
    #: Connections we closed because their peer stayed stalled for 3 x request_timeout_s (wedged).
    wedged_resets: int = 0
