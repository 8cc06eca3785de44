"""Per-peer admission: a token bucket on the caller's clock.

The mesh core admits gossip and block requests per peer through one bucket
each; excess is dropped and counted (``rate_limited``), never queued.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """One token bucket per peer: ``rate`` per second, bursts of twice that.

    Hand-written: the mesh needs nothing a library would add (no shared
    state, no async waits: excess is dropped).
    """

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, 2 * rate
        self._state: dict[str, tuple[float, float]] = {}

    def allow(self, peer: str, now: float) -> bool:
        tokens, last = self._state.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens < 1.0:
            self._state[peer] = (tokens, now)
            return False
        self._state[peer] = (tokens - 1.0, now)
        return True
