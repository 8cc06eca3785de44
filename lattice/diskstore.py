"""The embedded on-disk block store: one SQLite file in WAL mode.

Why SQLite (stdlib ``sqlite3``) rather than files-per-block, LMDB or RocksDB:

* **Atomic, crash-safe commits for free.**  A batch of blocks and the block
  counter go into one transaction; SQLite's write-ahead log guarantees that a
  crash leaves either the whole transaction or none of it.  Files-per-block
  would need write-temp/fsync/rename/fsync-dir per block and still could not
  make ``put_many`` atomic.
* **Millions of rows in one file.**  One B-tree lookup per ``get`` and no
  inode per block; a million small blocks fit in a file a little larger than
  their bytes.
* **No new dependency and no C extension to build** on the peers we target;
  LMDB/RocksDB bindings would be one more wheel that may not exist for a
  volunteer's platform.  WAL mode lets readers proceed while a writer commits.

The file's layout (schema version 1), its options and how it is opened are in
:mod:`lattice.diskstore_file`.

The row count lives in ``meta`` and is updated in the same transaction as the
rows, so :meth:`DiskBlockStore.size` is O(1) and exact after any crash.  So
is the byte total (the storage budget's measure,
:meth:`DiskBlockStore.used_bytes`): each write adds the bytes of the rows it
really inserted (a batch with a block already held finds which, in the same
transaction), and each delete takes off what it removed.  (SQLite triggers
would keep it with no code, but cost a third of ``put_many``'s throughput on
small blocks, measured.)  The ``bytes`` row is additive to schema 1: a store
written before it gets it (one scan) the first time it is opened; a store
written since by an older meshd, which does not move it, is corrected by
:meth:`DiskBlockStore.verify`.

**What a crash leaves behind.**  Every write is one SQLite transaction
(``BEGIN IMMEDIATE`` … ``COMMIT``).  A crash or ``SIGKILL`` at any point
leaves the file plus a ``-wal`` (and ``-shm``) file; the next open replays
committed transactions from the log and discards the uncommitted tail, so a
batch is either wholly present or wholly absent, and a ``put`` that returned
is present.  With ``synchronous="full"`` (the default) that holds after a
power loss too; with ``"normal"`` a power loss (not a process crash) may roll
back the last few commits, but never half of one and never corrupts the file.
Bit rot below SQLite is caught by re-hashing on read (``verify_on_get``) and
by :meth:`DiskBlockStore.verify`.  Nothing needs manual cleanup.

Threads: one connection guarded by a lock (``check_same_thread=False``), so
the daemon may call the store from ``trio.to_thread.run_sync`` workers.
Hashing runs outside the lock.  A trio task cancelled while its thread is in a
call does not interrupt it: the call finishes (or rolls back) on its own.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from typing import Iterable, Iterator

from .blockstore import BlockStoreStatistics, verify_blocks
from .cid import CID
from .diskstore_file import DiskStoreOptions, connect
from .errors import BadBlock, BlockNotFound, CorruptBlock, StoreError

__all__ = ["DiskBlockStore", "DiskStoreOptions", "VerifyReport"]

# Rows fetched per lock hold when scanning (cids(), verify()); small enough
# that a scan never stalls concurrent puts for long.
_SCAN_CHUNK = 1024
# Host parameters per ``IN (...)`` query in get_many.
_IN_CHUNK = 256

@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :meth:`DiskBlockStore.verify`.

    Attributes:
        checked: Rows re-hashed.
        corrupt: CIDs whose stored bytes do not hash to them, in CID order.
        malformed_keys: Rows whose key is not a valid binary CID at all.
        deleted: Corrupt or malformed rows removed (only with ``delete_corrupt``).
        blocks: Blocks held after the pass (the stored counter is re-synced
            to this).
    """

    checked: int
    corrupt: tuple[CID, ...] = field(default=())
    malformed_keys: int = 0
    deleted: int = 0
    blocks: int = 0

    @property
    def ok(self) -> bool:
        """True when no corrupt or malformed row was found."""
        return not self.corrupt and not self.malformed_keys


def _is_valid_key(raw: object) -> bool:
    # Same checks as CID.from_bytes_untrusted, without building an exception
    # for every row of a multi-million-row scan.
    return (
        isinstance(raw, bytes)
        and len(raw) == 36
        and raw[0] == 0x01
        and raw[1] in (0x55, 0x70, 0x71)
        and raw[2] == 0x12
        and raw[3] == 32
    )


class DiskBlockStore:
    """A :class:`~lattice.blockstore.BlockStore` in one SQLite file.

    Open with :meth:`open` (the constructor does no I/O) and close with
    :meth:`close` or a ``with`` block.  See the module docstring for crash
    behaviour.
    """

    def __init__(self, path: str | PathLike[str], options: DiskStoreOptions | None = None) -> None:
        self._path = str(path)
        self._options = options if options is not None else DiskStoreOptions()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # puts, duplicate_puts, rejected_puts, hits, misses, deletes, corrupt_reads
        self._counts = [0, 0, 0, 0, 0, 0, 0]

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | PathLike[str], options: DiskStoreOptions | None = None
    ) -> "DiskBlockStore":
        """Open (creating if needed) the store at ``path``.

        The parent directory must exist.  Opening replays a log left by a
        crash, so it may take a moment after an unclean shutdown.

        Raises:
            StoreError: the file cannot be opened, is not a SQLite database,
                or belongs to something other than a meshd block store.
        """
        store = cls(path, options)
        store._connect()
        return store

    def _connect(self) -> None:
        self._conn = connect(self._path, self._options)

    def close(self) -> None:
        """Close the file.  Idempotent; later calls raise :class:`StoreError`.

        A clean close checkpoints the log into the main file and removes the
        ``-wal`` file; skipping it (a crash) is safe, see the module doc.
        """
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute("PRAGMA optimize")
                conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"closing block store {self._path!r}: {exc}") from exc

    def __enter__(self) -> "DiskBlockStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    @property
    def options(self) -> DiskStoreOptions:
        """The options this store was opened with."""
        return self._options

    # -- internals ---------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        # Caller holds self._lock.
        if self._conn is None:
            raise StoreError("block store is closed")
        return self._conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StoreError(f"block store read failed: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed whole or rolled back."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # Also on KeyboardInterrupt: never leave the shared connection
                # inside an open transaction.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error below is the one to report
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"block store write failed: {exc}") from exc
                raise

    @staticmethod
    def _add_to_counter(conn: sqlite3.Connection, delta: int, nbytes: int = 0) -> None:
        if delta or nbytes:
            conn.execute("UPDATE meta SET value = value + CASE key WHEN 'blocks' THEN ? ELSE ? END"
                         " WHERE key IN ('blocks', 'bytes')", (delta, nbytes))

    # -- writes --------------------------------------------------------------

    def put(self, cid: CID, data: bytes) -> None:
        """Store one verified block in its own transaction.

        Raises:
            BadBlock: ``data`` does not hash to ``cid``; nothing is stored.
            StoreError: SQLite failed; nothing is stored.
        """
        if not cid.verify(data):
            with self._lock:
                self._counts[2] += 1
            raise BadBlock(f"block bytes do not hash to {cid}")
        with self._writing() as conn:
            added = conn.execute(
                "INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", (cid.raw, data)
            ).rowcount
            self._add_to_counter(conn, added, added * len(data))
        with self._lock:
            self._counts[0] += added
            self._counts[1] += 1 - added

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Store all blocks in one transaction, after verifying every one.

        Raises:
            BadBlock: some block does not hash to its CID; none is stored.
            StoreError: SQLite failed; none is stored.
        """
        try:
            batch = verify_blocks(blocks)
        except BadBlock:
            with self._lock:
                self._counts[2] += 1
            raise
        if not batch:
            return
        # Sorted by key so the inserts walk the CID index in order: each
        # index page is visited once per batch, while it is hot in the cache.
        rows = sorted((cid.raw, data) for cid, data in batch)
        with self._writing() as conn:
            # The common batch holds only new blocks: insert them all and count
            # their bytes.  A batch with a block already held (or one twice)
            # fails on the key and is redone with the held ones left out.
            conn.execute("SAVEPOINT fresh")
            try:
                conn.executemany("INSERT INTO blocks (cid, data) VALUES (?, ?)", rows)
                fresh = rows
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO fresh")
                held = self._held_keys(conn, [raw for raw, _ in rows])
                fresh = list({raw: (raw, data) for raw, data in rows if raw not in held}.values())
                conn.executemany("INSERT INTO blocks (cid, data) VALUES (?, ?)", fresh)
            conn.execute("RELEASE fresh")
            added = len(fresh)
            self._add_to_counter(conn, added, sum(len(data) for _, data in fresh))
        with self._lock:
            self._counts[0] += added
            self._counts[1] += len(rows) - added

    def delete(self, cid: CID) -> None:
        """Remove the block if held; no error if absent.

        Raises:
            StoreError: SQLite failed; the block is still held.
        """
        with self._writing() as conn:
            gone = conn.execute("DELETE FROM blocks WHERE cid = ? RETURNING length(data)", (cid.raw,)).fetchall()
            removed = len(gone)
            self._add_to_counter(conn, -removed, -sum(n for (n,) in gone))
        with self._lock:
            self._counts[5] += removed

    # -- reads ---------------------------------------------------------------

    def _corrupt(self, cid: CID) -> CorruptBlock:
        with self._lock:
            self._counts[6] += 1
            self._counts[3] -= 1
        return CorruptBlock(cid)

    def get(self, cid: CID) -> bytes:
        """The bytes of ``cid``.

        Raises:
            BlockNotFound: not held.
            CorruptBlock: held, but the bytes fail re-hashing (only with
                ``verify_on_get``); a subclass of :class:`BlockNotFound`, so
                callers that refetch missing blocks also heal corrupt ones
                after :meth:`verify` (``delete_corrupt=True``) or
                :meth:`delete` removes the bad row.
            StoreError: SQLite failed.
        """
        with self._reading() as conn:
            row = conn.execute("SELECT data FROM blocks WHERE cid = ?", (cid.raw,)).fetchone()
            if row is None:
                self._counts[4] += 1
                raise BlockNotFound(cid)
            self._counts[3] += 1
        data = row[0]
        if self._options.verify_on_get and not (isinstance(data, bytes) and cid.verify(data)):
            raise self._corrupt(cid)
        return data

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """The held blocks among ``cids``.

        Missing blocks are left out, and so are corrupt ones when
        ``verify_on_get`` is on (they count in ``corrupt_reads``).

        Raises:
            StoreError: SQLite failed.
        """
        wanted = {cid.raw: cid for cid in cids}
        keys = list(wanted)
        found: list[tuple[bytes, bytes]] = []
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._reading() as conn:
                found.extend(
                    conn.execute(f"SELECT cid, data FROM blocks WHERE cid IN ({marks})", chunk)
                )
        out: dict[CID, bytes] = {}
        corrupt = 0
        verify = self._options.verify_on_get
        for raw, data in found:
            cid = wanted[raw]
            if verify and not (isinstance(data, bytes) and cid.verify(data)):
                corrupt += 1
                continue
            out[cid] = data
        with self._lock:
            self._counts[3] += len(out)
            self._counts[4] += len(wanted) - len(found)
            self._counts[6] += corrupt
        return out

    @staticmethod
    def _held_keys(conn: sqlite3.Connection, keys: list[bytes]) -> set[bytes]:
        held: set[bytes] = set()
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            held.update(r[0] for r in conn.execute(f"SELECT cid FROM blocks WHERE cid IN ({marks})", chunk))
        return held

    def delete_many(self, cids: Iterable[CID]) -> int:
        """Remove the held ones among ``cids`` in one transaction; how many went.

        Raises:
            StoreError: SQLite failed; every block is still held.
        """
        rows = [(c.raw,) for c in cids]
        if not rows:
            return 0
        removed = nbytes = 0
        with self._writing() as conn:
            for row in rows:
                for (n,) in conn.execute("DELETE FROM blocks WHERE cid = ? RETURNING length(data)", row):
                    removed += 1
                    nbytes += n
            self._add_to_counter(conn, -removed, -nbytes)
        with self._lock:
            self._counts[5] += removed
        return removed

    def used_bytes(self) -> int:
        """Bytes of block data held (O(1): a counter the triggers keep, see the module doc)."""
        with self._reading() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'bytes'").fetchone()[0]

    def usage(self) -> Iterator[tuple[CID, int, int]]:
        """Every held block as ``(cid, size, order)``; ``order`` grows with the time it was written.

        Reads sizes from the row headers, not the data (SQLite's ``length()``
        of a blob does not load it), a chunk per lock hold as :meth:`cids`.
        """
        for raw, size, rowid in self._scan("cid, length(data), rowid"):
            if _is_valid_key(raw):
                yield CID(raw), size, rowid

    def has_many(self, cids: Iterable[CID]) -> set[CID]:
        """The held ones among ``cids``: one query per chunk rather than one per
        CID (the mesh checks every link of every applied op)."""
        wanted = {cid.raw: cid for cid in cids}
        keys = list(wanted)
        held: set[CID] = set()
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._reading() as conn:
                held.update(wanted[r[0]] for r in conn.execute(f"SELECT cid FROM blocks WHERE cid IN ({marks})", chunk))
        return held

    def has(self, cid: CID) -> bool:
        """True when a row for ``cid`` exists; its bytes are not re-verified."""
        with self._reading() as conn:
            row = conn.execute("SELECT 1 FROM blocks WHERE cid = ?", (cid.raw,)).fetchone()
        return row is not None

    def _scan(self, columns: str) -> Iterator[tuple]:
        """Rows in CID order, ``_SCAN_CHUNK`` per lock hold (keyset pagination)."""
        last = b""
        while True:
            with self._reading() as conn:
                rows = conn.execute(
                    f"SELECT {columns} FROM blocks WHERE cid > ? ORDER BY cid LIMIT ?",
                    (last, _SCAN_CHUNK),
                ).fetchall()
            if not rows:
                return
            yield from rows
            if len(rows) < _SCAN_CHUNK:
                return
            last = rows[-1][0]

    def cids(self) -> Iterator[CID]:
        """Every held CID in binary order.

        The lock is taken per chunk, not for the whole iteration, so writers
        proceed meanwhile; blocks written during iteration may or may not
        appear.  Rows with malformed keys are skipped (see :meth:`verify`).

        Raises:
            StoreError: SQLite failed, or the store was closed mid-iteration.
        """
        for (raw,) in self._scan("cid"):
            if _is_valid_key(raw):
                yield CID(raw)

    def size(self) -> int:
        """Number of blocks held (O(1): a counter kept in the same transactions)."""
        with self._reading() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'blocks'").fetchone()[0]

    def statistics(self) -> BlockStoreStatistics:
        """A frozen snapshot of the counters since :meth:`open`.

        Raises:
            StoreError: the store is closed or SQLite failed.
        """
        blocks = self.size()
        with self._lock:
            c = self._counts
            return BlockStoreStatistics(
                blocks=blocks,
                puts=c[0],
                duplicate_puts=c[1],
                rejected_puts=c[2],
                hits=c[3],
                misses=c[4],
                deletes=c[5],
                corrupt_reads=c[6],
            )

    # -- maintenance -----------------------------------------------------------

    def verify(self, *, delete_corrupt: bool = False) -> VerifyReport:
        """Re-hash every stored block.

        Runs in chunks, taking the lock per chunk, so the daemon keeps serving
        while it runs; blocks written during the pass may or may not be
        checked.  Ends by re-syncing the block and byte counters to the rows.

        A crash or error part-way leaves the store as it was, minus any
        corrupt rows already deleted (each chunk's deletions commit together).

        Args:
            delete_corrupt: Also remove corrupt rows and rows with malformed
                keys.  A row is deleted only if it still holds the bad bytes
                that were read, so a concurrent repair is never undone.

        Returns:
            A :class:`VerifyReport`.

        Raises:
            StoreError: SQLite failed (a damaged file surfaces here).
        """
        checked = 0
        malformed = 0
        deleted = 0
        corrupt: list[CID] = []
        doomed: list[tuple[bytes, object]] = []

        def flush() -> None:
            nonlocal deleted
            if not doomed:
                return
            with self._writing() as conn:
                removed = conn.executemany(
                    "DELETE FROM blocks WHERE cid = ? AND data IS ?", doomed
                ).rowcount
                self._add_to_counter(conn, -removed)
            deleted += removed
            doomed.clear()

        for raw, data in self._scan("cid, data"):
            checked += 1
            if not _is_valid_key(raw):
                malformed += 1
            elif isinstance(data, bytes) and CID(raw).verify(data):
                continue
            else:
                corrupt.append(CID(raw))
            if delete_corrupt:
                doomed.append((raw, data))
                if len(doomed) >= _SCAN_CHUNK:
                    flush()
        flush()
        with self._writing() as conn:
            blocks = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
            conn.execute("UPDATE meta SET value = ? WHERE key = 'blocks'", (blocks,))
            conn.execute("UPDATE meta SET value = (SELECT coalesce(sum(length(data)), 0) FROM blocks)"
                         " WHERE key = 'bytes'")
        return VerifyReport(
            checked=checked,
            corrupt=tuple(corrupt),
            malformed_keys=malformed,
            deleted=deleted,
            blocks=blocks,
        )
