"""Snapshots of a GOHO: the blocks that encode a state, and the checks on the heads one covers.

A snapshot lets a fresh replica start from a signed state instead of
fetching every delta (its two block records are in :mod:`lattice.records`).
:meth:`lattice.goho.Replica.install_snapshot` adopts one, which is the
replica's DAG bookkeeping; what does not touch that bookkeeping is here:
encoding a state into parts and a signed root, and checking what a snapshot
claims of the deltas it covers.  It is apart so that the replica module stays
about the DAG.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from . import codec, records
from .cid import CID
from .errors import BadRecord, BlockNotFound
from .records import Delta, Snapshot
from .signing import Signer
from .state import State, decode_value


class _Blocks(Protocol):
    def get(self, cid: CID) -> bytes: ...


def snapshot_blocks(state: State, signer: Signer, genesis: CID, heads: list[CID], height: int, *,
                    part_entries: int = 20_000) -> list[tuple[CID, bytes]]:
    """Blocks of a signed snapshot of ``state`` at ``heads`` and ``height``; the last is the root.

    Each part holds about ``part_entries`` entries (set members and registers together).
    """
    blocks: list[tuple[CID, bytes]] = []
    parts: list[CID] = []
    adds: list[list[Any]] = []
    puts: list[list[Any]] = []
    n = 0

    def flush() -> None:
        nonlocal adds, puts, n
        if not adds and not puts:
            return
        blk = codec.encode_block({"t": "goho/snapshot-part", "v": 1, "adds": adds, "puts": puts})
        blocks.append(blk)
        parts.append(blk[0])
        adds, puts, n = [], [], 0

    for key in state.set_keys():
        chunk: list[Any] = []
        for enc in sorted(state.encoded_members(key)):
            chunk.append(decode_value(enc))
            n += 1
            if n >= part_entries:
                adds.append([key, chunk])
                chunk = []
                flush()
        if chunk:
            adds.append([key, chunk])
    for key in state.register_keys():
        p = state.register_entry(key)
        assert p is not None
        puts.append([key, p.height, CID(p.delta), p.index, decode_value(p.value)])
        n += 1
        if n >= part_entries:
            flush()
    flush()
    root = records.sign_snapshot(signer, genesis, heads, height, parts)
    blocks.append(root)
    return blocks


def cover_heights(snap: Snapshot, covers: Iterable[Delta] | None, genesis: CID, store: _Blocks) -> dict[CID, int]:
    """The height of each head ``snap`` covers, from the verified ``covers`` or else from ``store``.

    Without ``covers`` (a replica reopened from its own store) a covered head
    missing from ``store`` takes the snapshot's height.

    Raises:
        BadRecord: ``covers`` do not match ``snap.covers`` or ``snap.height``,
            or one belongs to another object.
    """
    if covers is None:
        out = {}
        for c in snap.covers:
            try:
                out[c] = records.delta_from_trusted(c, store.get(c)).height
            except BlockNotFound:
                out[c] = snap.height
        return out
    covers = list(covers)
    out = {d.cid: d.height for d in covers}
    if sorted(out) != sorted(snap.covers):
        raise BadRecord("snapshot covers do not match the deltas given")
    if any(d.genesis != genesis for d in covers):
        raise BadRecord("a covered delta belongs to another object")
    if snap.covers and max(out.values()) != snap.height:
        raise BadRecord("snapshot height is not its highest covered delta's")
    return out
