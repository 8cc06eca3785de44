"""IpfsBlockStore against a real js-ipfs node (scripts/start-ipfs.sh).

The node is started if it is not running; where it cannot be (no Node/npm),
the tests skip with the reason.  Interop checks go around the store with
plain HTTP so that a bug shared by the store's put and get cannot hide.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from engines.files import put_file, read_file
from lattice import codec, unixfs
from lattice.blockstore import BlockStore, BlockStoreStatistics
from lattice.cid import CID, DAG_PB, RAW
from lattice.errors import BadBlock, BlockNotFound, StoreError
from meshd.store.ipfs import IpfsBlockStore, IpfsOptions, IpfsStatistics

from . import _ipfs_env

pytestmark = [
    pytest.mark.ipfs,
    # ipfshttpclient 0.7.0 passes urllib3 a removed argument; not our code.
    pytest.mark.filterwarnings("ignore:The .strict. parameter is no longer needed:FutureWarning"),
]


@pytest.fixture(scope="module")
def api() -> str:
    try:
        return _ipfs_env.ensure_node()
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no IPFS test node: {exc}")


@pytest.fixture
def store(api: str):
    with IpfsBlockStore.open(IpfsOptions(api=api, timeout_s=0.5)) as s:
        yield s


@pytest.fixture(scope="module")
def http(api: str):
    with httpx.Client(base_url=IpfsOptions(api=api).api_url, timeout=30) as client:
        yield client


def _unique(tag: str) -> bytes:
    # Fresh content per run: the node's repo persists between runs.
    return f"{tag}-{time.time_ns()}-{os.urandom(8).hex()}".encode()


def _raw_block(tag: str) -> tuple[CID, bytes]:
    data = _unique(tag)
    return CID.for_block(RAW, data), data


def _cbor_block(tag: str, **extra: object) -> tuple[CID, bytes]:
    return codec.encode_block({"tag": tag, "nonce": _unique(tag), **extra})


# ------------------------------------------------------------------ options


def test_options_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        IpfsOptions(api="http://127.0.0.1:5001")
    with pytest.raises(ValueError):
        IpfsOptions(api="/ip4/127.0.0.1/udp/5001")
    with pytest.raises(ValueError):
        IpfsOptions(timeout_s=0)
    with pytest.raises(ValueError):
        IpfsOptions(timeout_s=5, http_timeout_s=5)
    with pytest.raises(ValueError):
        IpfsOptions(retries=-1)
    with pytest.raises(ValueError):
        IpfsOptions(put_codec_param="cid")  # type: ignore[arg-type]
    assert IpfsOptions(api="/ip6/::1/tcp/5001/http").api_url == "http://[::1]:5001/api/v0/"


def test_constructor_does_no_io_and_unopened_store_refuses() -> None:
    # Port 9 (discard) is not an IPFS node: construction must not notice.
    s = IpfsBlockStore(IpfsOptions(api="/ip4/127.0.0.1/tcp/9"))
    with pytest.raises(StoreError, match="not opened"):
        s.get(CID.for_block(RAW, b"x"))
    s.close()


def test_open_on_dead_port_raises_store_error_naming_the_node() -> None:
    port = _ipfs_env.free_port()
    with pytest.raises(StoreError, match=f"127.0.0.1/tcp/{port} is unreachable"):
        IpfsBlockStore.open(IpfsOptions(api=f"/ip4/127.0.0.1/tcp/{port}"))


def test_lockfile_names_only_the_npm_registry() -> None:
    lock = json.loads((_ipfs_env.REPO_ROOT / "scripts/ipfs-node/package-lock.json").read_text())
    text = json.dumps(lock)
    for pkg, meta in lock["packages"].items():
        resolved = meta.get("resolved")
        if resolved is not None:
            assert resolved.startswith(("https://registry.npmjs.org/", "stubs/")), (pkg, resolved)
    assert "github.com" not in text and "git+" not in text
    assert lock["packages"]["node_modules/ipfs"]["version"] == "0.66.1"


# ------------------------------------------------------------- blocks


def test_store_satisfies_blockstore_protocol(store: IpfsBlockStore) -> None:
    assert isinstance(store, BlockStore)
    assert isinstance(store.statistics(), BlockStoreStatistics)
    assert isinstance(store.ipfs_statistics(), IpfsStatistics)


@pytest.mark.parametrize("make", [_raw_block, _cbor_block], ids=["raw", "dag-cbor"])
def test_block_put_by_store_reads_back_from_node_under_same_cid(store, http, make) -> None:
    cid, data = make("store-to-node")
    store.put(cid, data)
    resp = http.post("block/get", params={"arg": str(cid), "timeout": "2s"})
    assert resp.status_code == 200 and resp.content == data
    stat = http.post("block/stat", params={"arg": str(cid), "cid-base": "base32"}).json()
    assert CID.parse_untrusted(stat["Key"]) == cid and stat["Size"] == len(data)


@pytest.mark.parametrize(("make", "fmt"), [(_raw_block, "raw"), (_cbor_block, "dag-cbor")],
                         ids=["raw", "dag-cbor"])
def test_block_put_by_node_reads_back_through_store_under_same_cid(store, http, make, fmt) -> None:
    cid, data = make("node-to-store")
    resp = http.post(
        "block/put",
        params={"format": fmt, "mhtype": "sha2-256", "cid-version": "1"},  # node's default base58btc
        files={"file": ("block", data)},
    )
    resp.raise_for_status()
    assert CID.parse_untrusted(resp.json()["Key"]) == cid
    assert store.has(cid)
    assert store.get(cid) == data
    assert store.get_many([cid]) == {cid: data}


def test_missing_block_is_not_found_within_the_timeout(store) -> None:
    cid = CID.for_block(RAW, _unique("never-stored"))
    t0 = time.monotonic()
    with pytest.raises(BlockNotFound):
        store.get(cid)
    assert time.monotonic() - t0 < 5
    assert not store.has(cid)
    assert store.get_many([cid]) == {}
    assert store.statistics().misses >= 1


def test_put_with_wrong_hash_is_bad_block_and_stores_nothing(store, http) -> None:
    cid, _ = _raw_block("claimed")
    lie = _unique("actual")
    with pytest.raises(BadBlock):
        store.put(cid, lie)
    good_cid, good = _raw_block("batch-good")
    with pytest.raises(BadBlock):
        store.put_many([(good_cid, good), (cid, lie)])
    assert not store.has(good_cid), "put_many must verify every block before sending any"
    assert store.statistics().rejected_puts == 2


def test_put_is_idempotent_and_delete_removes(store) -> None:
    cid, data = _raw_block("deleted")
    store.put(cid, data)
    store.put(cid, data)
    assert store.has(cid)
    store.delete(cid)
    assert not store.has(cid)
    store.delete(cid)  # absent: no error


def test_concurrent_threads_share_one_store(store) -> None:
    blocks = [_raw_block(f"thread-{i}") for i in range(64)]
    errors: list[BaseException] = []

    def worker(part: list[tuple[CID, bytes]]) -> None:
        try:
            for cid, data in part:
                store.put(cid, data)
                assert store.get(cid) == data
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(blocks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_many([c for c, _ in blocks]) == dict(blocks)


def test_closed_store_refuses_calls(api: str) -> None:
    s = IpfsBlockStore.open(IpfsOptions(api=api))
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.has(CID.for_block(RAW, b"x"))


# --------------------------------------------------------------- pins


def test_pin_add_ls_rm(store) -> None:
    leaf_cid, leaf = _raw_block("pinned-leaf")
    root_cid, root = _cbor_block("pinned-root", child=leaf_cid)
    store.put_many([(leaf_cid, leaf), (root_cid, root)])
    store.pin_add(root_cid)
    pins = store.pin_ls()
    assert root_cid in pins
    assert leaf_cid not in pins  # indirect pins are not listed
    store.pin_rm(root_cid)
    assert root_cid not in store.pin_ls()
    with pytest.raises(StoreError):
        store.pin_rm(root_cid)


def test_pin_of_missing_block_is_not_found(store) -> None:
    with pytest.raises(BlockNotFound):
        store.pin_add(CID.for_block(RAW, _unique("unpinnable")))


def test_pin_update_moves_pin_across_three_versions(store) -> None:
    versions = [_cbor_block("version", n=n) for n in range(3)]
    store.put_many(versions)
    (v0, _), (v1, _), (v2, _) = versions
    store.pin_add(v0)
    store.pin_update(v0, v1)
    pins = store.pin_ls()
    assert v1 in pins and v0 not in pins
    store.pin_update(v1, v2)
    pins = store.pin_ls()
    assert v2 in pins and v1 not in pins and v0 not in pins
    # js-ipfs has no pin/update: the store found that out once and now pins+unpins.
    assert store.ipfs_statistics().pin_update_native is False
    store.pin_rm(v2)


# ------------------------------------------------------------ crashes


@pytest.fixture
def private_node(tmp_path: Path):
    """A node of its own (temp repo, free port), so killing it disturbs no one."""
    state = tmp_path / "ipfs"
    port = _ipfs_env.free_port()
    try:
        api = _ipfs_env.ensure_node(state, port)
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no IPFS test node: {exc}")
    yield state, port, api
    _ipfs_env.stop_node(state)


def test_node_killed_mid_run_raises_store_error_then_recovers_acknowledged_blocks(private_node) -> None:
    state, port, api = private_node
    store = IpfsBlockStore.open(IpfsOptions(api=api, timeout_s=0.5))
    acknowledged: list[tuple[CID, bytes]] = []
    enough = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(100_000):
                block = _raw_block(f"crash-{i}")
                store.put(*block)
                acknowledged.append(block)
                if len(acknowledged) == 50:
                    enough.set()
        except BaseException as exc:
            failure.append(exc)
        finally:
            enough.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert enough.wait(60), "writer made no progress"
    _ipfs_env.kill_node(state)  # SIGKILL: no clean shutdown
    thread.join(60)
    assert not thread.is_alive()

    assert len(failure) == 1 and isinstance(failure[0], StoreError), failure
    assert f"IPFS node at /ip4/127.0.0.1/tcp/{port} is unreachable" in str(failure[0])
    assert "daemon running" in str(failure[0])
    with pytest.raises(StoreError, match="unreachable"):
        store.get(acknowledged[0][0])

    _ipfs_env.ensure_node(state, port)  # same repo, same port
    # The same store object works again, and every block the node acknowledged
    # before the kill survived it (the repo's flatfs blockstore syncs on write).
    assert store.get_many([c for c, _ in acknowledged]) == dict(acknowledged)
    cid, data = _raw_block("after-restart")
    store.put(cid, data)
    assert store.get(cid) == data
    store.close()


def test_cids_and_size_list_exactly_the_held_blocks_under_their_codec(private_node) -> None:
    _, _, api = private_node  # a fresh --emptyRepo node: nothing else is listed
    with IpfsBlockStore.open(IpfsOptions(api=api)) as store:
        assert store.size() == 0 and list(store.cids()) == []
        raw_cid, raw_data = _raw_block("listed")
        cbor_cid, cbor_data = _cbor_block("listed")
        pb_data = unixfs.encode_node([unixfs.Link(raw_cid, "", len(raw_data))],
                                     b"\x08\x02\x18" + bytes([len(raw_data)]) + b"\x20" + bytes([len(raw_data)]))
        pb_cid = CID.for_block(DAG_PB, pb_data)
        store.put_many([(raw_cid, raw_data), (cbor_cid, cbor_data), (pb_cid, pb_data)])
        assert sorted(store.cids()) == sorted([raw_cid, cbor_cid, pb_cid])
        assert store.size() == 3
        store.delete(raw_cid)
        assert sorted(store.cids()) == sorted([cbor_cid, pb_cid])


def test_a_large_file_put_through_the_store_is_what_ipfs_cat_prints(store, http) -> None:
    data = _unique("unixfs") + os.urandom(600_000)  # 3 leaves under one dag-pb node
    cid = put_file(store, data)
    assert cid.codec == DAG_PB and str(cid).startswith("bafybei")
    assert read_file(store, cid) == data
    cat = http.post("/cat", params={"arg": str(cid), "timeout": "5000ms"})
    assert cat.status_code == 200, cat.text
    assert cat.content == data
    added = http.post("/add", params={"cid-version": "1", "raw-leaves": "true", "only-hash": "true",
                                      "cid-base": "base32"}, files={"file": ("f", data)})
    assert added.json()["Hash"] == str(cid)


def test_retries_ride_out_a_restart(private_node) -> None:
    state, port, api = private_node
    store = IpfsBlockStore.open(
        IpfsOptions(api=api, timeout_s=0.5, retries=40, retry_backoff_s=0.05, retry_backoff_max_s=0.5)
    )
    cid, data = _raw_block("retried")
    store.put(cid, data)
    _ipfs_env.stop_node(state)
    restarted: list[str] = []
    starter = threading.Thread(target=lambda: restarted.append(_ipfs_env.ensure_node(state, port)))
    starter.start()
    try:
        assert store.get(cid) == data  # retries until the node answers again
    finally:
        starter.join(120)
    assert restarted == [api]
    assert store.ipfs_statistics().retries >= 1
    store.close()


def test_a_want_of_many_missing_blocks_is_answered_within_its_budget(api: str) -> None:
    # A peer may want 1,024 blocks at once; each missing one costs timeout_s
    # on the node, so get_many stops looking after many_budget_s.
    missing = [CID.for_block(RAW, _unique(f"wanted-{i}")) for i in range(20)]
    held = _raw_block("held")
    with IpfsBlockStore.open(IpfsOptions(api=api, timeout_s=0.5, many_budget_s=1.0)) as s:
        s.put(*held)
        t0 = time.monotonic()
        assert s.get_many([held[0], *missing]) == {held[0]: held[1]}
        assert time.monotonic() - t0 < 4  # 20 × 0.5 s = 10 s unbounded
    with pytest.raises(ValueError):
        IpfsOptions(many_budget_s=0)
