"""Blocks a peer sent that failed validation: remembered by CID, never decoded again.

A task body, task definition or result output in the shared objects may have
been written by any member.  When one fails its ``_untrusted`` decoder the
node skips it, counts it, logs it once, and records its CID here.  A block's
CID names its bytes, so a block that failed once fails forever: remembering
the CID is exact, and saves every later pass (and every restart, since the
queue replays from disk) from decoding the same poison again.

The record is one small sqlite database, ``<home>/rejected.db``, written
synchronously on the rare rejection (one row per bad CID, capped).  Losing
it is harmless: the blocks are decoded once more and rejected again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lattice.cid import CID

from ..errors import MeshdError
from ..runtime.logs import get_logger

log = get_logger("meshd.quarantine")


class QuarantineError(MeshdError):
    """The rejected-blocks database could not be opened."""


@dataclass(frozen=True)
class QuarantineOptions:
    """Bounds of the rejected-blocks record.

    Attributes:
        max_entries: CIDs remembered at most (default 100,000, about 10 MB on
            disk).  Beyond it new rejections are still counted and skipped in
            this process, just not persisted, so a flood cannot fill the disk.
    """

    max_entries: int = 100_000

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError("QuarantineOptions.max_entries must be at least 1")


@dataclass(frozen=True)
class QuarantineStatistics:
    """What the quarantine holds: CIDs by kind (``bad_task``, ``bad_output``...)."""

    entries: int
    by_kind: dict[str, int]


class Quarantine:
    """The set of rejected block CIDs, with the reason for each.

    Construct with :meth:`open` (persistent) or directly (in memory only, for
    tests and tools).  Methods are synchronous and cheap: a membership test is
    a dict lookup; an insert is one sqlite row, on a rare event.
    """

    def __init__(self, options: QuarantineOptions | None = None) -> None:
        self.options = options or QuarantineOptions()
        self._reasons: dict[CID, tuple[str, str]] = {}  # cid -> (kind, reason)
        self._counts: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, options: QuarantineOptions | None = None) -> "Quarantine":
        """Open (creating) the database at ``path`` and load what it holds."""
        self = cls(options)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS rejected (cid BLOB PRIMARY KEY, kind TEXT NOT NULL,"
                         " reason TEXT NOT NULL, at INTEGER NOT NULL)")
            rows = conn.execute("SELECT cid, kind, reason FROM rejected").fetchall()
        except sqlite3.Error as exc:
            raise QuarantineError(f"cannot open rejected-blocks database {path}: {exc}") from None
        for raw, kind, reason in rows:
            try:
                cid = CID.from_bytes_untrusted(bytes(raw))
            except Exception:  # noqa: BLE001 - a damaged row is just forgotten
                continue
            self._reasons[cid] = (kind, reason)
            self._counts[kind] = self._counts.get(kind, 0) + 1
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __contains__(self, cid: object) -> bool:
        return cid in self._reasons

    def __iter__(self) -> Iterator[CID]:
        return iter(list(self._reasons))

    def reason(self, cid: CID) -> str | None:
        """Why ``cid`` was rejected, or None when it was not."""
        entry = self._reasons.get(cid)
        return entry[1] if entry else None

    def add(self, cid: CID, kind: str, reason: str) -> bool:
        """Remember that ``cid`` failed validation as ``kind``.

        Returns:
            True the first time (the caller counts and logs it), False when
            it was already known.
        """
        if cid in self._reasons:
            return False
        reason = reason[:300]
        self._reasons[cid] = (kind, reason)
        self._counts[kind] = self._counts.get(kind, 0) + 1
        log.warning("block_rejected", kind=kind, cid=str(cid), reason=reason)
        with self._lock:
            if self._conn is not None and len(self._reasons) <= self.options.max_entries:
                try:
                    self._conn.execute("INSERT OR IGNORE INTO rejected VALUES (?, ?, ?, ?)",
                                       (cid.raw, kind, reason, int(time.time() * 1000)))
                except sqlite3.Error as exc:
                    # Persistence is an optimisation (the block would simply be
                    # rejected again after a restart): keep serving.
                    log.warning("quarantine_write_failed", error=str(exc)[:200])
        return True

    def statistics(self) -> QuarantineStatistics:
        return QuarantineStatistics(entries=len(self._reasons), by_kind=dict(self._counts))
