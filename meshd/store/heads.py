"""Durable record of which objects a node follows and their current heads.

One small sqlite database (``<home>/heads.db``) with one row per followed
GOHO: genesis CID, kind, name, the encoded head list and the snapshot base.
It is written *after* the blocks a head names are in the block store
(go-ds-crdt writes heads last), so after a crash at any point the heads here
name only blocks that exist; blocks written after the last heads update are
found again by the next fetch or simply re-applied.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from lattice import codec
from lattice.cid import CID

from ..errors import MeshdError


class HeadsError(MeshdError):
    """The heads database failed."""


@dataclass(frozen=True)
class FollowedObject:
    genesis: CID
    kind: str
    name: str
    heads: tuple[CID, ...]
    base: CID | None


class HeadsStore:
    """Followed objects and their heads, in sqlite (WAL, synchronous=NORMAL).

    synchronous=NORMAL in WAL mode survives a process crash (SIGKILL) — the
    write is in the OS page cache once ``commit`` returns — but not a power
    loss of the last transactions; ``synchronous="full"`` trades speed for it.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self._path = str(path)
        self._sync = synchronous
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, *, synchronous: str = "NORMAL") -> "HeadsStore":
        self = cls(path, synchronous=synchronous)
        try:
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS objects (genesis BLOB PRIMARY KEY, kind TEXT NOT NULL,"
                " name TEXT NOT NULL, heads BLOB NOT NULL, base BLOB)"
            )
        except sqlite3.Error as exc:
            raise HeadsError(f"cannot open heads database {path}: {exc}") from None
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def load(self) -> list[FollowedObject]:
        assert self._conn is not None
        with self._lock:
            rows = self._conn.execute("SELECT genesis, kind, name, heads, base FROM objects").fetchall()
        out = []
        for g, kind, name, heads, base in rows:
            out.append(FollowedObject(CID(bytes(g)), kind, name, tuple(codec.decode_trusted(heads)), CID(bytes(base)) if base else None))
        return out

    def save(self, genesis: CID, kind: str, name: str, heads: list[CID], base: CID | None) -> None:
        assert self._conn is not None
        enc = codec.encode(list(heads))
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO objects (genesis, kind, name, heads, base) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(genesis) DO UPDATE SET heads=excluded.heads, base=excluded.base",
                    (genesis.raw, kind, name, enc, base.raw if base else None),
                )
        except sqlite3.Error as exc:
            raise HeadsError(f"cannot save heads: {exc}") from None
