"""Engine manifests round-trip, bad manifests are rejected, files chunk and verify."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engines import (BadManifest, DockerImage, DockerManifest, EngineCorrupt, EngineMissing, NativeManifest,
                     PlatformBuild, Resources, encode_manifest, manifest_from_untrusted, put_file, read_file,
                     sign_manifest, signature_from_untrusted)
from engines.manifest import missing_file_blocks
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, DAG_CBOR, DAG_PB, RAW
from lattice.codec import encode, encode_block
from lattice.errors import BlockNotFound

FILE = CID.for_block(RAW, b"\x7fELF fake")


def native_manifest(**kw) -> NativeManifest:
    base = dict(name="fib", platforms={"linux-x86_64": PlatformBuild(FILE, "bin/fib", "exe")}, protocol="json",
                resources=Resources(cpu_s=5, memory_mb=256, timeout_s=2.5, nofile=64))
    base.update(kw)
    return NativeManifest(**base)


def good_record() -> dict:
    return native_manifest().to_record()


def test_native_manifest_round_trips_and_its_cid_is_stable():
    m = native_manifest(interpreter="python3", args=("map",), serve_args=("--jsonl",),
                        comparator={"kind": "exact"})
    cid, data = encode_manifest(m)
    back = manifest_from_untrusted(data)
    assert back == m
    assert encode_manifest(back) == (cid, data)
    assert cid.codec == DAG_CBOR and back.warm_capable


def test_python_protocol_manifest_round_trips():
    m = native_manifest(protocol="python", entry="echo:echo", interpreter="python3",
                        platforms={"linux-x86_64": PlatformBuild(FILE, "echo.py", "tar")})
    assert manifest_from_untrusted(encode_manifest(m)[1]) == m


def test_docker_manifest_round_trips():
    m = DockerManifest(name="computes/fibonacci-sum-split", image=DockerImage(FILE, "sha256:" + "ab" * 32, "fib:1"),
                       cmd=("python", "/app/split.py"), protocol="jsonl", resources=Resources())
    rec = m.to_record()
    assert rec["type"] == "docker-json-runner" and rec["image"]["tar"] == FILE
    assert manifest_from_untrusted(encode_manifest(m)[1]) == m


def mutate(path: tuple, value) -> dict:
    rec = good_record()
    node = rec
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return rec


BAD_RECORDS = {
    "wrong tag": mutate(("t",), "meshd/task"),
    "future version": mutate(("v",), 2),
    "unknown type": mutate(("type",), "wasm-runner"),
    "unknown field": mutate(("extra",), 1),
    "missing name": mutate(("name",), KeyError),
    "bad protocol": mutate(("protocol",), "xml"),
    "escaping executable": mutate(("platforms", "linux-x86_64", "executable"), "../bin/sh"),
    "absolute executable": mutate(("platforms", "linux-x86_64", "executable"), "/bin/sh"),
    "bad format": mutate(("platforms", "linux-x86_64", "format"), "zip"),
    "file is not a link": mutate(("platforms", "linux-x86_64", "file"), str(FILE)),
    "empty platforms": mutate(("platforms",), {}),
    "bad platform key": mutate(("platforms",), {"Linux x86": good_record()["platforms"]["linux-x86_64"]}),
    "interpreter path": mutate(("interpreter",), "/usr/bin/python3"),
    "python without entry": mutate(("protocol",), "python"),
    "entry without python": mutate(("entry",), "m:f"),
    "negative memory": mutate(("resources", "memory_mb"), -1),
    "bool cpu": mutate(("resources", "cpu_s"), True),
    "zero timeout": mutate(("resources", "timeout_s"), 0.0),
    "args not strings": mutate(("args",), [1, 2]),
    "not a map": ["meshd/engine"],
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_invalid_manifest_records_are_rejected(case):
    with pytest.raises(BadManifest):
        manifest_from_untrusted(encode(BAD_RECORDS[case]))


@pytest.mark.parametrize("data", [b"", b"\xff", b"garbage bytes", b"\xa1\x61t\x61x" + b"\x00" * 4,
                                  # non-canonical: a map with keys out of order
                                  b"\xa2\x61v\x01\x61t\x6cmeshd/engine"])
def test_garbage_bytes_raise_only_bad_manifest(data):
    with pytest.raises(BadManifest):
        manifest_from_untrusted(data)


def test_small_file_is_one_raw_block_and_reads_back():
    store = MemoryBlockStore()
    cid = put_file(store, b"#!/bin/sh\necho {}\n")
    assert cid.codec == RAW
    assert read_file(store, cid) == b"#!/bin/sh\necho {}\n"


def test_large_file_is_a_unixfs_file_and_reassembled(tmp_path):
    data = bytes(range(256)) * 41  # 10,496 bytes
    path = tmp_path / "engine.bin"
    path.write_bytes(data)
    store = MemoryBlockStore()
    cid = put_file(store, path, chunk_size=1000)
    assert cid.codec == DAG_PB
    assert store.size() == 11 + 1  # 11 raw leaves under one dag-pb node
    assert read_file(store, cid) == data
    assert missing_file_blocks(store, cid) == []
    assert put_file(MemoryBlockStore(), data, chunk_size=1000) == cid  # bytes or path: same CID


def test_files_stored_before_unixfs_still_read():
    # A meshd/file v1 node as put_file wrote it before UnixFS (frozen: engines
    # published then are named by such nodes).
    store = MemoryBlockStore()
    chunks = [b"a" * 1000, b"b" * 1000, b"c" * 500]
    cids = [CID.for_block(RAW, c) for c in chunks]
    store.put_many(list(zip(cids, chunks)))
    node_cid, node = encode_block({"t": "meshd/file", "v": 1, "size": 2500, "chunks": cids})
    store.put(node_cid, node)
    assert node_cid.codec == DAG_CBOR
    assert read_file(store, node_cid) == b"".join(chunks)
    assert missing_file_blocks(store, node_cid) == []
    store.delete(cids[1])
    assert missing_file_blocks(store, node_cid) == [cids[1]]


def test_missing_chunks_are_listed():
    store = MemoryBlockStore()
    cid = put_file(store, b"x" * 2500, chunk_size=1000)
    chunks = [c for c in store.cids() if c.codec == RAW]
    store.delete(chunks[0])
    store.delete(chunks[1])
    with pytest.raises(EngineMissing) as info:
        read_file(store, cid)
    assert set(info.value.missing) == {chunks[0], chunks[1]}
    assert set(missing_file_blocks(store, cid)) == {chunks[0], chunks[1]}
    with pytest.raises(EngineMissing) as info:
        read_file(MemoryBlockStore(), cid)
    assert info.value.missing == [cid]


class LyingStore:
    """A block store that returns whatever bytes it was given, unverified."""

    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def put(self, cid: CID, data: bytes) -> None:
        self.blocks[cid] = data

    def put_many(self, blocks) -> None:
        for cid, data in blocks:
            self.put(cid, data)

    def get(self, cid: CID) -> bytes:
        try:
            return self.blocks[cid]
        except KeyError:
            raise BlockNotFound(str(cid)) from None

    def has(self, cid: CID) -> bool:
        return cid in self.blocks


def test_tampered_chunk_or_wrong_size_is_corrupt():
    store = LyingStore()
    cid = put_file(store, b"y" * 2500, chunk_size=1000)
    first = next(c for c in store.blocks if c.codec == RAW)
    store.blocks[first] = b"z" * 1000
    with pytest.raises(EngineCorrupt):
        read_file(store, cid)

    store = LyingStore()
    chunk = b"q" * 10
    ccid = CID.for_block(RAW, chunk)
    store.put(ccid, chunk)
    node_cid, node = encode_block({"t": "meshd/file", "v": 1, "size": 11, "chunks": [ccid]})
    store.put(node_cid, node)
    with pytest.raises(EngineCorrupt):
        read_file(store, node_cid)


def test_signature_record_round_trips_and_verifies():
    key = Ed25519PrivateKey.generate()
    cid, _ = encode_manifest(native_manifest())
    sig = sign_manifest(cid, key)
    assert sig.verify()
    _, data = sig.encode()
    back = signature_from_untrusted(data)
    assert back == sig and back.verify()
    other, _ = encode_manifest(native_manifest(name="other"))
    assert not type(sig)(other, sig.publisher, sig.sig).verify()
    with pytest.raises(BadManifest):
        signature_from_untrusted(b"\x00junk")


def test_engines_package_exports_exactly_its_public_api():
    import types

    import engines

    public = {name for name, value in vars(engines).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"}
    assert public == set(engines.__all__)
