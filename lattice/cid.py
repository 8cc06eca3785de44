"""Content identifiers: CIDv1 with sha2-256, codecs dag-cbor (0x71), raw (0x55) and dag-pb (0x70).

A :class:`CID` is an immutable value holding its binary form.  It prints as
lower-case base32 (``bafy…``, multibase prefix ``b``) and parses base32 or
base58btc (``zdpu…``, the form in the Computes whitepaper).

Why hand-written rather than ``multiformats.CID``: that class costs tens of
microseconds per construction, which alone would cap the block fast path far
below the 50,000 CIDs/s goal.  This module supports exactly the codecs and
the one hash meshd uses (dag-pb only for UnixFS files, :mod:`lattice.unixfs`),
and ``tests/test_codec_matches_reference.py`` checks it byte-for-byte against
``multiformats``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from .errors import BadCID

DAG_CBOR: Final = 0x71
RAW: Final = 0x55
DAG_PB: Final = 0x70
SHA2_256: Final = 0x12
_CODECS: Final = frozenset({DAG_CBOR, RAW, DAG_PB})

# Binary CIDv1 for our codecs: version(0x01) codec(1 byte varint, all < 0x80)
# multihash(code 0x12, length 0x20, 32-byte digest) -> always 36 bytes.
_LEN: Final = 36

_B58_ALPHABET: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


# Base32 of a 36-byte CID, ten bits (two characters) at a time: 288 bits and
# two zero bits of padding make 58 characters.  Hand-written because
# base64.b32encode/b32decode are pure Python and cost 10-17 us per CID; a
# daemon prints and parses CIDs in every API answer and log line.  Other
# lengths take the base64 module's path, which also words the errors.
_B32_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS: Final = tuple(a + b for a in _B32_ALPHABET for b in _B32_ALPHABET)
_B32_PAIR_VALUE: Final = {p: i for i, p in enumerate(_B32_PAIRS)}
_B32_SHIFTS: Final = tuple(range(280, -1, -10))
_B32_CHARS: Final = 58


def _b32_fast(raw: bytes) -> str:
    n = int.from_bytes(raw, "big") << 2
    pairs = _B32_PAIRS
    return "b" + "".join([pairs[(n >> s) & 1023] for s in _B32_SHIFTS])


def _b32_parse_fast(body: str) -> bytes | None:
    """The 36 bytes ``body`` spells canonically, or None (then the slow path decides)."""
    n = 0
    value = _B32_PAIR_VALUE
    try:
        for i in range(0, _B32_CHARS, 2):
            n = (n << 10) | value[body[i:i + 2]]
    except KeyError:
        return None
    if n & 3:
        return None
    return (n >> 2).to_bytes(_LEN, "big")


def _b58decode(text: str) -> bytes:
    # Hand-written: base58btc is ~10 lines and we only decode 36-byte values;
    # pulling the multibase registry in for it would slow every parse.
    num = 0
    for ch in text.encode("ascii"):
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise BadCID(f"invalid base58btc character {chr(ch)!r}") from None
    pad = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\x00" * pad + body


def _b58encode(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = bytearray()
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


class CID:
    """A CIDv1 (sha2-256) for a dag-cbor, raw or dag-pb block.

    Instances are hashable, totally ordered by their binary form, and cheap:
    one ``bytes`` attribute.  Build them with :meth:`for_block`,
    :meth:`from_bytes_untrusted` or :meth:`parse_untrusted`.
    """

    __slots__ = ("raw",)

    raw: bytes

    def __init__(self, raw: bytes) -> None:
        # Trusted constructor: callers pass a binary CID they built or checked.
        object.__setattr__(self, "raw", raw)

    def __setattr__(self, name: str, value: object) -> None:  # pragma: no cover
        raise AttributeError("CID is immutable")

    @classmethod
    def for_block(cls, codec: int, data: bytes) -> "CID":
        """The CID of ``data`` under ``codec`` (DAG_CBOR, RAW or DAG_PB)."""
        return cls(b"\x01" + bytes((codec, SHA2_256, 32)) + hashlib.sha256(data).digest())

    @classmethod
    def from_digest(cls, codec: int, digest: bytes) -> "CID":
        return cls(b"\x01" + bytes((codec, SHA2_256, 32)) + digest)

    @classmethod
    def from_bytes_untrusted(cls, raw: bytes) -> "CID":
        """Parse a binary CIDv1; raise :class:`BadCID` unless it is one we support."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise BadCID("CID bytes must be bytes")
        raw = bytes(raw)
        if len(raw) != _LEN:
            raise BadCID(f"binary CID must be {_LEN} bytes, got {len(raw)}")
        if raw[0] != 0x01:
            raise BadCID(f"unsupported CID version {raw[0]}")
        if raw[1] not in _CODECS:
            raise BadCID(f"unsupported codec 0x{raw[1]:x}")
        if raw[2] != SHA2_256 or raw[3] != 32:
            raise BadCID("unsupported multihash (need sha2-256/32)")
        return cls(raw)

    @classmethod
    def parse_untrusted(cls, text: object) -> "CID":
        """Parse a multibase CID string: base32 (``b…``) or base58btc (``z…``)."""
        if isinstance(text, CID):
            return text
        if not isinstance(text, str) or len(text) < 2 or len(text) > 128:
            raise BadCID("CID must be a string of 2..128 characters")
        prefix, body = text[0], text[1:]
        if prefix == "b" and len(body) == _B32_CHARS:
            raw = _b32_parse_fast(body)
            if raw is not None:
                return cls.from_bytes_untrusted(raw)
        if prefix == "b":
            if body != body.lower() or not body.isascii():
                raise BadCID("base32 CID must be lower-case ASCII")
            padded = body.upper() + "=" * (-len(body) % 8)
            try:
                raw = base64.b32decode(padded)
            except ValueError as exc:
                raise BadCID(f"invalid base32: {exc}") from None
            cid = cls.from_bytes_untrusted(raw)
            if str(cid) != text:
                raise BadCID("non-canonical base32 CID")
            return cid
        if prefix == "z":
            # _b58decode encodes to ASCII; a non-ASCII body must be BadCID, not UnicodeEncodeError.
            if not body.isascii():
                raise BadCID("base58btc CID must be ASCII")
            return cls.from_bytes_untrusted(_b58decode(body))
        raise BadCID(f"unsupported multibase prefix {prefix!r} (use 'b' base32 or 'z' base58btc)")

    @property
    def codec(self) -> int:
        return self.raw[1]

    @property
    def digest(self) -> bytes:
        return self.raw[4:]

    def verify(self, data: bytes) -> bool:
        """True when ``data`` hashes to this CID's digest."""
        return hashlib.sha256(data).digest() == self.raw[4:]

    def encode(self, base: str = "base32") -> str:
        if base == "base32":
            return str(self)
        if base == "base58btc":
            return "z" + _b58encode(self.raw)
        raise ValueError(f"unknown base {base!r}")

    def __str__(self) -> str:
        if len(self.raw) == _LEN:
            return _b32_fast(self.raw)
        return "b" + base64.b32encode(self.raw).decode("ascii").rstrip("=").lower()

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other.raw == self.raw

    def __lt__(self, other: "CID") -> bool:
        return self.raw < other.raw

    def __le__(self, other: "CID") -> bool:
        return self.raw <= other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __reduce__(self):
        return (CID, (self.raw,))

    def to_json(self) -> dict[str, str]:
        """The DAG-JSON link form ``{"/": "bafy…"}``."""
        return {"/": str(self)}
