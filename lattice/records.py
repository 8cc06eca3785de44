"""The GOHO block records: genesis, delta, snapshot and snapshot part.

Every record is a DAG-CBOR map with a type tag ``t`` and a version ``v``.
Decoders whose input comes from peers end in ``_untrusted`` and raise only
:class:`~lattice.errors.BadInput` subclasses.

Record shapes (v1), with field meanings:

``goho/genesis``  ``{t, v, kind, name, nonce}``
    Names an object.  Its CID *is* the object's name.  Well-known objects
    (a mesh's queue) use a fixed name and empty nonce, so every node derives
    the same genesis CID without talking to anyone.

``goho/delta``  ``{t, v, g, p, h, ops, a, s}``
    ``g`` genesis CID; ``p`` sorted parent delta CIDs (the heads the author
    had); ``h`` height = 1 + max parent height (1 with no parents); ``ops`` a
    list of ``[op, key, value]`` with ``op`` in ``add`` (grow-only set add) and
    ``put`` (register write, last-writer by (h, delta CID, index)); ``a`` the
    author's Ed25519 public key; ``s`` the signature over the record without
    ``s``.

``goho/delta`` v2  ``{t, v, g, p, h, ops, b, a, s}``
    A v1 delta plus ``b``: small blocks its ops link to (task bodies, result
    records, outputs), carried *inline* so a peer that fetches the delta has
    them too and fetches nothing more per task.  Each is the bytes of a
    DAG-CBOR block (at most ``MAX_INLINE_BLOCK`` bytes, ``MAX_INLINE_BYTES``
    in all); its CID is computed from its bytes, so it cannot lie about its
    name.  The signature covers them.  A delta without inline blocks is
    written as v1.

``goho/snapshot``  ``{t, v, g, covers, h, parts, a, s}``
    A signed summary of the state reached at heads ``covers``; ``parts`` link
    to ``goho/snapshot-part`` blocks.  A fresh replica loads it instead of
    replaying every delta.

``goho/snapshot-part``  ``{t, v, adds, puts}``
    ``adds``: ``[[key, [value, ...]], ...]``; ``puts``: ``[[key, h, delta, i,
    value], ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .cid import CID, DAG_CBOR
from .errors import BadEncoding, BadRecord, BadSignature
from .signing import Signer, verify_signature

OP_ADD = "add"
OP_PUT = "put"
_OPS = frozenset({OP_ADD, OP_PUT})

#: Longest key (a set name or dataset path) in bytes.
MAX_KEY_LEN = 1024
#: Most ops in one delta; the daemon batches under this.
MAX_OPS = 100_000
#: Most parents of one delta.
MAX_PARENTS = 256
#: Largest block a delta carries inline, and the most inline bytes in one delta.
MAX_INLINE_BLOCK = 16 * 1024
MAX_INLINE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Delta:
    """A decoded, verified delta node."""

    cid: CID
    genesis: CID
    parents: tuple[CID, ...]
    height: int
    ops: list[list[Any]]
    author: bytes
    inline: tuple[bytes, ...] = ()  # v2: blocks carried inline (their CIDs are computed)

    def inline_blocks(self) -> list[tuple[CID, bytes]]:
        """The inline blocks with their CIDs (DAG-CBOR, sha2-256)."""
        return [(CID.for_block(DAG_CBOR, b), b) for b in self.inline]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded, verified snapshot node."""

    cid: CID
    genesis: CID
    covers: tuple[CID, ...]
    height: int
    parts: tuple[CID, ...]
    author: bytes


def genesis_record(kind: str, name: str, nonce: bytes = b"") -> dict[str, Any]:
    """The genesis record of an object; encode it to get the object's name."""
    return {"t": "goho/genesis", "v": 1, "kind": kind, "name": name, "nonce": nonce}


def make_genesis(kind: str, name: str, nonce: bytes = b"") -> tuple[CID, bytes]:
    return codec.encode_block(genesis_record(kind, name, nonce))


def _fail(msg: str) -> BadRecord:
    return BadRecord(msg)


def _check_ops_untrusted(ops: Any) -> list[list[Any]]:
    if type(ops) is not list or not ops:
        raise _fail("delta ops must be a non-empty list")
    if len(ops) > MAX_OPS:
        raise _fail(f"delta has {len(ops)} ops, more than {MAX_OPS}")
    for op in ops:
        if type(op) is not list or len(op) != 3:
            raise _fail("each op must be [op, key, value]")
        if op[0] not in _OPS:
            raise _fail(f"unknown op {op[0]!r}")
        key = op[1]
        if type(key) is not str or not key or len(key) > MAX_KEY_LEN:
            raise _fail("op key must be a non-empty string of at most 1024 chars")
    return ops


def sign_delta(
    signer: Signer, genesis: CID, parents: list[CID], height: int, ops: list[list[Any]],
    inline: list[bytes] = (),
) -> tuple[CID, bytes]:
    """Build and sign a delta (v2 when it carries ``inline`` blocks); return its block."""
    delta, data = signed_delta(signer, genesis, parents, height, ops, inline)
    return delta.cid, data


def signed_delta(
    signer: Signer, genesis: CID, parents: list[CID], height: int, ops: list[list[Any]],
    inline: list[bytes] = (),
) -> tuple[Delta, bytes]:
    """:func:`sign_delta`, with the :class:`Delta` its block decodes to (as
    :func:`delta_from_trusted` gives it), so the writer applies it without
    decoding what it just encoded."""
    # Fields in DAG-CBOR key order and ops made canonical once, so neither
    # encoding below copies anything.
    ops = codec.canonical(ops)
    parents = sorted(parents)
    head: dict[str, Any] = {"a": signer.public}
    if inline:
        head["b"] = list(inline)
    head.update(g=genesis, h=height, p=parents)
    tail = {"t": "goho/delta", "v": 2 if inline else 1, "ops": ops}
    sig = signer.sign(codec.encode({**head, **tail}))
    cid, data = codec.encode_block({**head, "s": sig, **tail})
    return Delta(cid, genesis, tuple(parents), height, ops, signer.public), data


def choose_inline(ops: list[list[Any]], blocks: dict[CID, bytes], *, rest: bool = False) -> list[bytes]:
    """The blocks a delta with ``ops`` carries inline, taken out of ``blocks``.

    First those its ops link to (an op's value, or a field of it), then, with
    ``rest``, any others (the last delta of a chain takes what is left), each
    at most ``MAX_INLINE_BLOCK`` bytes and ``MAX_INLINE_BYTES`` in all; a
    block left out is fetched as a linked block, as in v1.  Only DAG-CBOR
    blocks ride inline: a receiver names an inline block by its DAG-CBOR CID,
    so a raw or dag-pb block sent inline would be stored under a CID nothing
    links (and fetched again anyway).
    """
    out: list[bytes] = []
    total = 0

    def take(c: CID) -> None:
        nonlocal total
        b = blocks.get(c)
        if (b is not None and c.codec == DAG_CBOR and len(b) <= MAX_INLINE_BLOCK
                and total + len(b) <= MAX_INLINE_BYTES):
            del blocks[c]
            out.append(b)
            total += len(b)

    for op in ops:
        v = op[2]
        if type(v) is CID:
            take(v)
        elif type(v) is dict:
            for x in v.values():
                if type(x) is CID:
                    take(x)
    if rest:
        for c in list(blocks):
            take(c)
    return out


def _verify_signed(obj: dict[str, Any]) -> None:
    sig = obj.get("s")
    unsigned = {k: v for k, v in obj.items() if k != "s"}
    if not verify_signature(obj["a"], sig, codec.encode(unsigned)):
        raise BadSignature(f"{obj['t']} signature does not verify")


def _expect(obj: Any, tag: str, fields: set[str], version: int = 1) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _fail("record must be a map")
    if obj.get("t") != tag:
        raise _fail(f"expected record type {tag!r}, got {obj.get('t')!r}")
    if obj.get("v") != version:
        raise _fail(f"unsupported {tag} version {obj.get('v')!r}")
    if set(obj) != fields:
        raise _fail(f"{tag} fields must be {sorted(fields)}, got {sorted(obj)}")
    return obj


def _cid_list(value: Any, what: str, limit: int) -> tuple[CID, ...]:
    if type(value) is not list or len(value) > limit:
        raise _fail(f"{what} must be a list of at most {limit} CIDs")
    if any(type(c) is not CID for c in value):
        raise _fail(f"{what} must hold only links")
    if value != sorted(set(value)):
        raise _fail(f"{what} must be sorted and unique")
    return tuple(value)


_DELTA_FIELDS = {"t", "v", "g", "p", "h", "ops", "a", "s"}
_DELTA_V2_FIELDS = _DELTA_FIELDS | {"b"}


def delta_from_untrusted(cid: CID, data: bytes, *, verify: bool = True) -> Delta:
    """Decode and verify a delta block offered under ``cid``.

    Raises:
        BadBlock / BadEncoding / BadRecord / BadSignature: on any defect.
    """
    if not cid.verify(data):
        from .errors import BadBlock

        raise BadBlock(f"block does not hash to {cid}")
    if cid.codec != DAG_CBOR:
        raise BadEncoding("delta must be a dag-cbor block")
    obj = codec.decode_untrusted(data)
    v2 = type(obj) is dict and obj.get("v") == 2
    obj = _expect(obj, "goho/delta", _DELTA_V2_FIELDS if v2 else _DELTA_FIELDS, 2 if v2 else 1)
    delta = _delta_fields(cid, obj, verify)
    if not v2:
        return delta
    return Delta(delta.cid, delta.genesis, delta.parents, delta.height, delta.ops, delta.author,
                 _check_inline(obj["b"]))


def _check_inline(blocks: Any) -> tuple[bytes, ...]:
    if type(blocks) is not list or not blocks:
        raise _fail("delta inline blocks must be a non-empty list")
    total = 0
    for b in blocks:
        if type(b) is not bytes or not b or len(b) > MAX_INLINE_BLOCK:
            raise _fail(f"each inline block must be 1 to {MAX_INLINE_BLOCK} bytes")
        total += len(b)
    if total > MAX_INLINE_BYTES:
        raise _fail(f"inline blocks exceed {MAX_INLINE_BYTES} bytes")
    return tuple(blocks)


def delta_from_trusted(cid: CID, data: bytes) -> Delta:
    """Decode a delta read back from our own store (verified when it entered).

    Its inline blocks are left out: they went into the store beside it.
    """
    obj = codec.decode_trusted(data)
    return Delta(cid, obj["g"], tuple(obj["p"]), obj["h"], obj["ops"], obj["a"])


def _delta_fields(cid: CID, obj: dict[str, Any], verify: bool) -> Delta:
    if type(obj["g"]) is not CID:
        raise _fail("delta genesis must be a link")
    parents = _cid_list(obj["p"], "delta parents", MAX_PARENTS)
    h = obj["h"]
    if type(h) is not int or h < 1 or h > 2**53:
        raise _fail("delta height must be a positive integer")
    if (h == 1) != (not parents):
        raise _fail("delta height 1 iff it has no parents")
    if type(obj["a"]) is not bytes or len(obj["a"]) != 32:
        raise _fail("delta author must be a 32-byte Ed25519 key")
    ops = _check_ops_untrusted(obj["ops"])
    if verify:
        _verify_signed(obj)
    return Delta(cid, obj["g"], parents, h, ops, obj["a"])


#: The block records this module decodes, with the version it understands.
_RECORD_TYPES = frozenset({"goho/genesis", "goho/delta", "goho/snapshot", "goho/snapshot-part"})
_RECORD_VERSION = 1
_RECORD_VERSIONS = {"goho/delta": (1, 2)}


def record_type_untrusted(data: bytes) -> str:
    """The ``t`` tag of a GOHO block record (to route it to its decoder).

    Only the tag and version are checked: the record's own decoder
    (:func:`delta_from_untrusted`, ...) checks its fields.  Any other tagged
    map (an HPCP message, a meshd record, a future version) is refused here,
    so a caller never routes a block this module cannot decode.

    Raises:
        BadEncoding: ``data`` is not canonical DAG-CBOR.
        BadRecord: not a map tagged with a known record type and version.
    """
    obj = codec.decode_untrusted(data)
    if type(obj) is not dict or type(obj.get("t")) is not str:
        raise _fail("block is not a tagged record")
    if obj["t"] not in _RECORD_TYPES:
        raise _fail(f"{obj['t'][:40]!r} is not a GOHO block record")
    if type(obj.get("v")) is not int or obj["v"] not in _RECORD_VERSIONS.get(obj["t"], (_RECORD_VERSION,)):
        raise _fail(f"unsupported {obj['t']} version")
    return obj["t"]


# --- snapshots -------------------------------------------------------------

_SNAP_FIELDS = {"t", "v", "g", "covers", "h", "parts", "a", "s"}
_PART_FIELDS = {"t", "v", "adds", "puts"}


def sign_snapshot(
    signer: Signer, genesis: CID, covers: list[CID], height: int, parts: list[CID]
) -> tuple[CID, bytes]:
    body = {
        "t": "goho/snapshot",
        "v": 1,
        "g": genesis,
        "covers": sorted(covers),
        "h": height,
        "parts": parts,
        "a": signer.public,
    }
    body["s"] = signer.sign(codec.encode(body))
    return codec.encode_block(body)


def snapshot_from_untrusted(cid: CID, data: bytes) -> Snapshot:
    if not cid.verify(data):
        from .errors import BadBlock

        raise BadBlock(f"block does not hash to {cid}")
    obj = _expect(codec.decode_untrusted(data), "goho/snapshot", _SNAP_FIELDS)
    if type(obj["g"]) is not CID:
        raise _fail("snapshot genesis must be a link")
    covers = _cid_list(obj["covers"], "snapshot covers", MAX_PARENTS)
    parts = obj["parts"]
    if type(parts) is not list or any(type(c) is not CID for c in parts):
        raise _fail("snapshot parts must be a list of links")
    if type(obj["h"]) is not int or obj["h"] < 0:
        raise _fail("snapshot height must be a non-negative integer")
    if type(obj["a"]) is not bytes or len(obj["a"]) != 32:
        raise _fail("snapshot author must be a 32-byte key")
    _verify_signed(obj)
    return Snapshot(cid, obj["g"], covers, obj["h"], tuple(parts), obj["a"])


def part_from_untrusted(cid: CID, data: bytes) -> dict[str, Any]:
    if not cid.verify(data):
        from .errors import BadBlock

        raise BadBlock(f"block does not hash to {cid}")
    obj = _expect(codec.decode_untrusted(data), "goho/snapshot-part", _PART_FIELDS)
    adds, puts = obj["adds"], obj["puts"]
    if type(adds) is not list or type(puts) is not list:
        raise _fail("snapshot part adds/puts must be lists")
    for entry in adds:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or type(entry[1]) is not list:
            raise _fail("snapshot part add entries must be [key, [values]]")
    for entry in puts:
        if (
            type(entry) is not list
            or len(entry) != 5
            or type(entry[0]) is not str
            or type(entry[1]) is not int
            or type(entry[2]) is not CID
            or type(entry[3]) is not int
        ):
            raise _fail("snapshot part put entries must be [key, h, delta, i, value]")
    return obj
