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

History index.  ``<home>/archive.db``, the versions captured and the pin set:
:mod:`meshd.store.archive_index` (re-exported here).

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

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lattice import codec, unixfs
from lattice.cid import CID, DAG_CBOR, DAG_PB
from lattice.errors import BadInput, BadRecord, BlockNotFound
from lattice.signing import Signer, verify_signature
from lattice.state import decode_value

from ..p2p.identity import peer_id_from_public_key
from .archive_index import ArchiveError, ArchiveIndex, PinRow, VersionRow

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
