"""Per-connection budgets: what one connection may make this node read.

A gossip message's origin is whatever it claims (libp2p does not sign
meshd's gossip), so rate limits keyed on it are forgeable: a peer can spread
its flood over as many made-up origins as it likes.  The *connection* a
message arrived on is authenticated by Noise, so the limits here are keyed
on the peer id of the connection (for gossip: the forwarder), and counted
both in messages and in bytes:

* a gossip message larger than ``max_gossip_bytes``, or a request larger
  than ``max_request_bytes``, is refused before it is decoded (a request's
  payload is not even read: the frame header says its length);
* each connection has a token bucket of messages and one of bytes for
  gossip, and the same pair for requests (bursts of twice the rate).

Why these caps: an honest announcement, query or presence is a few KiB and
an honest want names at most a few hundred CIDs (~40 bytes each), while the
decoder's cost grows with the number of CBOR items, not the bytes (a 4.6 MiB
message of tiny maps took 2.6 s to decode, inline).  Capping what may be
decoded caps that cost; decoding itself runs in the mesh's worker thread
(see :mod:`meshd.p2p.mesh`), off the event loop.

Refusals are kept as reasons for the mesh pump to count
(:class:`meshd.p2p.mesh.Refusing`); nothing here decodes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lattice.admission import TokenBucket

__all__ = ["BudgetOptions", "ConnectionBudgets"]


@dataclass(frozen=True)
class BudgetOptions:
    """What one connection may send this node.

    Attributes:
        max_gossip_bytes: Largest gossip message accepted (256 KiB).
        max_request_bytes: Largest request accepted (256 KiB; a want of 1,024
            CIDs is ~45 KiB).
        gossip_msgs_per_s: Gossip messages per second per connection (500).
        gossip_bytes_per_s: Gossip bytes per second per connection (2 MiB).
        requests_per_s: Requests per second per connection (200).
        request_bytes_per_s: Request bytes per second per connection (2 MiB).
    """

    max_gossip_bytes: int = 256 * 1024
    max_request_bytes: int = 256 * 1024
    gossip_msgs_per_s: float = 500.0
    gossip_bytes_per_s: float = 2 * 1024 * 1024
    requests_per_s: float = 200.0
    request_bytes_per_s: float = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_gossip_bytes", "max_request_bytes", "gossip_msgs_per_s", "gossip_bytes_per_s",
                     "requests_per_s", "request_bytes_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        # A message under the size cap must fit in a full byte bucket (burst = 2x rate).
        if 2 * self.gossip_bytes_per_s < self.max_gossip_bytes or \
                2 * self.request_bytes_per_s < self.max_request_bytes:
            raise ValueError("a byte rate must allow at least one largest message per burst")


class ConnectionBudgets:
    """The buckets of every connection, and the reasons of what they refused.

    Called on the event loop only (libp2p's tasks); :meth:`take_rejections`
    may be called from any thread.
    """

    def __init__(self, options: BudgetOptions | None = None) -> None:
        self.options = o = options or BudgetOptions()
        self._gossip = TokenBucket(o.gossip_msgs_per_s)
        self._gossip_bytes = TokenBucket(o.gossip_bytes_per_s)
        self._requests = TokenBucket(o.requests_per_s)
        self._request_bytes = TokenBucket(o.request_bytes_per_s)
        self._refused: deque[str] = deque()

    def gossip(self, conn_peer: str, size: int) -> bool:
        """Whether to take a gossip message of ``size`` bytes forwarded by ``conn_peer``."""
        if size > self.options.max_gossip_bytes:
            return self._refuse("oversize_gossip")
        now = time.monotonic()
        if not self._gossip.allow(conn_peer, now) or not self._gossip_bytes.allow(conn_peer, now, size):
            return self._refuse("conn_gossip_limited")
        return True

    def gossip_validator(self, me: Any) -> Callable[[Any, Any], bool]:
        """py-libp2p's synchronous topic validator over :meth:`gossip`.

        It runs before a message is marked seen, delivered or relayed, so a
        refused message goes no further; our own publications (forwarder
        ``me``, a libp2p ``ID``) pass.
        """
        def validate(forwarder: Any, msg: Any) -> bool:
            return forwarder == me or self.gossip(forwarder.to_base58(), len(msg.data))

        return validate

    def request(self, conn_peer: str, size: int) -> bool:
        """Whether to serve a request of ``size`` bytes from ``conn_peer`` (already read)."""
        now = time.monotonic()
        if not self._requests.allow(conn_peer, now) or not self._request_bytes.allow(conn_peer, now, size):
            return self._refuse("conn_requests_limited")
        return True

    def refuse(self, why: str) -> None:
        """Count a refusal decided elsewhere (an oversize request frame)."""
        self._refused.append(why)

    def _refuse(self, why: str) -> bool:
        self._refused.append(why)
        return False

    def take_rejections(self) -> list[str]:
        """The reasons of what was refused since the last call (oldest first); any thread."""
        out: list[str] = []
        while self._refused:
            out.append(self._refused.popleft())
        return out
