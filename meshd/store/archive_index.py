"""The Archivist's history index: ``<home>/archive.db``, its versions and its pins.

``<home>/archive.db`` (sqlite, WAL) keeps one row per captured version
(genesis, root, heads, height, time, state) and the pin set (``pins``: cid,
purpose, genesis).  With the embedded block store the pins
table *is* the pin set; with IPFS it mirrors the node's pins.

The records the index stores (version roots, pin records) and the pin sets
are in :mod:`meshd.store.archive`, which re-exports everything here; the
index is apart because it is the one part of that protocol that keeps local
state on disk (SQLite), and nothing of it travels between peers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lattice import codec
from lattice.cid import CID

from ..errors import MeshdError


class ArchiveError(MeshdError):
    """The archive index failed (sqlite error, corrupt row)."""


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One captured version in the history index."""

    seq: int
    genesis: CID
    kind: str
    name: str
    root: CID
    heads: tuple[CID, ...]
    height: int
    at: int
    state: str  # "pinning" (intent written), "pinned", "superseded"


@dataclass(frozen=True, slots=True)
class PinRow:
    """One pin this archivist holds."""

    cid: CID
    purpose: str  # "version", "result" or "engine"
    genesis: CID | None
    at: int


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS versions (seq INTEGER PRIMARY KEY AUTOINCREMENT, genesis BLOB NOT NULL,"
    " kind TEXT NOT NULL, name TEXT NOT NULL, root BLOB NOT NULL, heads BLOB NOT NULL, height INTEGER NOT NULL,"
    " at INTEGER NOT NULL, state TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS versions_by_genesis ON versions (genesis, seq)",
    "CREATE TABLE IF NOT EXISTS pins (cid BLOB PRIMARY KEY, purpose TEXT NOT NULL, genesis BLOB, at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pins_by_genesis ON pins (genesis, purpose)",
    # Pinset pins (lattice.pinset) held whole here; their IPFS pins are
    # separate from the rows above, which other purposes own.
    "CREATE TABLE IF NOT EXISTS held (cid BLOB PRIMARY KEY, blocks INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " at INTEGER NOT NULL)",
)


class ArchiveIndex:
    """The archivist's sqlite database: version history and pin set.

    Build it with :meth:`open`.  One connection behind a lock, so it may be
    called from trio's worker threads.  Every write is one transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> "ArchiveIndex":
        """Open (creating) the database.

        Raises:
            ArchiveError: sqlite cannot open or initialise it.
        """
        self = cls(path)
        try:
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for stmt in _SCHEMA:
                conn.execute(stmt)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open archive index {path}: {exc}") from None
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            if self._conn is None:
                raise ArchiveError("archive index is closed")
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise ArchiveError(f"archive index failed: {exc}") from None

    # -- versions ----------------------------------------------------------------

    def record_intent(self, genesis: CID, kind: str, name: str, root: CID, heads: Iterable[CID],
                      height: int, at_ms: int) -> None:
        """Write a version row in state ``pinning`` (before the pin is placed)."""
        enc = codec.encode(sorted(heads))

        def go(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO versions (genesis, kind, name, root, heads, height, at, state)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, 'pinning')",
                      (genesis.raw, kind, name, root.raw, enc, height, at_ms))

        self._run(go)

    def commit_version(self, genesis: CID, root: CID, at_ms: int) -> None:
        """Make ``root`` the pinned version of ``genesis``: one transaction that marks
        it pinned, older rows superseded, and moves the ``version`` pin row."""

        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("UPDATE versions SET state='superseded' WHERE genesis=? AND state='pinned'", (genesis.raw,))
                c.execute("UPDATE versions SET state='pinned' WHERE genesis=? AND root=?", (genesis.raw, root.raw))
                c.execute("DELETE FROM pins WHERE genesis=? AND purpose='version'", (genesis.raw,))
                c.execute("INSERT OR REPLACE INTO pins (cid, purpose, genesis, at) VALUES (?, 'version', ?, ?)",
                          (root.raw, genesis.raw, at_ms))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        self._run(go)

    def current(self, genesis: CID) -> VersionRow | None:
        """The pinned version of ``genesis``, or None."""
        rows = self._versions("WHERE genesis=? AND state='pinned' ORDER BY seq DESC LIMIT 1", (genesis.raw,))
        return rows[0] if rows else None

    def versions(self, genesis: CID, *, limit: int = 1000) -> list[VersionRow]:
        """Captured versions of ``genesis`` (pinned or superseded), oldest first; the newest ``limit``."""
        rows = self._versions("WHERE genesis=? AND state!='pinning' ORDER BY seq DESC LIMIT ?",
                              (genesis.raw, max(1, limit)))
        return rows[::-1]

    def version(self, genesis: CID, root: CID) -> VersionRow | None:
        rows = self._versions("WHERE genesis=? AND root=? ORDER BY seq DESC LIMIT 1", (genesis.raw, root.raw))
        return rows[0] if rows else None

    def objects(self) -> list[tuple[VersionRow, int]]:
        """Each archived object's newest pinned version and its count of versions."""
        def go(c: sqlite3.Connection) -> list[tuple[bytes, int]]:
            return c.execute("SELECT genesis, COUNT(*) FROM versions WHERE state!='pinning' GROUP BY genesis").fetchall()

        out = []
        for g, count in self._run(go):
            cur = self.current(CID(bytes(g)))
            if cur is not None:
                out.append((cur, count))
        return sorted(out, key=lambda rc: (rc[0].kind, rc[0].name))

    def stale_roots(self) -> set[CID]:
        """Version roots this archivist placed (or meant to) that are no longer current."""
        def go(c: sqlite3.Connection) -> list[tuple[bytes]]:
            return c.execute("SELECT DISTINCT root FROM versions WHERE root NOT IN"
                             " (SELECT cid FROM pins WHERE purpose='version')").fetchall()

        return {CID(bytes(r)) for (r,) in self._run(go)}

    def forget_intents(self) -> None:
        """Drop ``pinning`` rows (after reconciliation has unpinned their roots)."""
        self._run(lambda c: c.execute("DELETE FROM versions WHERE state='pinning'"))

    def _versions(self, where: str, args: tuple) -> list[VersionRow]:
        def go(c: sqlite3.Connection) -> list[tuple]:
            return c.execute("SELECT seq, genesis, kind, name, root, heads, height, at, state FROM versions "
                             + where, args).fetchall()

        return [VersionRow(seq, CID(bytes(g)), kind, name, CID(bytes(r)), tuple(codec.decode_trusted(h)),
                           height, at, state)
                for seq, g, kind, name, r, h, height, at, state in self._run(go)]

    # -- pins ---------------------------------------------------------------------

    def add_pin(self, cid: CID, purpose: str, genesis: CID | None, at_ms: int) -> None:
        self._run(lambda c: c.execute("INSERT OR IGNORE INTO pins (cid, purpose, genesis, at) VALUES (?, ?, ?, ?)",
                                      (cid.raw, purpose, genesis.raw if genesis else None, at_ms)))

    # -- the pinset pins this archivist holds (meshd.roles.pinholder) ------------------

    def hold(self, cid: CID, blocks: int, size: int, at_ms: int) -> None:
        """Record that this archivist holds pinset pin ``cid`` whole."""
        self._run(lambda c: c.execute("INSERT OR REPLACE INTO held (cid, blocks, bytes, at) VALUES (?, ?, ?, ?)",
                                      (cid.raw, blocks, size, at_ms)))

    def release(self, cid: CID) -> None:
        """Forget that this archivist holds pinset pin ``cid``."""
        self._run(lambda c: c.execute("DELETE FROM held WHERE cid=?", (cid.raw,)))

    def held(self) -> dict[CID, tuple[int, int]]:
        """The pinset pins held here: CID -> (blocks, bytes)."""
        rows = self._run(lambda c: c.execute("SELECT cid, blocks, bytes FROM held").fetchall())
        return {CID(bytes(c)): (b, n) for c, b, n in rows}

    def has_pin(self, cid: CID) -> bool:
        return self._run(lambda c: c.execute("SELECT 1 FROM pins WHERE cid=?", (cid.raw,)).fetchone()) is not None

    def pins(self, *, purpose: str | None = None) -> list[PinRow]:
        """Every pin, oldest first."""
        def go(c: sqlite3.Connection) -> list[tuple]:
            if purpose is None:
                return c.execute("SELECT cid, purpose, genesis, at FROM pins ORDER BY at, cid").fetchall()
            return c.execute("SELECT cid, purpose, genesis, at FROM pins WHERE purpose=? ORDER BY at, cid",
                             (purpose,)).fetchall()

        return [PinRow(CID(bytes(c)), p, CID(bytes(g)) if g else None, at) for c, p, g, at in self._run(go)]
