"""When each block was last used: the storage budget's LRU clock, kept in memory.

:class:`UsageTracking` wraps the node's block store and notes, for every
block read or written through it, the monotonic time of that use.  The note
is one dict assignment per block in the caller's thread; nothing is written
to disk on the read path (a write per read would double the cost of serving
a block).  Everything else passes through to the wrapped store unchanged.

What a restart loses, and why that is fine: the notes live in memory, so
after a restart the collector (:mod:`meshd.store.collector`) orders blocks
not used since the start by the order they were written (the store's row
order), all of them before any block used since.  A block the node needs is
read again soon after a start and so moves to the young end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from lattice.cid import CID

__all__ = ["UsageTracking"]


class UsageTracking:
    """A block store that remembers when each block was last used.

    Args:
        store: The store to wrap (disk, memory or IPFS).
        clock: The time source (default :func:`time.monotonic`).
    """

    def __init__(self, store: Any, clock: Any = time.monotonic) -> None:
        self.inner = store
        self._clock = clock
        # cid.raw -> last use; dict item assignment is atomic under the GIL, so
        # the worker threads that call the store need no lock.
        self._last: dict[bytes, float] = {}

    def __getattr__(self, name: str) -> Any:
        # Only called for names not defined here: the wrapped store's own
        # methods (pins, statistics, verify, ...) stay reachable.
        return getattr(self.inner, name)

    # -- the used ones -----------------------------------------------------------

    def _touch(self, cids: Iterable[CID]) -> None:
        now = self._clock()
        last = self._last
        for c in cids:
            last[c.raw] = now

    def get(self, cid: CID) -> bytes:
        data = self.inner.get(cid)
        self._last[cid.raw] = self._clock()
        return data

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        out = self.inner.get_many(cids)
        self._touch(out)
        return out

    def put(self, cid: CID, data: bytes) -> None:
        self.inner.put(cid, data)
        self._last[cid.raw] = self._clock()

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        batch = list(blocks)
        self.inner.put_many(batch)
        self._touch(c for c, _ in batch)

    def delete(self, cid: CID) -> None:
        self.inner.delete(cid)
        self._last.pop(cid.raw, None)

    def delete_many(self, cids: Iterable[CID]) -> int:
        batch = list(cids)
        removed = self.inner.delete_many(batch)
        for c in batch:
            self._last.pop(c.raw, None)
        return removed

    # -- the clock -----------------------------------------------------------------

    def last_use(self, cid: CID) -> float | None:
        """When ``cid`` was last used through this wrapper (None: not since it was made)."""
        return self._last.get(cid.raw)

    def now(self) -> float:
        """The wrapper's clock now."""
        return self._clock()

    def uses(self) -> Iterator[tuple[bytes, float]]:
        """A snapshot of ``(cid.raw, last use)``."""
        return iter(list(self._last.items()))

    def tracked(self) -> int:
        """Blocks with a noted use (the memory the clock costs)."""
        return len(self._last)
