"""Engine files: the content a manifest links, stored so that IPFS can print it.

Content up to ``CHUNK_SIZE`` bytes is one raw block whose CID is the file
CID.  Larger content is a UnixFS v1 file (:mod:`lattice.unixfs`): raw 256 KiB
leaves under dag-pb nodes, laid out as ``ipfs add --cid-version 1
--raw-leaves`` does.  Either way the file CID is the one ``ipfs add`` prints
for those bytes, and ``ipfs cat <cid>`` on an IPFS node holding the blocks
(a node of the mesh's ``[ipfs]`` store, or one that fetched them by bitswap)
prints the file.  Checkpoint state (:mod:`meshd.roles.checkpointing`) is
stored the same way.

Files written before UnixFS, a dag-cbor
``{"t": "meshd/file", "v": 1, "size": n, "chunks": [CID, ...]}`` node over raw
chunks, are still read, so engines already published keep working; nothing
writes that node any more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from lattice import unixfs
from lattice.cid import CID, DAG_CBOR, DAG_PB, RAW
from lattice.codec import decode_untrusted
from lattice.errors import BadInput, BlockNotFound

from .errors import EngineCorrupt, EngineMissing

if TYPE_CHECKING:  # pragma: no cover
    from lattice.blockstore import BlockStore

#: Tag of the pre-UnixFS chunk-list node (read, never written).
FILE_TAG: Final = "meshd/file"
#: Raw chunk size for engine files (bytes): ``ipfs add``'s default, so CIDs match IPFS's.
CHUNK_SIZE: Final = unixfs.CHUNK_SIZE
#: Largest file ``read_file`` reassembles (bytes); guards against a hostile size.
MAX_FILE_SIZE: Final = 4 * 1024 * 1024 * 1024
#: Bounds on walking a UnixFS file from a peer.
_FILE_LIMITS: Final = unixfs.ReadLimits(max_size=MAX_FILE_SIZE)
#: Blocks stored per store call while writing a large file.
_BLOCKS_PER_PUT: Final = 16


def put_file(store: "BlockStore", source: bytes | str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE) -> CID:
    """Store file content as one raw block, or as a UnixFS file when larger.

    Args:
        store: Destination block store.
        source: The bytes, or a path to read (one chunk at a time).
        chunk_size: Chunk size; content up to this size is a single raw
            block.  Only the default gives the CIDs ``ipfs add`` prints.

    Returns:
        The file CID: a raw block CID, or a UnixFS (dag-pb) root CID.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) <= chunk_size:
            cid = CID.for_block(RAW, data)
            store.put(cid, data)
            return cid
        return _put_chunks(store, (data[off:off + chunk_size] for off in range(0, len(data), chunk_size)),
                           chunk_size)
    with open(source, "rb") as f:
        head = f.read(chunk_size + 1)
        if len(head) <= chunk_size:
            cid = CID.for_block(RAW, head)
            store.put(cid, head)
            return cid

        def chunks() -> Iterable[bytes]:
            yield head
            while more := f.read(chunk_size):
                yield more

        return _put_chunks(store, chunks(), chunk_size)


def _put_chunks(store: "BlockStore", pieces: Iterable[bytes], chunk_size: int) -> CID:
    """Store a UnixFS file fed in ``pieces``; the root CID."""
    builder = unixfs.FileBuilder(chunk_size=chunk_size)
    batch: list[tuple[CID, bytes]] = []
    # Blocks leave the builder children first and go in in that order, the
    # root last: a crash leaves only blocks that nothing stored links yet.
    for piece in pieces:
        batch += builder.add(piece)
        if len(batch) >= _BLOCKS_PER_PUT:
            store.put_many(batch)
            batch = []
    root, rest = builder.finish()
    store.put_many(batch + rest)
    return root


def _file_node(store: "BlockStore", cid: CID) -> tuple[int, list[CID]]:
    try:
        data = store.get(cid)
    except BlockNotFound:
        raise EngineMissing(f"engine file {cid} is not in the local store", [cid]) from None
    try:
        node = decode_untrusted(data)
    except BadInput as exc:
        raise EngineCorrupt(f"file node {cid} is not DAG-CBOR: {exc}") from None
    if (not isinstance(node, dict) or node.get("t") != FILE_TAG or node.get("v") != 1
            or type(node.get("size")) is not int or not isinstance(node.get("chunks"), list)
            or not all(type(c) is CID and c.codec == RAW for c in node["chunks"])):
        raise EngineCorrupt(f"block {cid} is not a {FILE_TAG} v1 node")
    if not 0 <= node["size"] <= MAX_FILE_SIZE:
        raise EngineCorrupt(f"file node {cid} declares an impossible size")
    return node["size"], node["chunks"]


def missing_file_blocks(store: "BlockStore", cid: CID) -> list[CID]:
    """CIDs of ``cid``'s blocks absent from ``store``, as far as the blocks present tell.

    The root first if absent.  For a UnixFS file an absent node hides the
    blocks below it, so a caller fetches what this returns and asks again
    until it is empty (the runner does, a few rounds).
    """
    if not store.has(cid):
        return [cid]
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        try:
            return unixfs.missing_blocks_untrusted(store.get, store.has, cid, _FILE_LIMITS)
        except BadInput:
            return []  # read_file says what is wrong
    try:
        _, chunks = _file_node(store, cid)
    except EngineCorrupt:
        return []
    return [c for c in chunks if not store.has(c)]


def read_file(store: "BlockStore", cid: CID) -> bytes:
    """Reassemble and verify a file stored by :func:`put_file` (or an older ``meshd/file`` node).

    Raises:
        EngineMissing: blocks are absent; ``missing`` lists every one known.
        EngineCorrupt: a block does not hash to its CID, the sizes disagree,
            or the DAG is not a file.
    """
    if cid.codec == RAW:
        try:
            data = store.get(cid)
        except BlockNotFound:
            raise EngineMissing(f"engine file {cid} is not in the local store", [cid]) from None
        if not cid.verify(data):
            raise EngineCorrupt(f"block {cid} does not match its hash")
        return data
    if cid.codec == DAG_PB:
        missing = missing_file_blocks(store, cid)
        if missing:
            raise EngineMissing(f"{len(missing)} block(s) of engine file {cid} are not in the local store", missing)
        try:
            return unixfs.read_file_untrusted(store.get, cid, _FILE_LIMITS)
        except BlockNotFound as exc:
            raise EngineMissing(f"a block of engine file {cid} vanished: {exc}",
                                missing_file_blocks(store, cid)) from None
        except BadInput as exc:
            raise EngineCorrupt(f"engine file {cid} is not a readable UnixFS file: {exc}") from None
    if cid.codec != DAG_CBOR:
        raise EngineCorrupt(f"unsupported file codec 0x{cid.codec:x}")
    size, chunks = _file_node(store, cid)
    missing = [c for c in chunks if not store.has(c)]
    if missing:
        raise EngineMissing(f"{len(missing)} chunk(s) of engine file {cid} are not in the local store", missing)
    parts = []
    total = 0
    for c in chunks:
        try:
            data = store.get(c)
        except BlockNotFound:
            raise EngineMissing(f"chunk {c} of engine file {cid} vanished", [c]) from None
        if not c.verify(data):
            raise EngineCorrupt(f"chunk {c} of {cid} does not match its hash")
        total += len(data)
        if total > size:
            raise EngineCorrupt(f"file {cid} is larger than its declared {size} bytes")
        parts.append(data)
    if total != size:
        raise EngineCorrupt(f"file {cid} reassembles to {total} bytes, node says {size}")
    return b"".join(parts)


__all__ = ["CHUNK_SIZE", "FILE_TAG", "MAX_FILE_SIZE", "missing_file_blocks", "put_file", "read_file"]
