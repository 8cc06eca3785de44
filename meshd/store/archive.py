"""The Archivist's records: version roots, the history index, the pins accounting.

Whitepaper §4.1: ``Pin(hash, [genesis])`` moves an object's pin to its newest
version and unpins the previous one.  This module holds the parts of that
protocol that do no networking; :mod:`meshd.roles.archivist` drives them.

Version root.  A GOHO has no single root: its state is named by a set of
heads.  The archivist names one version of object ``g`` by a small DAG-CBOR
block that links the heads, so pinning it *recursively* pins the whole delta
DAG (each delta links its parents and the genesis; queue, results and engine
ops link task bodies, result records, outputs and engine files)::

    meshd/version v1  {t, v, g, heads, h, at, prev?, base?}

``g`` genesis CID; ``heads`` the sorted head delta CIDs; ``h`` the height;
``at`` when the archivist captured it (ms); ``prev`` the archivist's previous
version root of ``g`` (so the newest root links every older one and the
history survives IPFS garbage collection after the old pins are dropped);
``base`` the snapshot the replica was bootstrapped from, if any.

History index.  ``<home>/archive.db`` (sqlite, WAL) keeps one row per
captured version (genesis, root, heads, height, time, state) and the pin set
(``pins``: cid, purpose, genesis).  With the embedded block store the pins
table *is* the pin set; with IPFS it mirrors the node's pins.

Pins accounting (drop policy).  Each archivist adds a signed record
``meshd/pin v1 {t, v, archivist, pk, genesis, version, at, s}`` to the mesh's
``pins`` GOHO under the key ``str(genesis)``; peers learn it through HPCP like
any object.  The object is grow-only, so a record stays after its archivist
moved on; that is sound because a newer version's DAG contains every block
of the older one (a replica only grows), and the archivist still pins it.
:func:`droppable` is the pure rule: a block may be dropped only when at least
``n`` distinct archivists hold a version that contains it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lattice import codec, unixfs
from lattice.cid import CID, DAG_CBOR, DAG_PB
from lattice.errors import BadInput, BadRecord, BlockNotFound
from lattice.signing import Signer, verify_signature
from lattice.state import decode_value

from ..errors import MeshdError
from ..p2p.identity import peer_id_from_public_key

__all__ = [
    "ArchiveError", "ArchiveIndex", "IpfsPinner", "LocalPinner", "PIN_TAG", "Pinner", "PINS", "PinRecord", "PinRow", "PinsView", "VERSION_TAG",
    "Version", "VersionRow", "dag_blocks", "droppable", "holders", "pin_op", "pin_record",
    "pin_record_untrusted", "version_from_untrusted", "version_record",
]

VERSION_TAG = "meshd/version"
PIN_TAG = "meshd/pin"
#: Kind of the mesh-wide pins GOHO (its name is the mesh name).
PINS = "pins"
#: Most heads one version root may name (a GOHO rarely has more than a few).
MAX_HEADS = 1024


class ArchiveError(MeshdError):
    """The archive index failed (sqlite error, corrupt row)."""


# ---------------------------------------------------------------- version roots


@dataclass(frozen=True, slots=True)
class Version:
    """A decoded ``meshd/version`` block."""

    cid: CID
    genesis: CID
    heads: tuple[CID, ...]
    height: int
    at: int
    prev: CID | None
    base: CID | None


def version_record(genesis: CID, heads: Iterable[CID], height: int, at_ms: int, *,
                   prev: CID | None = None, base: CID | None = None) -> dict[str, Any]:
    """The ``meshd/version`` record naming ``genesis`` at ``heads``."""
    rec: dict[str, Any] = {"t": VERSION_TAG, "v": 1, "g": genesis, "heads": sorted(heads), "h": height, "at": at_ms}
    if prev is not None:
        rec["prev"] = prev
    if base is not None:
        rec["base"] = base
    return rec


def version_from_untrusted(cid: CID, data: bytes) -> Version:
    """Decode and check a version block.

    Raises:
        BadInput: not a valid ``meshd/version`` v1 block named ``cid``.
    """
    if cid.codec != DAG_CBOR or not cid.verify(data):
        raise BadRecord(f"block does not hash to {cid}")
    rec = codec.decode_untrusted(data)
    if type(rec) is not dict or rec.get("t") != VERSION_TAG or rec.get("v") != 1:
        raise BadRecord(f"{cid} is not a {VERSION_TAG} v1 record")
    extra = set(rec) - {"t", "v", "g", "heads", "h", "at", "prev", "base"}
    heads = rec.get("heads")
    if extra or type(rec.get("g")) is not CID or type(heads) is not list or len(heads) > MAX_HEADS:
        raise BadRecord(f"{cid}: malformed version record")
    if not all(type(h) is CID for h in heads) or type(rec.get("h")) is not int or type(rec.get("at")) is not int:
        raise BadRecord(f"{cid}: malformed version record")
    for key in ("prev", "base"):
        if key in rec and type(rec[key]) is not CID:
            raise BadRecord(f"{cid}: {key} must be a CID link")
    return Version(cid, rec["g"], tuple(heads), rec["h"], rec["at"], rec.get("prev"), rec.get("base"))


def _links(value: Any, out: list[CID]) -> None:
    t = type(value)
    if t is CID:
        out.append(value)
    elif t is dict:
        for v in value.values():
            _links(v, out)
    elif t is list:
        for v in value:
            _links(v, out)


def block_links_untrusted(cid: CID, data: bytes) -> list[CID]:
    """The CIDs block ``cid`` links to: a DAG-CBOR record's links, a dag-pb
    (UnixFS) node's children; a raw block links nothing.

    Raises:
        BadInput: ``data`` is not valid for ``cid``'s codec.
    """
    if cid.codec == DAG_CBOR:
        links: list[CID] = []
        _links(codec.decode_untrusted(data), links)
        return links
    if cid.codec == DAG_PB:
        return unixfs.links_untrusted(data)
    return []


def dag_blocks(get: Callable[[CID], bytes], root: CID, *, limit: int = 10_000_000,
               known: Collection[CID] = ()) -> tuple[set[CID], set[CID]]:
    """Every block reachable from ``root`` through CID links: ``(found, missing)``.

    What a recursive pin of ``root`` holds.  ``get`` raises
    :class:`~lattice.errors.BlockNotFound` for an absent block; links are
    those of :func:`block_links_untrusted` (a raw block has none).  A block in ``known`` (one whose whole
    DAG an earlier walk found) is counted as found and not read again.
    """
    found: set[CID] = set()
    missing: set[CID] = set()
    stack = [root]
    while stack and len(found) < limit:
        cid = stack.pop()
        if cid in found or cid in missing:
            continue
        if cid in known:
            found.add(cid)
            continue
        try:
            data = get(cid)
        except BlockNotFound:
            missing.add(cid)
            continue
        found.add(cid)
        try:
            stack.extend(block_links_untrusted(cid, data))
        except BadInput:
            continue
    return found, missing


# ---------------------------------------------------------------- pins accounting


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A verified claim "``archivist`` pins ``version`` of ``genesis``"."""

    archivist: str
    genesis: CID
    version: CID
    at: int


def pin_record(signer: Signer, genesis: CID, version: CID, at_ms: int) -> dict[str, Any]:
    """Build and sign a ``meshd/pin`` record for the pins GOHO."""
    body: dict[str, Any] = {"t": PIN_TAG, "v": 1, "archivist": peer_id_from_public_key(signer.public),
                            "pk": signer.public, "genesis": genesis, "version": version, "at": at_ms}
    body["s"] = signer.sign(codec.encode(body))
    return body


def pin_op(record: Mapping[str, Any]) -> list[Any]:
    """The pins-GOHO op that publishes ``record``."""
    return ["add", str(record["genesis"]), dict(record)]


def pin_record_untrusted(value: Any) -> PinRecord:
    """Check a pins-GOHO value: shape, signature, and that ``pk`` is ``archivist``'s key.

    The signature ties the record to the archivist's identity, so one peer
    cannot pose as N archivists to make others drop blocks.

    Raises:
        BadRecord: anything is wrong with it.
    """
    if type(value) is not dict or value.get("t") != PIN_TAG or value.get("v") != 1:
        raise BadRecord("not a meshd/pin v1 record")
    if set(value) != {"t", "v", "archivist", "pk", "genesis", "version", "at", "s"}:
        raise BadRecord("meshd/pin record has missing or extra fields")
    pk, sig = value["pk"], value["s"]
    if type(value["archivist"]) is not str or type(value["genesis"]) is not CID or type(value["version"]) is not CID:
        raise BadRecord("meshd/pin record has mistyped fields")
    if type(value["at"]) is not int or type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes:
        raise BadRecord("meshd/pin record has mistyped fields")
    if peer_id_from_public_key(pk) != value["archivist"]:
        raise BadRecord("meshd/pin archivist does not match its key")
    unsigned = {k: v for k, v in value.items() if k != "s"}
    if not verify_signature(pk, sig, codec.encode(unsigned)):
        raise BadRecord("meshd/pin signature does not verify")
    return PinRecord(value["archivist"], value["genesis"], value["version"], value["at"])


def holders(pins: Iterable[PinRecord]) -> dict[CID, frozenset[str]]:
    """Version root -> the distinct archivists that pinned it."""
    out: dict[CID, set[str]] = {}
    for p in pins:
        out.setdefault(p.version, set()).add(p.archivist)
    return {v: frozenset(a) for v, a in out.items()}


def droppable(blocks: Mapping[CID, Collection[CID]], pins: Iterable[PinRecord], n: int) -> set[CID]:
    """The blocks a non-archivist may delete: those held by >= ``n`` archivists.

    Args:
        blocks: Each candidate block -> the version roots whose DAG contains it
            (see :func:`dag_blocks`); a block in no version is never droppable.
        pins: Verified pin records (e.g. :meth:`PinsView.records`).
        n: Archivists required; at least 1 (nothing is dropped that no
            archivist holds).

    Raises:
        ValueError: ``n`` < 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("n must be an integer >= 1")
    by_version = holders(pins)
    out: set[CID] = set()
    for block, versions in blocks.items():
        who: set[str] = set()
        for v in versions:
            who |= by_version.get(v, frozenset())
        if len(who) >= n:
            out.add(block)
    return out


class PinsView:
    """Verified pin records of the pins GOHO, by genesis (forgeries are counted, not kept)."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self._by_genesis: dict[CID, dict[tuple[str, CID], PinRecord]] = {}
        self._rejected = 0
        self._cursor = replica.cursor()  # reads pull later changes; nothing is registered
        for key in replica.state.set_keys():
            for enc in list(replica.state.encoded_members(key)):
                self._on_add(key, enc)

    def sync(self) -> None:
        """Catch up with the replica (every read does this first)."""
        for change in self._cursor.pull():
            for key, enc in change.adds:
                self._on_add(key, enc)

    def close(self) -> None:
        """Stop following the replica."""
        self._cursor.close()

    @property
    def rejected(self) -> int:
        """Pin records refused (forged or misfiled)."""
        self.sync()
        return self._rejected

    def _on_add(self, key: str, enc: bytes) -> None:
        try:
            rec = pin_record_untrusted(decode_value(enc))
        except BadInput:
            self._rejected += 1
            return
        if str(rec.genesis) != key:
            self._rejected += 1
            return
        self._by_genesis.setdefault(rec.genesis, {})[(rec.archivist, rec.version)] = rec

    def records(self, genesis: CID | None = None) -> list[PinRecord]:
        """Records of ``genesis`` (all when None), oldest first."""
        self.sync()
        groups = [self._by_genesis.get(genesis, {})] if genesis is not None else list(self._by_genesis.values())
        return sorted((r for g in groups for r in g.values()), key=lambda r: (r.at, r.archivist, r.version))

    def archivists(self, genesis: CID) -> dict[str, PinRecord]:
        """Each archivist's newest record for ``genesis``."""
        out: dict[str, PinRecord] = {}
        for r in self.records(genesis):
            out[r.archivist] = r
        return out


# ---------------------------------------------------------------- history index


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


# ---------------------------------------------------------------- pin sets


class Pinner(Protocol):
    """Where pins are kept: an IPFS node, or the archive index alone."""

    def add(self, cid: CID) -> None: ...
    def move(self, old: CID, new: CID) -> None: ...
    def rm(self, cid: CID) -> None: ...
    def ls(self) -> set[CID]: ...
    def close(self) -> None: ...


class IpfsPinner:
    """Recursive pins in the IPFS node, over a client with a long pin deadline.

    The node's own block store answers lookups within ~1 s; a recursive pin
    walks the whole DAG, so pins get their own connection and deadline.
    """

    def __init__(self, api: str, timeout_s: float) -> None:
        from .ipfs import IpfsOptions

        self._options = IpfsOptions(api=api, timeout_s=timeout_s, http_timeout_s=timeout_s + 30.0, retries=1)
        self._store: Any = None

    def _s(self) -> Any:
        if self._store is None:
            from .ipfs import IpfsBlockStore

            self._store = IpfsBlockStore.open(self._options)  # StoreError while the node is down
        return self._store

    def add(self, cid: CID) -> None:
        self._s().pin_add(cid, recursive=True)

    def move(self, old: CID, new: CID) -> None:
        self._s().pin_update(old, new)

    def rm(self, cid: CID) -> None:
        self._s().pin_rm(cid)

    def ls(self) -> set[CID]:
        return self._s().pin_ls()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class LocalPinner:
    """The embedded store has no garbage collector: the index's pins table is the pin set.

    ``add`` only checks that the root block is present (the DAG below it was
    written before its heads, see :mod:`meshd.store.objects`).
    """

    def __init__(self, store: Any, index: ArchiveIndex) -> None:
        self._store = store
        self._index = index

    def add(self, cid: CID) -> None:
        if not self._store.has(cid):
            raise BlockNotFound(cid)

    def move(self, old: CID, new: CID) -> None:
        self.add(new)

    def rm(self, cid: CID) -> None:
        pass

    def ls(self) -> set[CID]:
        return {p.cid for p in self._index.pins()}

    def close(self) -> None:
        pass
