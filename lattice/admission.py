"""Admission: what the mesh core lets peers make this node spend.

* :class:`TokenBucket`: gossip and block requests per peer, on the caller's
  clock; excess is dropped and counted (``rate_limited``), never queued.
* :class:`FollowQuota`: objects followed because a peer announced them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import BadInput

__all__ = ["FollowQuota", "TokenBucket"]


class FollowQuota:
    """Objects this node follows because peers announced them.

    Following an object costs a heads row on disk, a syncer and its fetches,
    so an announcement is a reason to follow only when it is well formed and
    signed, and its author has not yet made this node follow
    ``per_author`` objects; all authors together make it follow at most
    ``max_total``.  Objects the node follows on its own (its roles, the API)
    are not counted.

    Args:
        per_author: Most objects one author's announcements may add.
        max_total: Most objects added this way in all.
        decode: Decodes and verifies an announcement (``lattice.hpcp``),
            raising ``BadInput``; returns the message.
    """

    def __init__(self, per_author: int, max_total: int, decode: Callable[[bytes], dict[str, Any]]) -> None:
        self.per_author, self.max_total = per_author, max_total
        self._decode = decode
        self._by_author: dict[bytes, int] = {}
        self._total = 0

    def admit_untrusted(self, data: bytes) -> str | None:
        """Why announcement ``data`` gives no reason to follow its object
        (``follow_unsigned``, ``follow_quota``, ``follow_cap``), or None:
        follow it, charged to its author."""
        try:
            author = self._decode(data)["a"]
        except BadInput:
            return "follow_unsigned"  # malformed or forged: never a reason
        if self._by_author.get(author, 0) >= self.per_author:
            return "follow_quota"
        if self._total >= self.max_total:
            return "follow_cap"
        self._by_author[author] = self._by_author.get(author, 0) + 1
        self._total += 1
        return None


class TokenBucket:
    """One token bucket per peer: ``rate`` per second, bursts of twice that.

    Hand-written: the mesh needs nothing a library would add (no shared
    state, no async waits: excess is dropped).  The table holds at most
    ``max_entries`` peers: past that, buckets that have refilled (their peer
    has been quiet) are dropped, since a full bucket is what a new entry
    starts with anyway; if none has, the least recently used are.
    """

    def __init__(self, rate: float, *, max_entries: int = 65_536) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.rate, self.burst = rate, 2 * rate
        self.max_entries = max_entries
        self._state: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens (1 per message; a byte bucket takes a message's length)."""
        tokens, last = self._state.pop(peer, (self.burst, now))  # re-inserted last: LRU order
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if len(self._state) >= self.max_entries:
            self._evict(now)
        if tokens < cost:
            self._state[peer] = (tokens, now)
            return False
        self._state[peer] = (tokens - cost, now)
        return True

    def _evict(self, now: float) -> None:
        full = [p for p, (t, last) in self._state.items() if t + max(0.0, now - last) * self.rate >= self.burst]
        for p in full:
            del self._state[p]
        excess = len(self._state) - (self.max_entries * 9) // 10
        for p in list(self._state)[:max(0, excess)]:  # oldest first (dicts keep insertion order)
            del self._state[p]
