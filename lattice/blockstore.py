"""The block store interface and an in-memory store.

A block store maps a :class:`~lattice.cid.CID` to the bytes it names.  The
:class:`BlockStore` protocol is deliberately narrow: every method is something
an IPFS RPC node (``block/put``, ``block/get``, ``block/stat``, ``block/rm``,
``refs/local``) can also do, so a later IPFS-backed store implements it
without shims.

Invariants every implementation keeps:

* **Only verified bytes go in.**  ``put`` and ``put_many`` hash the bytes and
  raise :class:`~lattice.errors.BadBlock` when they do not match the CID, so a
  store never holds a block that a peer lied about.
* **Writes are idempotent.**  Putting a block twice is the same as once.
* **``put_many`` is all or nothing** where the backend can do it: if any block
  is rejected, none is stored.

:class:`MemoryBlockStore` keeps one dict entry per block and nothing else, so
a million small blocks cost the dict plus the bytes objects.  A crash loses
everything in it, by design: it backs tests, benchmarks and throwaway peers.
The on-disk store is :mod:`lattice.diskstore`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, runtime_checkable

from .cid import CID
from .errors import BadBlock, BlockNotFound, StoreError

__all__ = [
    "BlockStore",
    "BlockStoreStatistics",
    "MemoryBlockStore",
    "verify_blocks",
]


@dataclass(frozen=True, slots=True)
class BlockStoreStatistics:
    """A snapshot of a block store's counters since it was opened.

    Attributes:
        blocks: Blocks held now (exact, not an estimate).
        puts: Blocks newly stored by ``put``/``put_many``.
        duplicate_puts: Blocks offered that were already held (no-op writes).
        rejected_puts: Blocks refused because their bytes did not match the CID.
        hits: Blocks returned by ``get``/``get_many``.
        misses: Blocks asked for that were not held.
        deletes: Blocks removed by ``delete`` (absent ones are not counted).
        corrupt_reads: Stored blocks whose bytes failed re-verification on
            read (always 0 for stores that do not re-verify).
    """

    blocks: int = 0
    puts: int = 0
    duplicate_puts: int = 0
    rejected_puts: int = 0
    hits: int = 0
    misses: int = 0
    deletes: int = 0
    corrupt_reads: int = 0


@runtime_checkable
class BlockStore(Protocol):
    """Content-addressed storage of verified blocks.

    Implementations are safe to call from several threads (the daemon calls
    them through ``trio.to_thread.run_sync``).  A call that a cancelled trio
    task started still runs to completion in its thread, so each write is
    either fully applied or not at all, never half.
    """

    def put(self, cid: CID, data: bytes) -> None:
        """Store ``data`` under ``cid``; no-op if already held.

        Raises:
            BadBlock: ``data`` does not hash to ``cid``; nothing is stored.
            StoreError: the backend failed; nothing is stored.
        """
        ...

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Store every ``(cid, data)`` pair, atomically where the backend can.

        Raises:
            BadBlock: some block does not hash to its CID; none is stored.
            StoreError: the backend failed; none is stored.
        """
        ...

    def get(self, cid: CID) -> bytes:
        """The bytes stored under ``cid``.

        Raises:
            BlockNotFound: the block is not held (or, for stores that
                re-verify, its stored bytes are corrupt).
            StoreError: the backend failed.
        """
        ...

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """The held blocks among ``cids``; missing (or corrupt) ones are left out."""
        ...

    def has(self, cid: CID) -> bool:
        """True when the block is held.  Does not re-read or re-verify its bytes."""
        ...

    def cids(self) -> Iterator[CID]:
        """Every held CID, once each.  Blocks written during iteration may or may not appear."""
        ...

    def size(self) -> int:
        """Number of blocks held."""
        ...

    def delete(self, cid: CID) -> None:
        """Remove the block if held; no error if it is absent."""
        ...

    def close(self) -> None:
        """Release the backend.  Idempotent; later calls raise :class:`StoreError`."""
        ...

    def statistics(self) -> BlockStoreStatistics:
        """A frozen snapshot of the store's counters."""
        ...


def verify_blocks(blocks: Iterable[tuple[CID, bytes]]) -> list[tuple[CID, bytes]]:
    """Materialise ``blocks`` and check every one hashes to its CID.

    Shared by the stores so that ``put_many`` rejects a bad batch before it
    touches the backend (which is what makes it all-or-nothing).

    Raises:
        BadBlock: naming the first block whose bytes do not match.
    """
    batch = list(blocks)
    for cid, data in batch:
        if not cid.verify(data):
            raise BadBlock(f"block bytes do not hash to {cid}")
    return batch


def held_of(store: BlockStore, cids: list[CID]) -> set[CID]:
    """Which of ``cids`` ``store`` holds: in one call where the store can
    answer many (``has_many``: the disk and memory stores), else one by one."""
    if not cids:
        return set()
    many = getattr(store, "has_many", None)
    return set(many(cids)) if many is not None else {c for c in cids if store.has(c)}


class MemoryBlockStore:
    """A :class:`BlockStore` in a dict keyed by ``cid.raw``.

    Memory per block is one dict slot plus the two ``bytes`` objects (the
    CID's own ``raw`` is reused as the key, so no copy is made); CIDs are
    rebuilt only when :meth:`cids` or :meth:`get_many` hands them out.
    A crash loses all contents.
    """

    __slots__ = ("_blocks", "_lock", "_closed", "_counts")

    def __init__(self) -> None:
        self._blocks: dict[bytes, bytes] = {}
        # One lock makes put_many atomic against concurrent readers and keeps
        # the counters exact; uncontended it costs well under a microsecond.
        self._lock = threading.Lock()
        self._closed = False
        # puts, duplicate_puts, rejected_puts, hits, misses, deletes
        self._counts = [0, 0, 0, 0, 0, 0]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("block store is closed")

    def put(self, cid: CID, data: bytes) -> None:
        """See :meth:`BlockStore.put`."""
        if not cid.verify(data):
            with self._lock:
                self._counts[2] += 1
            raise BadBlock(f"block bytes do not hash to {cid}")
        with self._lock:
            self._check_open()
            if cid.raw in self._blocks:
                self._counts[1] += 1
            else:
                self._blocks[cid.raw] = bytes(data)
                self._counts[0] += 1

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """See :meth:`BlockStore.put_many`; atomic under the store's lock."""
        try:
            batch = verify_blocks(blocks)
        except BadBlock:
            with self._lock:
                self._counts[2] += 1
            raise
        with self._lock:
            self._check_open()
            store = self._blocks
            for cid, data in batch:
                if cid.raw in store:
                    self._counts[1] += 1
                else:
                    store[cid.raw] = bytes(data)
                    self._counts[0] += 1

    def get(self, cid: CID) -> bytes:
        """See :meth:`BlockStore.get`."""
        with self._lock:
            self._check_open()
            data = self._blocks.get(cid.raw)
            if data is None:
                self._counts[4] += 1
                raise BlockNotFound(cid)
            self._counts[3] += 1
            return data

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """See :meth:`BlockStore.get_many`."""
        out: dict[CID, bytes] = {}
        with self._lock:
            self._check_open()
            store = self._blocks
            for cid in cids:
                data = store.get(cid.raw)
                if data is not None:
                    out[cid] = data
                else:
                    self._counts[4] += 1
            self._counts[3] += len(out)
        return out

    def has(self, cid: CID) -> bool:
        """See :meth:`BlockStore.has`."""
        self._check_open()
        return cid.raw in self._blocks

    def has_many(self, cids: Iterable[CID]) -> set[CID]:
        """The held ones among ``cids`` (``DiskBlockStore.has_many``)."""
        self._check_open()
        return {c for c in cids if c.raw in self._blocks}

    def cids(self) -> Iterator[CID]:
        """See :meth:`BlockStore.cids`; iterates a snapshot of the keys."""
        with self._lock:
            self._check_open()
            # A snapshot (one pointer per block) so that writers may proceed
            # while the caller iterates.
            keys = tuple(self._blocks)
        return (CID(raw) for raw in keys)

    def size(self) -> int:
        """See :meth:`BlockStore.size`."""
        self._check_open()
        return len(self._blocks)

    def used_bytes(self) -> int:
        """Bytes of block data held (``DiskBlockStore.used_bytes``); O(blocks)."""
        with self._lock:
            self._check_open()
            return sum(map(len, self._blocks.values()))

    def usage(self) -> Iterator[tuple[CID, int, int]]:
        """``(cid, size, order)`` per block, ``order`` the write order (``DiskBlockStore.usage``)."""
        with self._lock:
            self._check_open()
            rows = [(raw, len(data)) for raw, data in self._blocks.items()]
        return ((CID(raw), size, i) for i, (raw, size) in enumerate(rows))

    def delete_many(self, cids: Iterable[CID]) -> int:
        """Remove the held ones among ``cids``; how many went (``DiskBlockStore.delete_many``)."""
        removed = 0
        with self._lock:
            self._check_open()
            for cid in cids:
                if self._blocks.pop(cid.raw, None) is not None:
                    removed += 1
            self._counts[5] += removed
        return removed

    def delete(self, cid: CID) -> None:
        """See :meth:`BlockStore.delete`."""
        with self._lock:
            self._check_open()
            if self._blocks.pop(cid.raw, None) is not None:
                self._counts[5] += 1

    def close(self) -> None:
        """Drop the contents and refuse further calls.  Idempotent."""
        with self._lock:
            self._closed = True
            self._blocks = {}

    def statistics(self) -> BlockStoreStatistics:
        """See :meth:`BlockStore.statistics`."""
        with self._lock:
            c = self._counts
            return BlockStoreStatistics(
                blocks=len(self._blocks),
                puts=c[0],
                duplicate_puts=c[1],
                rejected_puts=c[2],
                hits=c[3],
                misses=c[4],
                deletes=c[5],
            )

    def __enter__(self) -> "MemoryBlockStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
