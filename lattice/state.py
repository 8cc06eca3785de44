"""The materialized state of a GOHO: grow-only sets and registers under keys.

This module knows nothing of deltas, heads or the DAG (go-ds-crdt keeps its
``set.go`` apart the same way).  It answers membership, counts and iteration
directly, so no query walks the DAG.

Representation, chosen for memory (the 1,000,000-entry benchmark): each set
element is kept as its canonical DAG-CBOR encoding, one ``bytes`` object in a
Python ``set``.  Equal values have equal encodings, so set semantics are exact;
values are decoded only when read.

Registers (``put``) keep only the winning write: the greatest
``(height, delta CID bytes, op index)``.  That order is total and every replica
sees the same candidates, so every replica picks the same winner whatever the
order of arrival.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import codec
from .cid import CID

_LINK_PREFIX = b"\xd8\x2a\x58\x25\x00"


def encode_value(value: Any) -> bytes:
    """Canonical encoding of one element (fast path for links)."""
    if type(value) is CID:
        return _LINK_PREFIX + value.raw
    return codec.encode(value)


def decode_value(data: bytes) -> Any:
    if len(data) == 41 and data[:5] == _LINK_PREFIX:
        return CID(data[5:])
    return codec.decode_trusted(data)


@dataclass(frozen=True, slots=True)
class Put:
    """A register write, ordered by (height, delta, index)."""

    height: int
    delta: bytes
    index: int
    value: bytes  # encoded

    def order(self) -> tuple[int, bytes, int]:
        return (self.height, self.delta, self.index)


@dataclass(frozen=True, slots=True)
class StateStatistics:
    keys: int
    elements: int
    registers: int


class State:
    """Grow-only sets and last-writer registers, keyed by string."""

    __slots__ = ("_sets", "_regs", "_elements")

    def __init__(self) -> None:
        self._sets: dict[str, set[bytes]] = {}
        self._regs: dict[str, Put] = {}
        self._elements = 0

    # -- writes (called by the replica; idempotent) --------------------------

    def add_encoded(self, key: str, value: bytes) -> bool:
        """Add one encoded element; True when it was new."""
        s = self._sets.get(key)
        if s is None:
            s = self._sets[key] = set()
        if value in s:
            return False
        s.add(value)
        self._elements += 1
        return True

    def put_encoded(self, key: str, put: Put) -> bool:
        """Offer a register write; True when it became the winner."""
        cur = self._regs.get(key)
        if cur is not None and cur.order() >= put.order():
            return False
        self._regs[key] = put
        return True

    # -- reads ----------------------------------------------------------------

    def contains(self, key: str, value: Any) -> bool:
        s = self._sets.get(key)
        return s is not None and encode_value(value) in s

    def count(self, key: str) -> int:
        s = self._sets.get(key)
        return len(s) if s else 0

    def members(self, key: str) -> Iterator[Any]:
        """Decoded elements of set ``key`` in no particular order."""
        for data in self._sets.get(key, ()):
            yield decode_value(data)

    def members_sorted(self, key: str) -> list[Any]:
        """Decoded elements in canonical (encoded-bytes) order: deterministic."""
        return [decode_value(d) for d in sorted(self._sets.get(key, ()))]

    def encoded_members(self, key: str) -> set[bytes]:
        return self._sets.get(key, set())

    def register(self, key: str) -> Any | None:
        put = self._regs.get(key)
        return None if put is None else decode_value(put.value)

    def register_entry(self, key: str) -> Put | None:
        return self._regs.get(key)

    def keys(self) -> list[str]:
        return sorted(set(self._sets) | set(self._regs))

    def set_keys(self) -> list[str]:
        return sorted(self._sets)

    def register_keys(self) -> list[str]:
        return sorted(self._regs)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and self._sets == other._sets
            and {k: p.order() + (p.value,) for k, p in self._regs.items()}
            == {k: p.order() + (p.value,) for k, p in other._regs.items()}
        )

    def statistics(self) -> StateStatistics:
        return StateStatistics(len(self._sets), self._elements, len(self._regs))
