"""Strict DAG-CBOR: the block encoding of every lattice record.

DAG-CBOR is CBOR with one canonical form: map keys are strings sorted by
(encoded length, bytes); integers use the shortest head; floats are always
64-bit; the only tag is 42 (a CID link, encoded as bytes ``0x00 || cid``);
NaN, infinities, ``undefined`` and indefinite lengths are not allowed.

Why not only the ``dag-cbor`` package: it encodes about 3,000 small dicts per
second here, and the daemon hashes every task, assignment and result.  Here
cbor2's C encoder writes the bytes (in non-canonical mode it always writes
float64, which is what DAG-CBOR wants) and links through a hook that writes
their bytes directly.  A Python walk checks the value and whether its maps are
already in key order, as values decoded from canonical bytes are; only the
maps that are not get rebuilt sorted.  (cbor2's own ``canonical=True`` sorts in C,
but shrinks floats and measured slower than this.)  ``tests/test_codec_matches_reference.py`` pins byte-for-byte equality with
``dag-cbor`` on committed vectors.

Strict decoding re-encodes the decoded value and compares bytes: any
non-canonical input (unsorted or duplicate keys, long integer heads, short
floats, indefinite lengths, trailing bytes) then fails to round-trip.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2

from .cid import CID, DAG_CBOR
from .errors import BadEncoding

#: Largest block the untrusted decoder accepts by default (bytes).
MAX_BLOCK_SIZE = 4 * 1024 * 1024
#: Deepest nesting the untrusted decoder accepts.
MAX_DEPTH = 64

_Tag = cbor2.CBORTag


def _keyfn(key: str) -> tuple[int, bytes]:
    b = key.encode("utf-8")
    return (len(b), b)


def _canon(obj: Any, depth: int) -> Any:
    """``obj`` itself when it is a DAG-CBOR value already in canonical form,
    else a copy with the maps that are out of key order sorted (and tuples,
    bytearrays and memoryviews made lists and bytes).

    Raises :class:`BadEncoding` for what cannot be encoded.  Why check before
    rebuilding: most values meshd encodes were decoded from canonical bytes
    (a delta whose signature is checked, a set element being indexed) or are
    small maps already in order, and walking them costs a fraction of
    rebuilding every map sorted; a value with one unsorted map deep inside is
    copied along that path only.
    """
    if depth > MAX_DEPTH:
        raise BadEncoding("nesting too deep")
    t = type(obj)
    if t is dict:
        unsorted = False
        prev = ""
        prev_len = -1
        new: dict[str, Any] | None = None  # values that changed
        for k, v in obj.items():
            if type(k) is not str:
                raise BadEncoding(f"map keys must be strings, got {type(k).__name__}")
            if not unsorted:
                n = len(k)
                if k.isascii() and prev.isascii():  # character length is byte length
                    unsorted = n < prev_len or (n == prev_len and k <= prev)
                elif prev_len >= 0:
                    unsorted = _keyfn(k) <= _keyfn(prev)
                prev, prev_len = k, n
            tv = type(v)
            if tv is str or tv is bytes or tv is CID or tv is bool or v is None:
                continue
            if tv is int or tv is float:
                _scalar(v, tv)
                continue
            w = _canon(v, depth + 1)
            if w is not v:
                if new is None:
                    new = {}
                new[k] = w
        if not unsorted and new is None:
            return obj
        items = list(obj.items()) if new is None else [(k, new.get(k, v)) for k, v in obj.items()]
        if unsorted:
            if all(k.isascii() for k, _ in items):
                items.sort(key=lambda kv: (len(kv[0]), kv[0]))
            else:
                items.sort(key=lambda kv: _keyfn(kv[0]))
        return dict(items)
    if t is list or t is tuple:
        out: list[Any] | None = None
        for i, v in enumerate(obj):
            # The dict branch's step per value, inlined in both on purpose: a
            # call per value is what this walk exists to save on leaves.
            tv = type(v)
            if tv is str or tv is bytes or tv is CID or tv is bool or v is None:
                continue
            if tv is int or tv is float:
                _scalar(v, tv)
                continue
            w = _canon(v, depth + 1)
            if w is not v:
                if out is None:
                    out = list(obj)
                out[i] = w
        if out is not None:
            return out
        return obj if t is list else list(obj)
    if t is str or t is bytes or t is CID or t is bool or obj is None:
        return obj
    if t is int or t is float:
        _scalar(obj, t)
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise BadEncoding(f"type {t.__name__} cannot be encoded as DAG-CBOR")


def _scalar(v: Any, t: type) -> None:
    # An int (64-bit) or a float (finite).
    if t is int:
        if not (-(2**64) <= v < 2**64):
            raise BadEncoding("integer out of 64-bit range")
    elif not math.isfinite(v):
        raise BadEncoding("NaN and infinities are not allowed in DAG-CBOR")


#: Tag 42, a 37-byte byte string, the multibase identity prefix 0x00: the
#: head of every link (binary CIDs are always 36 bytes, :mod:`lattice.cid`).
_LINK_HEAD = b"\xd8\x2a\x58\x25\x00"


def _write_link(encoder: Any, value: Any) -> None:
    # cbor2's C encoder calls this for types it does not know: only CIDs may
    # reach it (_canon rejects the rest).  Writing the link's bytes
    # directly costs a third of building a CBORTag for it.
    if type(value) is CID and len(value.raw) == 36:
        encoder.write(_LINK_HEAD + value.raw)
        return
    if type(value) is CID:
        encoder.encode(_Tag(42, b"\x00" + value.raw))
        return
    raise BadEncoding(f"type {type(value).__name__} cannot be encoded as DAG-CBOR")


def encode(obj: Any) -> bytes:
    """Encode ``obj`` as canonical DAG-CBOR.

    Accepts dict (str keys), list/tuple, str, bytes, int (64-bit), finite float,
    bool, None and :class:`CID`.  Raises :class:`BadEncoding` for anything else.
    """
    return _dumps(_canon(obj, 0))


def canonical(obj: Any) -> Any:
    """``obj`` in canonical form (itself when it is): encoding the result
    again walks it without copying.  Raises :class:`BadEncoding`."""
    return _canon(obj, 0)


def _dumps(value: Any) -> bytes:
    try:
        return cbor2.dumps(value, default=_write_link)
    except UnicodeEncodeError:
        raise BadEncoding("strings must be valid UTF-8 (no lone surrogates)") from None


def encode_block(obj: Any) -> tuple[CID, bytes]:
    """Encode ``obj`` and return ``(cid, bytes)`` for a dag-cbor block."""
    data = _dumps(_canon(obj, 0))
    return CID.for_block(DAG_CBOR, data), data


def cid_of(obj: Any) -> CID:
    """The dag-cbor CID of ``obj`` (the fast path: encode + sha2-256)."""
    return CID.for_block(DAG_CBOR, encode(obj))


def _tag_hook(tag: cbor2.CBORTag, immutable: bool = False) -> Any:
    # cbor2 6 calls tag_hook(tag, immutable) for tags it has no decoder for.
    raise BadEncoding(f"tag {tag.tag} is not allowed in DAG-CBOR")


_CID_CODECS = frozenset({0x71, 0x55, 0x70})  # lattice.cid's codecs: dag-cbor, raw, dag-pb


def _link(value: Any, immutable: bool = False) -> CID:
    # The one CID shape meshd supports (CIDv1, sha2-256) is checked inline:
    # cbor2 calls this once per link, and the general parser was half the
    # cost of decoding a delta.  Anything else goes to it for the reason.
    if (type(value) is bytes and len(value) == 37 and value[0] == 0 and value[1] == 1
            and value[3] == 0x12 and value[4] == 32 and value[2] in _CID_CODECS):
        return CID(value[1:])
    if type(value) is not bytes or len(value) < 2 or value[0] != 0:
        raise BadEncoding("tag 42 must hold bytes 0x00 || binary CID")
    return CID.from_bytes_untrusted(value[1:])


_SEMANTIC = {42: _link}


def decode_untrusted(data: bytes, *, max_size: int = MAX_BLOCK_SIZE) -> Any:
    """Decode strict, canonical DAG-CBOR bytes from an untrusted source.

    Raises:
        BadEncoding: for anything that is not exactly the canonical encoding of
            a DAG-CBOR value (including oversize input).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadEncoding("block data must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise BadEncoding(f"block of {len(data)} bytes exceeds the {max_size}-byte limit")
    if not data:
        raise BadEncoding("empty input")
    try:
        obj = cbor2.loads(data, tag_hook=_tag_hook, semantic_decoders=_SEMANTIC, max_depth=MAX_DEPTH + 2)
        if _canon(obj, 0) is not obj:  # cbor2 decodes no tuples: the keys are out of order
            raise BadEncoding("input is not canonical DAG-CBOR (map keys out of order)")
        again = cbor2.dumps(obj, default=_write_link)
    except BadEncoding:
        raise
    except RecursionError:
        raise BadEncoding("nesting too deep") from None
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise BadEncoding(f"invalid CBOR: {exc.__class__.__name__}: {exc}") from None
    if again != data:
        raise BadEncoding("input is not canonical DAG-CBOR")
    return obj


def decode_trusted(data: bytes) -> Any:
    """Decode bytes that this process wrote or already verified (no checks).

    Used on blocks read back from our own store: their CID was verified when
    they entered it, so the canonical-form check would be redundant work.
    """
    return cbor2.loads(data, tag_hook=_tag_hook, semantic_decoders=_SEMANTIC)


def to_json(obj: Any) -> Any:
    """Convert a decoded value to JSON-compatible form (CIDs as ``{"/": ...}``).

    Bytes become ``{"/": {"bytes": <base64>}}`` as in DAG-JSON.
    """
    import base64

    t = type(obj)
    if t is dict:
        return {k: to_json(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [to_json(v) for v in obj]
    if t is CID:
        return {"/": str(obj)}
    if t is bytes:
        return {"/": {"bytes": base64.b64encode(obj).decode().rstrip("=")}}
    return obj


def from_json(obj: Any) -> Any:
    """Inverse of :func:`to_json` for JSON from users: ``{"/": "bafy…"}`` → CID.

    Raises :class:`~lattice.errors.BadCID` for a malformed link.
    """
    import base64

    t = type(obj)
    if t is dict:
        if len(obj) == 1 and "/" in obj:
            link = obj["/"]
            if isinstance(link, str):
                return CID.parse_untrusted(link)
            if isinstance(link, dict) and set(link) == {"bytes"} and isinstance(link["bytes"], str):
                s = link["bytes"]
                try:
                    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
                except ValueError:
                    raise BadEncoding("invalid base64 in bytes link") from None
        return {k: from_json(v) for k, v in obj.items()}
    if t is list:
        return [from_json(v) for v in obj]
    return obj
