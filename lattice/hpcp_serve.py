"""Serving HPCP blocks from the store: answers to wants, and the links a walk needs.

Kept apart from :mod:`lattice.hpcp`, whose :class:`~lattice.hpcp.Syncer`
decides what to want and applies what arrives: this module only reads
blocks we hold and picks which to send (:func:`serve_want`, with ancestors
breadth first down to the asker's ``have``), and keeps the parents and
author of recently sent deltas, which the syncer's pushes walk too.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import codec
from .cid import CID
from .errors import BlockNotFound
from .goho import BlockSource
from .hpcp_messages import encode_blocks

__all__ = ["serve_want"]


def serve_want(store: BlockSource, cids: Iterable[CID], max_bytes: int, *, ancestors: int = 256,
               have: Iterable[CID] = ()) -> bytes:
    """Answer a want from ``store``: the blocks we have (up to ``max_bytes``).

    Besides the CIDs asked for, the answer carries up to ``ancestors`` of
    their ancestor deltas (breadth first), so a peer walking a long history
    down from its heads needs one round trip per batch rather than one per
    delta.  The walk stops at the asker's ``have`` (its heads: it holds them
    and all their ancestors), so a peer one delta behind gets one delta, not
    256 it already holds (which cost both ends a hash and a decode each).
    Blocks that did not fit are simply left out: the asker asks again.
    """
    blocks: list[tuple[CID, bytes]] = []
    missing: list[CID] = []
    sent: set[CID] = set(have)
    total = 0
    queue: list[CID] = []
    for cid in cids:
        if cid in sent:
            continue
        try:
            data = store.get(cid)
        except BlockNotFound:
            missing.append(cid)
            continue
        if blocks and total + len(data) > max_bytes:
            continue
        blocks.append((cid, data))
        sent.add(cid)
        total += len(data)
        queue.append(cid)
    extra = 0
    while queue and extra < ancestors:
        cid = queue.pop(0)
        parents = known[0] if (known := _LINKS.get(cid.raw)) is not None else None
        if parents is None:
            data = dict(blocks).get(cid) if len(blocks) < 64 else None
            if data is None:
                try:
                    data = store.get(cid)
                except BlockNotFound:
                    continue
            parents = _delta_parents(data, cid)
        for p in parents:
            if p in sent or extra >= ancestors:
                continue
            try:
                pdata = store.get(p)
            except BlockNotFound:
                continue
            if total + len(pdata) > max_bytes:
                queue = []
                break
            blocks.append((p, pdata))
            sent.add(p)
            total += len(pdata)
            extra += 1
            queue.append(p)
    return encode_blocks(blocks, missing)


#: Parents and author of recently served or pushed blocks, by CID bytes: a
#: delta's links never change, and decoding a delta (inline blocks and all)
#: only to find them was the largest cost of answering wants.  Cleared when
#: full (bounded).
_LINKS: dict[bytes, tuple[list[CID], bytes | None]] = {}
_LINKS_KEPT = 65_536


def _delta_links(data: bytes, cid: CID | None = None) -> tuple[list[CID], bytes | None]:
    """Parent links and author of a stored delta block (``([], None)`` for any other block)."""
    if cid is not None and (known := _LINKS.get(cid.raw)) is not None:
        return known
    try:
        obj = codec.decode_trusted(data)
    except Exception:  # noqa: BLE001 - not a delta: no ancestors to add
        obj = None
    links: tuple[list[CID], bytes | None] = ([], None)
    if type(obj) is dict and obj.get("t") == "goho/delta" and type(obj.get("p")) is list:
        author = obj.get("a")
        links = ([c for c in obj["p"] if type(c) is CID], author if type(author) is bytes else None)
    if cid is not None:
        if len(_LINKS) >= _LINKS_KEPT:
            _LINKS.clear()
        _LINKS[cid.raw] = links
    return links


def _delta_parents(data: bytes, cid: CID | None = None) -> list[CID]:
    """Parent links of a stored delta block (empty for any other block)."""
    return _delta_links(data, cid)[0]
