"""The disk block store's file: its layout, its options, and opening it.

:class:`lattice.diskstore.DiskBlockStore` reads and writes blocks; this module
holds what is true of the SQLite file itself: the schema and the two
``PRAGMA`` values that mark a file as a meshd block store, the options that
set its durability and caching (:class:`DiskStoreOptions`, re-exported by
:mod:`lattice.diskstore`), and :func:`connect`, which opens a file, refuses
one that is someone else's or newer, and creates or upgrades the schema in
one transaction.  It is apart so that the on-disk format can be read, and
changed, in one place.

Layout (``PRAGMA application_id`` = ``0x6d657368`` "mesh",
``PRAGMA user_version`` = schema version 1)::

    blocks(cid BLOB PRIMARY KEY, data BLOB NOT NULL)   -- cid = CID.raw (36 bytes)
    meta(key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID
        ('blocks', <number of rows in blocks>)
        ('bytes', <sum of length(data) over blocks>)
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Literal

from .errors import StoreError

_APPLICATION_ID = 0x6D657368  # "mesh"
_SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blocks (cid BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('blocks', 0)",
    f"PRAGMA application_id = {_APPLICATION_ID}",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)


@dataclass(frozen=True, slots=True)
class DiskStoreOptions:
    """Settings of a :class:`~lattice.diskstore.DiskBlockStore` that do not depend on its path.

    Attributes:
        synchronous: ``"full"`` (default) fsyncs the log on every commit, so
            an acknowledged write survives power loss; heads and queue state
            written after their blocks rely on that ordering.  ``"normal"``
            fsyncs only at checkpoints: still safe against process crashes
            and never corrupt, but a power loss may undo the last commits.
        verify_on_get: Re-hash blocks on ``get``/``get_many`` (default on) so
            that bit rot is reported as :class:`CorruptBlock` instead of
            being served to peers.  Costs one SHA-256 per read (measured in
            ``tests/test_blockstore_contract.py``).
        cache_size_kib: SQLite page cache in KiB (default 65536 = 64 MiB),
            between 256 and 16 GiB.  Larger keeps more of the CID index hot.
        busy_timeout_s: How long a write waits for another process holding
            the file (e.g. an offline ``verify``) before failing with
            :class:`StoreError` (default 5 s, 0..3600).
        checkpoint_pages: Log size, in pages (4 KiB), at which SQLite copies
            the log back into the main file (default 10000, about 40 MiB;
            100..1000000).  SQLite's own default of 1000 checkpoints after
            nearly every 1,000-block batch once the CID index outgrows the
            batch, because each random CID dirties its own index page; a
            larger log lets repeated writes to one page checkpoint once.
            The cost is a longer log replay when opening after a crash.
    """

    synchronous: Literal["normal", "full"] = "full"
    verify_on_get: bool = True
    cache_size_kib: int = 64 * 1024
    busy_timeout_s: float = 5.0
    checkpoint_pages: int = 10_000

    def __post_init__(self) -> None:
        if self.synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {self.synchronous!r}")
        if not isinstance(self.verify_on_get, bool):
            raise ValueError("verify_on_get must be a bool")
        if (
            not isinstance(self.cache_size_kib, int)
            or isinstance(self.cache_size_kib, bool)
            or not 256 <= self.cache_size_kib <= 16 * 1024 * 1024
        ):
            raise ValueError("cache_size_kib must be an int in 256..16777216")
        if (
            not isinstance(self.busy_timeout_s, (int, float))
            or isinstance(self.busy_timeout_s, bool)
            or not math.isfinite(self.busy_timeout_s)
            or not 0 <= self.busy_timeout_s <= 3600
        ):
            raise ValueError("busy_timeout_s must be a number in 0..3600")
        if (
            not isinstance(self.checkpoint_pages, int)
            or isinstance(self.checkpoint_pages, bool)
            or not 100 <= self.checkpoint_pages <= 1_000_000
        ):
            raise ValueError("checkpoint_pages must be an int in 100..1000000")


def connect(path: str, opts: DiskStoreOptions) -> sqlite3.Connection:
    """Open the block store file at ``path`` in WAL mode, with its schema.

    Creates the schema in a new file, and adds what schema 1 gained since
    (the ``bytes`` row) to an older one.

    Raises:
        StoreError: the file cannot be opened, is not a SQLite database,
            belongs to something other than a meshd block store, or has a
            newer schema.
    """
    try:
        conn = sqlite3.connect(
            path,
            timeout=opts.busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # the store guards it with its lock
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open block store {path!r}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"block store {path!r} cannot use WAL (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {opts.synchronous.upper()}")
        conn.execute(f"PRAGMA cache_size = {-opts.cache_size_kib}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {opts.checkpoint_pages}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != _APPLICATION_ID and (app_id != 0 or tables):
                raise StoreError(f"{path!r} is not a meshd block store")
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"block store {path!r} has schema {version}, newer than"
                    f" {_SCHEMA_VERSION}; upgrade meshd"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT 1 FROM meta WHERE key = 'bytes'").fetchone() is None:
                # In the same transaction as the triggers: no write falls between the sum and them.
                conn.execute("INSERT INTO meta (key, value) SELECT 'bytes', coalesce(sum(length(data)), 0)"
                             " FROM blocks")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open block store {path!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
