"""Strict DAG-CBOR: the block encoding of every lattice record.

DAG-CBOR is CBOR with one canonical form: map keys are strings sorted by
(encoded length, bytes); integers use the shortest head; floats are always
64-bit; the only tag is 42 (a CID link, encoded as bytes ``0x00 || cid``);
NaN, infinities, ``undefined`` and indefinite lengths are not allowed.

Why not only the ``dag-cbor`` package: it encodes about 3,000 small dicts per
second here, and the daemon hashes every task, assignment and result.  The fast
path below sorts maps in Python and lets cbor2's C encoder write the bytes
(cbor2 in non-canonical mode always writes float64, which is what DAG-CBOR
wants).  ``tests/test_codec_matches_reference.py`` pins byte-for-byte equality with
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


def _norm(obj: Any, depth: int) -> Any:
    """Return ``obj`` with maps in DAG-CBOR key order and CIDs as tag 42."""
    t = type(obj)
    if t is dict:
        if depth > MAX_DEPTH:
            raise BadEncoding("nesting too deep")
        for k in obj:
            if type(k) is not str:
                raise BadEncoding(f"map keys must be strings, got {type(k).__name__}")
        keys = list(obj)
        if keys and any(not k.isascii() for k in keys):
            keys.sort(key=_keyfn)
        else:
            # ASCII keys: character length equals byte length.
            keys.sort(key=lambda k: (len(k), k))
        return {k: _norm(obj[k], depth + 1) for k in keys}
    if t is str or t is int or t is bool or obj is None or t is bytes:
        if t is int and not (-(2**64) <= obj < 2**64):
            raise BadEncoding("integer out of 64-bit range")
        return obj
    if t is float:
        if not math.isfinite(obj):
            raise BadEncoding("NaN and infinities are not allowed in DAG-CBOR")
        return obj
    if t is list or t is tuple:
        if depth > MAX_DEPTH:
            raise BadEncoding("nesting too deep")
        return [_norm(v, depth + 1) for v in obj]
    if t is CID:
        return _Tag(42, b"\x00" + obj.raw)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise BadEncoding(f"type {t.__name__} cannot be encoded as DAG-CBOR")


def encode(obj: Any) -> bytes:
    """Encode ``obj`` as canonical DAG-CBOR.

    Accepts dict (str keys), list/tuple, str, bytes, int (64-bit), finite float,
    bool, None and :class:`CID`.  Raises :class:`BadEncoding` for anything else.
    """
    return _dumps(_norm(obj, 0))


def _dumps(value: Any) -> bytes:
    try:
        return cbor2.dumps(value)
    except UnicodeEncodeError:
        raise BadEncoding("strings must be valid UTF-8 (no lone surrogates)") from None


def encode_block(obj: Any) -> tuple[CID, bytes]:
    """Encode ``obj`` and return ``(cid, bytes)`` for a dag-cbor block."""
    data = _dumps(_norm(obj, 0))
    return CID.for_block(DAG_CBOR, data), data


def cid_of(obj: Any) -> CID:
    """The dag-cbor CID of ``obj`` (the fast path: encode + sha2-256)."""
    return CID.for_block(DAG_CBOR, _dumps(_norm(obj, 0)))


def _tag_hook(tag: cbor2.CBORTag, immutable: bool = False) -> Any:
    # cbor2 6 calls tag_hook(tag, immutable) for tags it has no decoder for.
    raise BadEncoding(f"tag {tag.tag} is not allowed in DAG-CBOR")


def _link(value: Any, immutable: bool = False) -> CID:
    if type(value) is not bytes or len(value) < 2 or value[0] != 0:
        raise BadEncoding("tag 42 must hold bytes 0x00 || binary CID")
    return CID.from_bytes_untrusted(value[1:])


_SEMANTIC = {42: _link}


def _check(obj: Any, depth: int) -> None:
    # Reject what cbor2 decodes through its own semantic tags or simple values
    # (datetimes, bignums, sets, undefined...).  _norm raises on those too, but
    # an explicit walk gives a clearer message and bounds depth first.
    if depth > MAX_DEPTH:
        raise BadEncoding("nesting too deep")
    t = type(obj)
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise BadEncoding("map keys must be strings")
            _check(v, depth + 1)
    elif t is list:
        for v in obj:
            _check(v, depth + 1)
    elif t in (str, int, bool, bytes, CID) or obj is None:
        return
    elif t is float:
        if not math.isfinite(obj):
            raise BadEncoding("NaN and infinities are not allowed in DAG-CBOR")
    else:
        raise BadEncoding(f"value of type {t.__name__} is not DAG-CBOR")


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
        _check(obj, 0)
        again = cbor2.dumps(_norm(obj, 0))
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
