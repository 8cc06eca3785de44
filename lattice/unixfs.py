"""UnixFS v1 files: the dag-pb DAG ``ipfs add --cid-version 1 --raw-leaves`` builds.

meshd stores engine files (and checkpoint state) larger than one chunk as a
UnixFS file so that any IPFS node holding the blocks prints them with
``ipfs cat <cid>``: the root CID is the one Kubo and js-ipfs print for the
same bytes with ``ipfs add --cid-version 1 --raw-leaves --chunker
size-262144`` (the default chunker; CIDv1 implies raw leaves in Kubo).  That
DAG is:

* leaves: raw blocks (codec 0x55) of ``chunk_size`` bytes, the last shorter;
* a file of one chunk is that raw leaf itself (and an empty file is the
  empty raw block);
* otherwise the *balanced* layout: leaves are grouped ``max_links`` (174) to
  a dag-pb node (codec 0x70), those nodes 174 to a node one level up, and so
  on until one node remains.  A group left over at the end is wrapped level
  by level until it reaches the level of its left siblings (so 175 leaves
  give ``root[node(174 leaves), node(1 leaf)]``), which is what Kubo's
  ``balanced.Layout`` and js-ipfs's balanced reducer both produce.

Every internal node is a dag-pb ``PBNode`` whose ``Data`` is a UnixFS
``Data`` message ``{Type: File, filesize, blocksizes}`` (no inline bytes) and
whose links are ``PBLink {Hash, Name: "", Tsize}``; ``Tsize`` is the byte
count of the child block plus everything below it.

Why protobuf by hand: dag-pb fixes one encoding (links before data, fields in
order, no unknown fields), the two messages plus UnixFS ``Data`` use only
varints and length-delimited bytes, and no maintained Python package encodes
dag-pb.  The ``protobuf`` runtime would need generated classes and would
still not give the canonical-form check the decoder needs.  About 60 lines of
varint code here are cheaper to review than that.

Reading (:func:`read_file_untrusted`) accepts more than we write, as long as
it is a UnixFS *file*: dag-pb leaves holding their bytes inline (``Type``
File or Raw, as ``ipfs add`` without ``--raw-leaves`` makes) and nodes with
inline bytes before their children.  Every block is checked against its CID,
every node's ``blocksizes`` against what its children really hold, and the
walk is bounded (:class:`ReadLimits`).  Directories, symlinks, HAMT shards
and CIDv0 links are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from .cid import CID, DAG_PB, RAW
from .errors import BadBlock, BadCID, BadUnixFS, BlockNotFound

#: Bytes per leaf: the ``ipfs add`` default (``size-262144``).
CHUNK_SIZE: Final = 256 * 1024
#: Links per node in the balanced layout (Kubo's and js-ipfs's default).
MAX_LINKS: Final = 174

# UnixFS Data.DataType values (unixfs.proto).
_RAW_TYPE: Final = 0
_FILE_TYPE: Final = 2

Block = tuple[CID, bytes]


# ------------------------------------------------------------------ protobuf

def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; minimal form only."""
    n = shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise BadUnixFS("truncated varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 64:
            raise BadUnixFS("varint longer than 64 bits")
    if n >= 1 << 64:
        raise BadUnixFS("varint longer than 64 bits")
    if pos - start > 1 and data[pos - 1] == 0:
        raise BadUnixFS("non-minimal varint")
    return n, pos


def _fields(data: bytes) -> Iterable[tuple[int, int | bytes]]:
    """``(field number, value)`` of a protobuf message: varints (type 0) and bytes (type 2) only."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise BadUnixFS("protobuf field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
            yield num, value
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            if size > len(data) - pos:
                raise BadUnixFS("length-delimited field runs past the end")
            yield num, data[pos:pos + size]
            pos += size
        else:
            raise BadUnixFS(f"protobuf wire type {wire} is not used by dag-pb or UnixFS files")


def _bytes_field(num: int, value: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _uint_field(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


# ------------------------------------------------------------------ dag-pb

class Link(NamedTuple):
    """A ``PBLink``: the child's CID, its name (None: absent) and Tsize (None: absent)."""

    cid: CID
    name: str | None
    tsize: int | None


class Node(NamedTuple):
    """A decoded dag-pb ``PBNode``: its links in order and its ``Data`` (None: absent)."""

    links: tuple[Link, ...]
    data: bytes | None


def encode_node(links: Iterable[Link], data: bytes | None) -> bytes:
    """The canonical dag-pb bytes of a node: links first, then ``Data``."""
    out = bytearray()
    for link in links:
        body = _bytes_field(1, link.cid.raw)
        if link.name is not None:
            body += _bytes_field(2, link.name.encode("utf-8"))
        if link.tsize is not None:
            body += _uint_field(3, link.tsize)
        out += _bytes_field(2, body)
    if data is not None:
        out += _bytes_field(1, data)
    return bytes(out)


def _link_untrusted(body: bytes) -> Link:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for num, value in _fields(body):
        if num <= last:
            raise BadUnixFS("PBLink fields out of order or repeated")
        last = num
        if num == 1 and type(value) is bytes:
            try:
                cid = CID.from_bytes_untrusted(value)
            except BadCID as exc:
                raise BadUnixFS(f"link hash is not a CID meshd reads: {exc}") from None
        elif num == 2 and type(value) is bytes:
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadUnixFS("link name is not UTF-8") from None
        elif num == 3 and type(value) is int:
            tsize = value
        else:
            raise BadUnixFS(f"unexpected PBLink field {num}")
    if cid is None:
        raise BadUnixFS("PBLink without Hash")
    return Link(cid, name, tsize)


def decode_node_untrusted(data: bytes, *, max_links: int = 65_536) -> Node:
    """Decode one dag-pb block in its canonical form.

    Raises:
        BadUnixFS: not canonical dag-pb (field order, unknown fields,
            non-minimal varints, bad link CIDs) or more than ``max_links`` links.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadUnixFS("block data must be bytes")
    data = bytes(data)
    links: list[Link] = []
    node_data: bytes | None = None
    for num, value in _fields(data):
        if num == 2 and type(value) is bytes and node_data is None:
            if len(links) >= max_links:
                raise BadUnixFS(f"node has more than {max_links} links")
            links.append(_link_untrusted(value))
        elif num == 1 and type(value) is bytes and node_data is None:
            node_data = value
        else:
            raise BadUnixFS(f"unexpected PBNode field {num} (dag-pb has Links, then Data)")
    node = Node(tuple(links), node_data)
    # One encoding per node: anything the fields above let through in another
    # form (e.g. a PBLink split over two fields) fails here.
    if encode_node(node.links, node.data) != data:
        raise BadUnixFS("dag-pb block is not in canonical form")
    return node


def links_untrusted(data: bytes) -> list[CID]:
    """The CIDs a dag-pb block links to (for DAG walks: pins, budgets).

    Raises:
        BadUnixFS: ``data`` is not canonical dag-pb.
    """
    return [link.cid for link in decode_node_untrusted(data).links]


# ------------------------------------------------------------------ UnixFS Data

class FileData(NamedTuple):
    """The UnixFS ``Data`` of a file node: inline bytes, declared size, child sizes."""

    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def _file_data(filesize: int, blocksizes: list[int]) -> bytes:
    # Field order 1 (Type), 3 (filesize), 4 (blocksizes, proto2 repeated:
    # one field per value, not packed), as both Kubo and js-ipfs write it.
    return (_uint_field(1, _FILE_TYPE) + _uint_field(3, filesize)
            + b"".join(_uint_field(4, s) for s in blocksizes))


def file_data_untrusted(data: bytes) -> FileData:
    """Decode a UnixFS ``Data`` message that must describe a file (Type File or Raw).

    Fields 5-8 (hash type, fanout, mode, mtime) are skipped: they do not
    change a file's bytes.

    Raises:
        BadUnixFS: malformed, or not a file (a directory, symlink, shard).
    """
    kind: int | None = None
    inline = b""
    filesize: int | None = None
    sizes: list[int] = []
    for num, value in _fields(data):
        if num == 1 and type(value) is int:
            kind = value
        elif num == 2 and type(value) is bytes:
            inline = value
        elif num == 3 and type(value) is int:
            filesize = value
        elif num == 4 and type(value) is int:
            sizes.append(value)
        elif num == 4 and type(value) is bytes:
            raise BadUnixFS("packed blocksizes are not UnixFS v1")
        elif num in (1, 2, 3):
            raise BadUnixFS(f"UnixFS field {num} has the wrong wire type")
    if kind not in (_RAW_TYPE, _FILE_TYPE):
        raise BadUnixFS(f"UnixFS node of type {kind} is not a file")
    return FileData(inline, filesize, tuple(sizes))


# ------------------------------------------------------------------ writing

class _Entry(NamedTuple):
    cid: CID
    filesize: int
    tsize: int


class FileBuilder:
    """Builds a UnixFS file from a stream of bytes, block by block.

    :meth:`add` and :meth:`finish` return the blocks as they become final,
    every child before the node that links it, so a caller that stores them
    in order never stores a node whose children are not stored yet (a crash
    leaves only unreferenced blocks).  Memory: one chunk plus up to
    ``max_links`` entries per level.

    Args:
        chunk_size: Bytes per leaf (default 262144, ``ipfs add``'s).
        max_links: Links per node (default 174, ``ipfs add``'s).
    """

    def __init__(self, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> None:
        if chunk_size < 1 or max_links < 2:
            raise ValueError("need chunk_size >= 1 and max_links >= 2")
        self.chunk_size = chunk_size
        self.max_links = max_links
        self._buf = bytearray()
        self._levels: list[list[_Entry]] = [[]]
        self._leaves = 0
        self._finished = False

    def add(self, data: bytes) -> list[Block]:
        """Take more of the file; return the blocks now final."""
        if self._finished:
            raise ValueError("FileBuilder is finished")
        self._buf += data
        out: list[Block] = []
        n = self.chunk_size
        whole = len(self._buf) // n * n
        for off in range(0, whole, n):
            self._leaf(bytes(self._buf[off:off + n]), out)
        del self._buf[:whole]
        return out

    def finish(self) -> tuple[CID, list[Block]]:
        """End the file: ``(root CID, the remaining blocks, the root's last)``."""
        if self._finished:
            raise ValueError("FileBuilder is finished")
        self._finished = True
        out: list[Block] = []
        if self._buf or not self._leaves:
            self._leaf(bytes(self._buf), out)
            self._buf.clear()
        # Wrap what is left, lowest level first, until one entry stands
        # alone at the top: a group left over at level i becomes a node at
        # level i + 1 even when it has one entry, as in Kubo's layout.
        levels = self._levels
        i = 0
        while True:
            above = any(levels[j] for j in range(i + 1, len(levels)))
            if not above and len(levels[i]) == 1:
                return levels[i][0].cid, out
            if levels[i]:
                group, levels[i] = levels[i], []
                self._push(i + 1, self._node(group, out), out)
            i += 1

    def _leaf(self, chunk: bytes, out: list[Block]) -> None:
        cid = CID.for_block(RAW, chunk)
        out.append((cid, chunk))
        self._leaves += 1
        self._push(0, _Entry(cid, len(chunk), len(chunk)), out)

    def _push(self, level: int, entry: _Entry, out: list[Block]) -> None:
        if level == len(self._levels):
            self._levels.append([])
        group = self._levels[level]
        group.append(entry)
        # A full group never changes again (the balanced layout only appends
        # to the right), so its node is final now, whatever follows.
        if len(group) == self.max_links:
            self._levels[level] = []
            self._push(level + 1, self._node(group, out), out)

    @staticmethod
    def _node(children: list[_Entry], out: list[Block]) -> _Entry:
        sizes = [c.filesize for c in children]
        body = encode_node([Link(c.cid, "", c.tsize) for c in children], _file_data(sum(sizes), sizes))
        cid = CID.for_block(DAG_PB, body)
        out.append((cid, body))
        return _Entry(cid, sum(sizes), len(body) + sum(c.tsize for c in children))


def encode_file(data: bytes, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> tuple[CID, list[Block]]:
    """``(root CID, blocks)`` of ``data`` as a UnixFS file; children precede parents, the root is last."""
    builder = FileBuilder(chunk_size=chunk_size, max_links=max_links)
    blocks = builder.add(data)
    root, rest = builder.finish()
    return root, blocks + rest


# ------------------------------------------------------------------ reading

@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one walk of an untrusted file DAG.

    Attributes:
        max_size: Most bytes the file may hold.  Default 4 GiB.
        max_depth: Most dag-pb levels above the leaves.  Default 16 (a
            4 GiB file of 256 KiB leaves needs 2).
        max_blocks: Most blocks read.  Default 1,000,000.
        max_links: Most links in one node.  Default 65,536.
        max_block_size: Largest block read, leaf or node.  Default 4 MiB
            (``ipfs add`` makes at most 1 MiB chunks).
    """

    max_size: int = 4 * 1024 * 1024 * 1024
    max_depth: int = 16
    max_blocks: int = 1_000_000
    max_links: int = 65_536
    max_block_size: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_size", "max_depth", "max_blocks", "max_links", "max_block_size"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name} must be a non-negative integer")


class _Getter(Protocol):
    def __call__(self, cid: CID, /) -> bytes: ...


def read_file_untrusted(get: _Getter | Callable[[CID], bytes], root: CID,
                        limits: ReadLimits = ReadLimits()) -> bytes:
    """The bytes of the UnixFS file (or raw block) ``root``, read through ``get``.

    Args:
        get: Returns a block's bytes; raises
            :class:`~lattice.errors.BlockNotFound` when it is absent (passed on:
            the caller fetches it and tries again).
        root: A raw CID (the file is that block) or a dag-pb CID.
        limits: Bounds on the walk.

    Raises:
        BadUnixFS: not a UnixFS file, sizes that disagree, or a limit exceeded.
        BadBlock: a block does not hash to its CID.
        BlockNotFound: from ``get``.
    """
    out = bytearray()
    read = [0]

    def visit(cid: CID, depth: int) -> None:
        read[0] += 1
        if read[0] > limits.max_blocks:
            raise BadUnixFS(f"file has more than {limits.max_blocks} blocks")
        data = get(cid)
        if len(data) > limits.max_block_size:
            raise BadUnixFS(f"block {cid} is larger than {limits.max_block_size} bytes")
        if not cid.verify(data):
            raise BadBlock(f"block does not hash to {cid}")
        if cid.codec == RAW:
            if len(out) + len(data) > limits.max_size:
                raise BadUnixFS(f"file is larger than {limits.max_size} bytes")
            out.extend(data)
            return
        if cid.codec != DAG_PB:
            raise BadUnixFS(f"a UnixFS file has no blocks of codec 0x{cid.codec:x}")
        if depth >= limits.max_depth:
            raise BadUnixFS(f"file DAG is deeper than {limits.max_depth} levels")
        node = decode_node_untrusted(data, max_links=limits.max_links)
        if node.data is None:
            raise BadUnixFS(f"dag-pb node {cid} has no UnixFS Data")
        fd = file_data_untrusted(node.data)
        if node.links and len(fd.blocksizes) != len(node.links):
            raise BadUnixFS(f"node {cid} has {len(node.links)} links but {len(fd.blocksizes)} blocksizes")
        declared = len(fd.data) + sum(fd.blocksizes)
        if fd.filesize is not None and fd.filesize != declared:
            raise BadUnixFS(f"node {cid} declares {fd.filesize} bytes, its parts add up to {declared}")
        if len(out) + declared > limits.max_size:
            raise BadUnixFS(f"file is larger than {limits.max_size} bytes")
        out.extend(fd.data)
        for link, size in zip(node.links, fd.blocksizes):
            start = len(out)
            visit(link.cid, depth + 1)
            if len(out) - start != size:
                raise BadUnixFS(f"child {link.cid} of {cid} holds {len(out) - start} bytes, not {size}")

    visit(root, 0)
    return bytes(out)


def missing_blocks_untrusted(get: _Getter | Callable[[CID], bytes], has: Callable[[CID], bool], root: CID,
                             limits: ReadLimits = ReadLimits()) -> list[CID]:
    """The blocks of file ``root`` that are absent, as far as the present nodes tell.

    Walks the dag-pb nodes that are present; a raw leaf is only looked up
    (``has``), never read.  An absent node hides what is below it, so a
    caller fetches what this returns and asks again until it is empty.

    Raises:
        BadUnixFS: a present node is not a UnixFS file node, or a limit is exceeded.
        BadBlock: a present node does not hash to its CID.
    """
    missing: list[CID] = []
    stack = [(root, 0)]
    seen = 0
    while stack:
        cid, depth = stack.pop()
        seen += 1
        if seen > limits.max_blocks:
            raise BadUnixFS(f"file has more than {limits.max_blocks} blocks")
        if not has(cid):
            missing.append(cid)
            continue
        if cid.codec != DAG_PB:
            continue
        if depth >= limits.max_depth:
            raise BadUnixFS(f"file DAG is deeper than {limits.max_depth} levels")
        try:
            data = get(cid)
        except BlockNotFound:  # deleted since has(): absent after all
            missing.append(cid)
            continue
        if not cid.verify(data):
            raise BadBlock(f"block does not hash to {cid}")
        node = decode_node_untrusted(data, max_links=limits.max_links)
        stack.extend((link.cid, depth + 1) for link in reversed(node.links))
    return missing


__all__ = [
    "CHUNK_SIZE", "MAX_LINKS", "FileBuilder", "FileData", "Link", "Node", "ReadLimits", "decode_node_untrusted",
    "encode_file", "encode_node", "file_data_untrusted", "links_untrusted", "missing_blocks_untrusted",
    "read_file_untrusted",
]
