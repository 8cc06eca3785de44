"""Per-peer rate limits for the mesh (gossip and block requests).

The bucket itself is pure and lives in :mod:`lattice.meshcore`, which admits
messages on the clock it is given; this subclass reads the monotonic clock
when none is passed, for callers outside the core.
"""

from __future__ import annotations

import time

from lattice.meshcore import TokenBucket as _PureBucket


class TokenBucket(_PureBucket):
    """One token bucket per peer: ``rate`` per second, bursts of twice that."""

    def allow(self, peer: str, now: float | None = None, cost: float = 1.0) -> bool:
        return super().allow(peer, time.monotonic() if now is None else now, cost)
