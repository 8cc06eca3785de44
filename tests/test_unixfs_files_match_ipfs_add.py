"""UnixFS files: the CIDs ``ipfs add --cid-version 1 --raw-leaves`` prints, read back under limits.

The hard-coded root CIDs below were printed by js-ipfs 0.66.1 (the node
``scripts/start-ipfs.sh`` runs) for the same bytes, with
``POST /api/v0/add?cid-version=1&raw-leaves=true&chunker=size-262144&only-hash=true&cid-base=base32``
(and ``chunker=size-16`` for the small-chunk vectors), on 2026-12-04.
:func:`test_random_files_match_the_ipfs_node` repeats the comparison live
when an IPFS test node can be had.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import unixfs
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, DAG_CBOR, DAG_PB, RAW
from lattice.errors import BadBlock, BadInput, BadUnixFS, BlockNotFound
from lattice.unixfs import FileBuilder, Link, ReadLimits, encode_file, encode_node, read_file_untrusted


def _pattern(n: int) -> bytes:
    """Deterministic, non-repeating-per-chunk test bytes (the vectors' input)."""
    return bytes((i * 7 + (i >> 9)) & 0xFF for i in range(n))


def _meshd(n: int) -> bytes:
    return (b"meshd" * (n // 5 + 1))[:n]


# (bytes, chunk size, root CID printed by js-ipfs for them)
VECTORS = [
    (_pattern(0), 262144, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (_pattern(1), 262144, "bafkreidogqfzz75tpkmjzjke425xqcrmpcib2p5tg44hnbirumdbpl5adu"),
    (_pattern(262144), 262144, "bafkreiffklzcgj2ptt3kqyewz6sxgdarc3p3oxo5lqrqixtj3tnzct5wfq"),
    (_pattern(262145), 262144, "bafybeiam2njuqdvcmi3gmy3j5y23enw7vkawjcuutkrit3al3guinqtfym"),
    (_pattern(600000), 262144, "bafybeicd6glzb4obrr6sbdgzaqusuqkedlc2go6xx4hviw6yld6anr6khe"),
    (_pattern(17), 16, "bafybeifahtdbln2kzsnt75d3urjv5k6x6qjrtn4icruxi5spkilgmc3dem"),
    (_pattern(174 * 16), 16, "bafybeieyp24e73ljuyq2njuncjimqf4pokepq7oz33c37d3rbiq2ll6koi"),
    (_pattern(174 * 16 + 1), 16, "bafybeiairub6jl67remv7tvk5ad34immpk6a6zf63nteeqtpsizdmtjlvi"),
]
# Two levels of 174-link nodes at the real chunk size (45 MB: hashed, not stored).
BIG_VECTORS = [
    (174 * 262144, "bafybeiet2vvcqmzwhukyddsm5bskqlpe32shmylj5s64dlormca4vb2n7y"),
    (174 * 262144 + 1, "bafybeig5lz6ihi6g5vj64n6hmofpft63lrwdq3smjsyuharr3cavndz3su"),
]
# Three levels (174 * 174 leaves and more) with 16-byte chunks.
DEEP_VECTORS = [
    (174 * 174 * 16, "bafybeibjnrr75dpzl4g55qm6rmctk2ozhi3fyaifpsnbmrhxalhpjajyxm"),
    (174 * 174 * 16 + 175 * 16 + 3, "bafybeigilmj5oadm33j4vqrujjkwkbxtmd7tny44o57r5msysbaqsoc3fm"),
]


@pytest.mark.parametrize(("data", "chunk", "expected"), VECTORS, ids=[f"{len(v[0])}b-{v[1]}" for v in VECTORS])
def test_root_cid_is_what_ipfs_add_prints(data: bytes, chunk: int, expected: str) -> None:
    root, blocks = encode_file(data, chunk_size=chunk)
    assert str(root) == expected
    assert blocks[-1][0] == root
    store = MemoryBlockStore()
    store.put_many(blocks)
    assert read_file_untrusted(store.get, root) == data


@pytest.mark.parametrize(("size", "expected"), BIG_VECTORS)
def test_two_level_files_match_ipfs_add(size: int, expected: str) -> None:
    root, _ = encode_file(_meshd(size))
    assert str(root) == expected


@pytest.mark.parametrize(("size", "expected"), DEEP_VECTORS)
def test_three_level_files_match_ipfs_add(size: int, expected: str) -> None:
    data = _pattern(size)
    root, blocks = encode_file(data, chunk_size=16)
    assert str(root) == expected
    store = MemoryBlockStore()
    store.put_many(blocks)
    assert read_file_untrusted(store.get, root) == data


def _kubo_layout(data: bytes, chunk: int, max_links: int) -> CID:
    """Kubo's ``balanced.Layout`` transcribed (go-unixfs importer/balanced/builder.go): the reference."""
    leaves = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    pos = 0

    def leaf() -> tuple[CID, int, int]:
        nonlocal pos
        d = leaves[pos]
        pos += 1
        return CID.for_block(RAW, d), len(d), len(d)

    def node(children: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        sizes = [c[1] for c in children]
        fs = unixfs._uint_field(1, 2) + unixfs._uint_field(3, sum(sizes)) + b"".join(
            unixfs._uint_field(4, s) for s in sizes)
        body = encode_node([Link(c[0], "", c[2]) for c in children], fs)
        return CID.for_block(DAG_PB, body), sum(sizes), len(body) + sum(c[2] for c in children)

    def fill(first: tuple[CID, int, int] | None, depth: int) -> tuple[CID, int, int]:
        children = [first] if first else []
        while len(children) < max_links and pos < len(leaves):
            children.append(leaf() if depth == 1 else fill(None, depth - 1))
        return node(children)

    root = leaf()
    depth = 1
    while pos < len(leaves):
        root = fill(root, depth)
        depth += 1
    return root[0]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), chunk=st.integers(1, 40), max_links=st.integers(2, 6))
def test_any_file_round_trips_with_kubos_layout(data: bytes, chunk: int, max_links: int) -> None:
    root, blocks = encode_file(data, chunk_size=chunk, max_links=max_links)
    assert root == _kubo_layout(data, chunk, max_links)
    cids = [c for c, _ in blocks]
    assert len(set(cids)) <= len(cids) and cids[-1] == root
    for i, (cid, body) in enumerate(blocks):  # every child is stored before its parent
        assert cid.verify(body)
        if cid.codec == DAG_PB:
            assert set(unixfs.links_untrusted(body)) <= set(cids[:i])
    store = MemoryBlockStore()
    store.put_many(blocks)
    assert read_file_untrusted(store.get, root) == data
    assert unixfs.missing_blocks_untrusted(store.get, store.has, root) == []


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8), chunk=st.integers(1, 30))
def test_streaming_gives_the_same_blocks_as_one_call(data: bytes, cuts: list[int], chunk: int) -> None:
    builder = FileBuilder(chunk_size=chunk, max_links=3)
    blocks = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        blocks += builder.add(data[last:cut])
        last = cut
    root, rest = builder.finish()
    assert (root, blocks + rest) == encode_file(data, chunk_size=chunk, max_links=3)


def _file(data: bytes = _pattern(100), chunk: int = 10, max_links: int = 4):
    root, blocks = encode_file(data, chunk_size=chunk, max_links=max_links)
    store = MemoryBlockStore()
    store.put_many(blocks)
    return root, dict(blocks), store


def test_missing_blocks_walk_to_the_first_absent_level() -> None:
    root, blocks, store = _file()  # 10 leaves, 4 per node: root[n(4), n(4), n(2)]
    kids = unixfs.links_untrusted(blocks[root])
    store.delete(kids[0])
    leaf = unixfs.links_untrusted(blocks[kids[1]])[2]
    store.delete(leaf)
    assert unixfs.missing_blocks_untrusted(store.get, store.has, root) == [kids[0], leaf]
    with pytest.raises(BlockNotFound):
        read_file_untrusted(store.get, root)
    assert unixfs.missing_blocks_untrusted(MemoryBlockStore().get, MemoryBlockStore().has, root) == [root]


def _walk_with(blocks: dict[CID, bytes], root: CID, limits: ReadLimits = ReadLimits()) -> bytes:
    def get(cid: CID) -> bytes:
        try:
            return blocks[cid]
        except KeyError:
            raise BlockNotFound(str(cid)) from None

    return read_file_untrusted(get, root, limits)


def _node(children: list[tuple[CID, int]], sizes: list[int] | None = None, filesize: int | None = None,
          kind: int = 2, inline: bytes = b"") -> tuple[CID, bytes]:
    sizes = [s for _, s in children] if sizes is None else sizes
    fs = unixfs._uint_field(1, kind)
    if inline:
        fs += unixfs._bytes_field(2, inline)
    fs += unixfs._uint_field(3, sum(sizes) + len(inline) if filesize is None else filesize)
    fs += b"".join(unixfs._uint_field(4, s) for s in sizes)
    body = encode_node([Link(c, "", s) for c, s in children], fs)
    return CID.for_block(DAG_PB, body), body


def test_a_tampered_leaf_is_a_bad_block() -> None:
    root, blocks, _ = _file()
    leaf = next(c for c in blocks if c.codec == RAW)
    blocks[leaf] = b"X" * 10
    with pytest.raises(BadBlock):
        _walk_with(blocks, root)


def test_sizes_that_disagree_are_refused() -> None:
    leaf = CID.for_block(RAW, b"abc")
    blocks = {leaf: b"abc"}
    for kwargs in ({"sizes": [4]}, {"filesize": 99}, {"sizes": [3, 3]}):
        cid, body = _node([(leaf, 3)], **kwargs)
        blocks[cid] = body
        with pytest.raises(BadUnixFS):
            _walk_with(blocks, cid)


def test_non_files_and_foreign_codecs_are_refused() -> None:
    leaf = CID.for_block(RAW, b"abc")
    directory, body = _node([(leaf, 3)], kind=1)
    blocks = {leaf: b"abc", directory: body}
    with pytest.raises(BadUnixFS, match="not a file"):
        _walk_with(blocks, directory)
    cbor = CID.for_block(DAG_CBOR, b"\xa0")
    blocks[cbor] = b"\xa0"
    with pytest.raises(BadUnixFS, match="codec"):
        _walk_with(blocks, cbor)
    no_data = encode_node([], None)
    blocks[CID.for_block(DAG_PB, no_data)] = no_data
    with pytest.raises(BadUnixFS, match="no UnixFS Data"):
        _walk_with(blocks, CID.for_block(DAG_PB, no_data))


def test_dag_pb_leaves_with_inline_bytes_are_read() -> None:
    # What `ipfs add` without --raw-leaves makes: dag-pb leaves holding their bytes.
    a, a_body = _node([], inline=b"hello ", kind=2)
    b, b_body = _node([], inline=b"world", kind=0)
    root, body = _node([(a, 6), (b, 5)], inline=b">")
    assert _walk_with({a: a_body, b: b_body, root: body}, root) == b">hello world"


def test_limits_bound_the_walk() -> None:
    root, blocks, _ = _file(b"z" * 1000, chunk=10, max_links=2)  # 100 leaves, 7 levels
    assert _walk_with(blocks, root) == b"z" * 1000
    with pytest.raises(BadUnixFS, match="deeper"):
        _walk_with(blocks, root, ReadLimits(max_depth=6))
    with pytest.raises(BadUnixFS, match="larger"):
        _walk_with(blocks, root, ReadLimits(max_size=999))
    with pytest.raises(BadUnixFS, match="blocks"):
        _walk_with(blocks, root, ReadLimits(max_blocks=150))
    with pytest.raises(BadUnixFS, match="links"):
        _walk_with(blocks, root, ReadLimits(max_links=1))
    with pytest.raises(BadUnixFS, match="larger than"):
        _walk_with(blocks, root, ReadLimits(max_block_size=5))
    with pytest.raises(ValueError):
        ReadLimits(max_size=-1)


def test_a_chain_deeper_than_the_limit_is_refused_before_it_is_read() -> None:
    leaf = CID.for_block(RAW, b"x")
    blocks = {leaf: b"x"}
    top = leaf
    for _ in range(40):
        top, body = _node([(top, 1)])
        blocks[top] = body
    with pytest.raises(BadUnixFS, match="deeper"):
        _walk_with(blocks, top)
    with pytest.raises(BadUnixFS, match="deeper"):
        unixfs.missing_blocks_untrusted(blocks.__getitem__, blocks.__contains__, top)


GOOD = encode_node([Link(CID.for_block(RAW, b"x"), "", 1)], unixfs._uint_field(1, 2) + unixfs._uint_field(3, 1)
                   + unixfs._uint_field(4, 1))


@pytest.mark.parametrize("data", [
    b"\x0a\x00" + GOOD,                      # Data before Links
    GOOD + b"\x0a\x00",                      # Data twice
    GOOD[:-1],                               # truncated
    b"\x1a\x00",                             # unknown PBNode field 3
    b"\x12\x00",                             # PBLink without Hash
    b"\x12\x03\x0a\x01\x00",                 # Hash that is no CID
    b"\x12\x26\x0a\x24" + b"\x01\x78" + b"\x12\x20" + b"\x00" * 32,  # git-raw codec
    b"\x0a\x80\x00",                         # non-minimal varint
    b"\x0a" + b"\xff" * 11,                  # varint over 64 bits
    b"\x0d\x00\x00\x00\x00",                 # wire type 5
    b"\x0a\x05ab",                           # length past the end
    b"\x12\x2a\x0a\x24" + CID.for_block(RAW, b"x").raw + b"\x18\x01\x12\x00",  # PBLink fields out of order
])
def test_malformed_dag_pb_is_refused(data: bytes) -> None:
    with pytest.raises(BadUnixFS):
        unixfs.decode_node_untrusted(data)
    assert unixfs.decode_node_untrusted(GOOD).links[0].tsize == 1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bad_input(data: bytes) -> None:
    for decode in (unixfs.decode_node_untrusted, unixfs.file_data_untrusted):
        try:
            decode(data)
        except BadInput:
            pass
    cid = CID.for_block(DAG_PB, data)
    try:
        read_file_untrusted({cid: data}.__getitem__, cid)
    except BadInput:
        pass


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_mutated_nodes_raise_only_bad_input(pos: int, byte: int) -> None:
    root, blocks, _ = _file()
    body = bytearray(blocks[root])
    body[pos % len(body)] = byte
    blocks[root] = bytes(body)
    root2 = CID.for_block(DAG_PB, bytes(body))
    blocks[root2] = bytes(body)
    try:
        _walk_with(blocks, root2)
    except (BadInput, BlockNotFound):
        pass


@pytest.mark.ipfs
def test_random_files_match_the_ipfs_node() -> None:
    import httpx

    from . import _ipfs_env

    try:
        api = _ipfs_env.ensure_node()
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no IPFS test node: {exc}")
    port = api.rstrip("/").split("/")[4]
    rng = random.Random(18)
    for size in (0, 5, 262143, 262144, 262145, 3 * 262144 + 7, rng.randrange(300_000, 2_000_000)):
        data = rng.randbytes(size)
        answer = httpx.post(f"http://127.0.0.1:{port}/api/v0/add", timeout=60, files={"file": ("f", data)},
                            params={"cid-version": "1", "raw-leaves": "true", "chunker": "size-262144",
                                    "only-hash": "true", "pin": "false", "cid-base": "base32"})
        assert answer.status_code == 200, answer.text
        assert str(encode_file(data)[0]) == answer.json()["Hash"], size


def test_pin_and_budget_walks_reach_every_block_of_a_file() -> None:
    from lattice import codec
    from meshd.roles.pinholder import walk
    from meshd.store.archive import block_links_untrusted, dag_blocks
    from meshd.store.collector import reachable

    root, blocks, store = _file(_pattern(1000), chunk=10, max_links=4)  # 100 leaves, 4 levels
    record, record_data = codec.encode_block({"t": "x", "file": root})  # a record linking the file
    store.put(record, record_data)
    every = {record} | set(blocks)
    assert dag_blocks(store.get, record) == (every, set())
    assert reachable(store.get, [record]) == {c.raw for c in every}
    assert walk(store.get, [record], 10_000)[:2] == (every, set())
    assert block_links_untrusted(root, blocks[root]) == unixfs.links_untrusted(blocks[root])
    assert block_links_untrusted(CID.for_block(RAW, b"x"), b"x") == []
    with pytest.raises(BadInput):
        block_links_untrusted(CID.for_block(DAG_PB, b"\xff"), b"\xff")
