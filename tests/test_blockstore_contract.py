"""The BlockStore contract, run against every implementation.

Each test takes the ``store`` fixture, parametrized over the in-memory and the
SQLite store, so a new backend joins by adding one fixture branch.  Tests at
the bottom cover what only the disk store promises: persistence, ``verify()``
and refusing files that are not block stores.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import trio

from lattice.blockstore import BlockStore, BlockStoreStatistics, MemoryBlockStore
from lattice.cid import CID, DAG_CBOR, RAW
from lattice.diskstore import DiskBlockStore, DiskStoreOptions, VerifyReport
from lattice.errors import BadBlock, BlockNotFound, CorruptBlock, StoreError


def block(n: int, size: int = 32, codec: int = RAW) -> tuple[CID, bytes]:
    data = n.to_bytes(8, "big") * (size // 8 + 1)
    data = data[:size]
    return CID.for_block(codec, data), data


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockStore]:
    if request.param == "memory":
        s: BlockStore = MemoryBlockStore()
    else:
        s = DiskBlockStore.open(tmp_path / "blocks.db")
    try:
        yield s
    finally:
        s.close()


# -- the contract ------------------------------------------------------------


def test_store_satisfies_the_protocol(store: BlockStore) -> None:
    assert isinstance(store, BlockStore)


def test_put_then_get_returns_the_same_bytes(store: BlockStore) -> None:
    cid, data = block(1)
    store.put(cid, data)
    assert store.get(cid) == data
    assert type(store.get(cid)) is bytes


def test_put_accepts_any_bytes_like_and_get_returns_bytes(store: BlockStore) -> None:
    cid, data = block(2, codec=DAG_CBOR)
    store.put(cid, bytearray(data))
    got = store.get(cid)
    assert got == data and type(got) is bytes


def test_put_is_idempotent(store: BlockStore) -> None:
    cid, data = block(1)
    store.put(cid, data)
    store.put(cid, data)
    store.put_many([(cid, data), (cid, data)])
    assert store.size() == 1
    stats = store.statistics()
    assert (stats.puts, stats.duplicate_puts) == (1, 3)


def test_put_rejects_bytes_that_do_not_hash_to_the_cid(store: BlockStore) -> None:
    cid, data = block(1)
    with pytest.raises(BadBlock):
        store.put(cid, data + b"x")
    assert not store.has(cid)
    assert store.size() == 0
    assert store.statistics().rejected_puts == 1


def test_get_of_a_missing_block_raises_block_not_found(store: BlockStore) -> None:
    cid, _ = block(1)
    with pytest.raises(BlockNotFound):
        store.get(cid)
    with pytest.raises(KeyError):  # BlockNotFound is also a KeyError
        store.get(cid)
    assert store.statistics().misses == 2


def test_has_reports_presence(store: BlockStore) -> None:
    cid, data = block(1)
    assert not store.has(cid)
    store.put(cid, data)
    assert store.has(cid)


def test_cids_lists_every_block_once(store: BlockStore) -> None:
    blocks = [block(n) for n in range(2500)]  # more than one disk scan chunk
    store.put_many(blocks)
    listed = list(store.cids())
    assert len(listed) == len(blocks)
    assert set(listed) == {cid for cid, _ in blocks}


def test_size_counts_blocks_not_puts(store: BlockStore) -> None:
    assert store.size() == 0
    for n in range(10):
        store.put(*block(n))
    store.put(*block(3))
    assert store.size() == 10


def test_delete_removes_the_block_and_ignores_absent_ones(store: BlockStore) -> None:
    (c1, d1), (c2, d2) = block(1), block(2)
    store.put_many([(c1, d1), (c2, d2)])
    store.delete(c1)
    store.delete(c1)
    store.delete(block(99)[0])
    assert not store.has(c1) and store.has(c2)
    assert store.size() == 1
    assert store.statistics().deletes == 1
    store.put(c1, d1)  # a deleted block can be stored again
    assert store.get(c1) == d1


def test_put_many_stores_every_block(store: BlockStore) -> None:
    blocks = [block(n, size=n % 300) for n in range(1000)]
    store.put_many(iter(blocks))  # any iterable, even a one-shot one
    assert store.size() == len({cid for cid, _ in blocks})
    for cid, data in blocks:
        assert store.get(cid) == data


def test_put_many_with_one_bad_block_stores_none(store: BlockStore) -> None:
    good = [block(n) for n in range(50)]
    bad_cid, bad_data = block(1000)
    batch = good[:25] + [(bad_cid, bad_data + b"!")] + good[25:]
    with pytest.raises(BadBlock):
        store.put_many(batch)
    assert store.size() == 0
    assert not any(store.has(cid) for cid, _ in good)


def test_put_many_of_nothing_is_a_no_op(store: BlockStore) -> None:
    store.put_many([])
    assert store.size() == 0


def test_has_many_reports_the_present_ones_in_chunks(store: BlockStore) -> None:
    from lattice.blockstore import held_of

    present = [block(n) for n in range(600)]  # more than one IN (...) chunk
    store.put_many(present)
    absent = [block(n)[0] for n in range(1000, 1010)]
    assert held_of(store, [cid for cid, _ in present] + absent) == {cid for cid, _ in present}
    assert held_of(store, []) == set()


def test_get_many_returns_only_present_blocks(store: BlockStore) -> None:
    present = [block(n) for n in range(600)]  # more than one IN (...) chunk
    store.put_many(present)
    absent = [block(n)[0] for n in range(1000, 1010)]
    wanted = [cid for cid, _ in present] + absent
    got = store.get_many(wanted)
    assert got == dict(present)
    stats = store.statistics()
    assert (stats.hits, stats.misses) == (600, 10)


def test_closed_store_refuses_calls_and_close_is_idempotent(store: BlockStore) -> None:
    cid, data = block(1)
    store.put(cid, data)
    store.close()
    store.close()
    for call in (
        lambda: store.put(*block(2)),
        lambda: store.put_many([block(3)]),
        lambda: store.get(cid),
        lambda: store.get_many([cid]),
        lambda: store.has(cid),
        lambda: list(store.cids()),
        lambda: store.size(),
        lambda: store.delete(cid),
    ):
        with pytest.raises(StoreError):
            call()


def test_statistics_is_a_frozen_snapshot(store: BlockStore) -> None:
    store.put(*block(1))
    stats = store.statistics()
    assert isinstance(stats, BlockStoreStatistics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.blocks = 5  # type: ignore[misc]
    store.put(*block(2))
    assert stats.blocks == 1 and store.statistics().blocks == 2


def test_concurrent_writers_and_readers_see_consistent_blocks(store: BlockStore) -> None:
    errors: list[BaseException] = []
    per_thread = 300

    def writer(base: int) -> None:
        try:
            for n in range(base, base + per_thread, 3):
                store.put_many([block(n), block(n + 1), block(n + 2)])
                assert store.get(block(n + 2)[0]) == block(n + 2)[1]
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.size() == 4 * per_thread


# -- disk store only ---------------------------------------------------------------


def test_disk_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    DiskBlockStore(path)
    assert not path.exists()


def test_disk_store_keeps_blocks_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    blocks = [block(n) for n in range(100)]
    with DiskBlockStore.open(path) as s:
        s.put_many(blocks)
        s.delete(blocks[0][0])
    with DiskBlockStore.open(path) as s:
        assert s.size() == 99
        assert not s.has(blocks[0][0])
        assert s.get_many([cid for cid, _ in blocks]) == dict(blocks[1:])


def _corrupt_row_in_table(path: Path, cid: CID, garbage: bytes) -> None:
    # A second, independent connection: what a buggy tool or bit rot does.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (garbage, cid.raw))


def test_verify_finds_and_deletes_a_block_corrupted_in_the_table(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    blocks = [block(n) for n in range(50)]
    bad_cid, bad_data = blocks[7]
    with DiskBlockStore.open(path) as s:
        s.put_many(blocks)
        _corrupt_row_in_table(path, bad_cid, b"garbage")

        with pytest.raises(CorruptBlock):
            s.get(bad_cid)
        assert bad_cid not in s.get_many([bad_cid, blocks[0][0]])
        assert s.statistics().corrupt_reads == 2
        assert s.has(bad_cid)  # has() does not re-read the bytes

        report = s.verify()
        assert isinstance(report, VerifyReport)
        assert (report.checked, report.corrupt, report.deleted) == (50, (bad_cid,), 0)
        assert not report.ok and s.has(bad_cid)

        report = s.verify(delete_corrupt=True)
        assert (report.corrupt, report.deleted, report.blocks) == ((bad_cid,), 1, 49)
        assert not s.has(bad_cid) and s.size() == 49

        s.put(bad_cid, bad_data)  # healed by refetching
        assert s.get(bad_cid) == bad_data
        assert s.verify().ok


def test_verify_finds_a_block_whose_bytes_were_flipped_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    marker = b"MESHD-BITROT-TARGET-" * 20
    cid = CID.for_block(RAW, marker)
    with DiskBlockStore.open(path) as s:
        s.put_many([block(n) for n in range(20)] + [(cid, marker)])
    # A clean close checkpointed the log, so the bytes are in the main file.
    raw = bytearray(path.read_bytes())
    at = raw.find(marker)
    assert at >= 0
    raw[at + 5] ^= 0xFF
    path.write_bytes(bytes(raw))

    with DiskBlockStore.open(path) as s:
        with pytest.raises(CorruptBlock):
            s.get(cid)
        report = s.verify()
        assert report.corrupt == (cid,) and report.checked == 21


def test_get_without_verify_on_get_serves_stored_bytes_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    cid, data = block(1)
    with DiskBlockStore.open(path, DiskStoreOptions(verify_on_get=False)) as s:
        s.put(cid, data)
        _corrupt_row_in_table(path, cid, b"rotten")
        assert s.get(cid) == b"rotten"  # the documented cost of turning it off
        assert s.verify().corrupt == (cid,)


def test_verify_reports_malformed_keys_and_resyncs_the_counter(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    with DiskBlockStore.open(path) as s:
        s.put_many([block(n) for n in range(10)])
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO blocks (cid, data) VALUES (?, ?)", (b"\x01short", b"x"))
            conn.execute("DELETE FROM blocks WHERE cid = ?", (block(0)[0].raw,))
        assert s.size() == 10  # the counter does not know about foreign edits
        assert len(list(s.cids())) == 9  # malformed keys are never handed out

        report = s.verify(delete_corrupt=True)
        assert (report.malformed_keys, report.deleted, report.corrupt) == (1, 1, ())
        assert report.blocks == 9 and s.size() == 9


def test_open_refuses_a_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match="not a meshd block store"):
        DiskBlockStore.open(path)


def test_open_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError):
        DiskBlockStore.open(path)


def test_open_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "blocks.db"
    DiskBlockStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema 99"):
        DiskBlockStore.open(path)


def test_open_in_a_missing_directory_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        DiskBlockStore.open(tmp_path / "no" / "such" / "dir.db")


@pytest.mark.parametrize(
    "bad",
    [
        {"synchronous": "off"},
        {"verify_on_get": 1},
        {"cache_size_kib": 10},
        {"cache_size_kib": 1.5},
        {"busy_timeout_s": -1},
        {"busy_timeout_s": float("nan")},
        {"checkpoint_pages": 10},
    ],
)
def test_disk_options_reject_invalid_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        DiskStoreOptions(**bad)


def test_disk_put_many_throughput_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints numbers for the lead to quote; asserts only that the work was done."""
    batches = [[block(b * 1000 + i, size=100) for i in range(1000)] for b in range(20)]
    cids = [cid for batch in batches for cid, _ in batch]
    lines = []
    for sync in ("full", "normal"):
        with DiskBlockStore.open(tmp_path / f"{sync}.db", DiskStoreOptions(synchronous=sync)) as s:
            start = time.perf_counter()
            for batch in batches:
                s.put_many(batch)
            rate = len(cids) / (time.perf_counter() - start)
            assert s.size() == len(cids)
        lines.append(f"put_many(1000 x 100 B) synchronous={sync}: {rate:,.0f} blocks/s")
    for verify in (True, False):
        with DiskBlockStore.open(tmp_path / "full.db", DiskStoreOptions(verify_on_get=verify)) as s:
            start = time.perf_counter()
            for cid in cids:
                s.get(cid)
            per_get = (time.perf_counter() - start) / len(cids) * 1e6
        lines.append(f"get verify_on_get={verify}: {per_get:.2f} us/block")
    with capsys.disabled():
        print("\n[diskstore throughput] " + "; ".join(lines))


async def test_store_is_usable_from_trio_worker_threads(store: BlockStore) -> None:
    blocks = [block(n) for n in range(200)]

    async def put_one(cid: CID, data: bytes) -> None:
        await trio.to_thread.run_sync(store.put, cid, data)

    async with trio.open_nursery() as nursery:
        for cid, data in blocks:
            nursery.start_soon(put_one, cid, data)
    got = await trio.to_thread.run_sync(store.get_many, [cid for cid, _ in blocks])
    assert got == dict(blocks)
