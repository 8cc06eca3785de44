"""The lattice package's one exception tree.

Every error raised by ``lattice`` derives from :class:`LatticeError`.  Functions
that decode bytes from a peer or the API end in ``_untrusted`` and raise only
subclasses of :class:`BadInput`, so callers can catch one class at the boundary
and count the rejection.
"""

from __future__ import annotations


class LatticeError(Exception):
    """Base class of every error raised by the lattice package."""


class DatasetTooLarge(LatticeError, ValueError):
    """A dataset read would walk more keys than its budget (a ValueError, like a bad path)."""


class BadInput(LatticeError):
    """Untrusted input was rejected; the message says why."""


class BadCID(BadInput):
    """A CID string or byte form is malformed or uses an unsupported codec/hash."""


class BadEncoding(BadInput):
    """Bytes are not strict, canonical DAG-CBOR (or not the expected shape)."""


class BadUnixFS(BadEncoding):
    """A dag-pb block or DAG is not a UnixFS file meshd reads, or exceeds the walk's limits."""


class BadBlock(BadInput):
    """A block's bytes do not hash to the CID it was offered under."""


class BadRecord(BadInput):
    """A decoded record has the wrong type tag, version or fields."""


class BadHeight(BadRecord):
    """A delta's height is not exactly one more than its highest parent's."""


class TooManyPending(BadRecord):
    """A delta would wait for its parents beyond the replica's pending caps."""


class BadSignature(BadInput):
    """A record's Ed25519 signature does not verify against its author."""


class BadMessage(BadInput):
    """An HPCP message is malformed, stale, replayed or otherwise refused."""


class BlockNotFound(LatticeError, KeyError):
    """The block store does not hold the requested CID."""


class CorruptBlock(BlockNotFound):
    """A stored block's bytes no longer hash to its CID; treat it as missing and refetch."""


class StoreError(LatticeError):
    """The block store failed for a reason other than a missing block."""

