"""Per-peer rate limits for the mesh (gossip and block requests).

Hand-written: a token bucket is a dozen lines, and the mesh needs nothing a
library would add (no shared state, no async waits: excess is dropped).
"""

from __future__ import annotations

import time


class TokenBucket:
    """One token bucket per peer: ``rate`` per second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, 2 * rate
        self._state: dict[str, tuple[float, float]] = {}

    def allow(self, peer: str) -> bool:
        now = time.monotonic()
        tokens, last = self._state.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._state[peer] = (tokens, now)
            return False
        self._state[peer] = (tokens - 1.0, now)
        return True
