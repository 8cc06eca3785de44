"""The storage budget's policy (lattice/storebudget.py), its store counters and its LRU clock.

Properties of :func:`lattice.storebudget.choose` over random block sets:
protected blocks are never dropped; nothing is dropped under the budget;
drops go least recently used first; a round stops as soon as it reaches its
target, or else has dropped everything it may.  Then the byte counter the
budget reads (kept by the disk store's writes) and the in-memory LRU clock.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec
from lattice.blockstore import MemoryBlockStore
from lattice.diskstore import DiskBlockStore
from lattice.storebudget import REASONS, BlockUse, choose, target_bytes
from meshd.config import config_from_mapping
from meshd.errors import ConfigError
from meshd.store.usage import UsageTracking


def _cid(i: int):
    return codec.encode_block({"block": i})[0]


blocks_st = st.lists(
    st.tuples(st.integers(1, 5000), st.integers(0, 50), st.booleans(), st.booleans(), st.integers(0, 3)),
    min_size=0, max_size=60,
).map(lambda rows: [BlockUse(_cid(i), size, float(last), pinned=p, in_use=u, holders=h)
                    for i, (size, last, p, u, h) in enumerate(rows)])


@settings(max_examples=300, deadline=None)
@given(blocks_st, st.integers(0, 200_000), st.integers(0, 100_000), st.floats(0.1, 1.0), st.integers(1, 3))
def test_choose_keeps_protected_blocks_and_goes_least_recently_used_first(
        blocks: list[BlockUse], extra: int, budget: int, low: float, min_holders: int) -> None:
    used = sum(b.size for b in blocks) + extra
    target = target_bytes(budget, low)
    out = choose(blocks, used, budget, target, min_holders)
    by_cid = {b.cid: b for b in blocks}
    dropped = [by_cid[c] for c in out.drop]
    assert len(set(out.drop)) == len(out.drop)
    assert out.freed == sum(b.size for b in dropped)
    # Never a protected block.
    assert all(not b.pinned and not b.in_use and b.holders >= min_holders for b in dropped)
    if budget == 0 or used <= budget:
        assert out.drop == () and not out.still_over
        return
    droppable = [b for b in blocks if not b.pinned and not b.in_use and b.holders >= min_holders]
    order = lambda b: (b.last_use, b.cid.raw)  # noqa: E731
    if dropped:
        newest = max(order(b) for b in dropped)
        # Every droppable block older than the newest dropped one went too (LRU, no skipping).
        assert all(b in dropped for b in droppable if order(b) < newest)
        # It stopped as soon as it could: without the newest drop it was still above the target.
        assert used - (out.freed - max(dropped, key=order).size) > target
    if used - out.freed > target:
        assert set(out.drop) == {b.cid for b in droppable}  # short of the target only when nothing is left
    assert out.still_over == (used - out.freed > budget)
    assert sum(out.refused.values()) <= len(blocks) - len(dropped)


def test_refusals_are_counted_by_their_first_reason() -> None:
    blocks = [BlockUse(_cid(0), 10, 0.0, pinned=True, in_use=True), BlockUse(_cid(1), 10, 1.0, in_use=True),
              BlockUse(_cid(2), 10, 2.0, holders=1), BlockUse(_cid(3), 10, 3.0, holders=2)]
    out = choose(blocks, used=100, budget=50, target=45, min_holders=2)
    assert out.drop == (_cid(3),)
    assert out.refused == {"pinned": 1, "in_use": 1, "few_holders": 1}
    assert out.still_over  # 90 bytes left: the protections outweigh the budget
    assert set(out.refused) == set(REASONS)


def test_choose_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        choose([], 10, 5, 4, 0)
    with pytest.raises(ValueError):
        choose([], 10, 5, 6, 1)
    with pytest.raises(ValueError):
        target_bytes(-1, 0.9)
    with pytest.raises(ValueError):
        target_bytes(100, 0.0)


@pytest.mark.parametrize("bad", [{"max_bytes": -1}, {"max_bytes": "1G"}, {"min_holders": 0},
                                 {"low_water": 1.5}, {"low_water": 0}, {"check_s": 0}, {"min_idle_s": -1},
                                 {"budget": 1}])
def test_store_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_mapping({"store": bad})


def test_store_config_defaults_to_no_budget() -> None:
    c = config_from_mapping({})
    assert c.store.max_bytes == 0 and c.store.min_holders == 2
    assert config_from_mapping({"store": {"max_bytes": 1 << 20}}).store.max_bytes == 1 << 20


def test_disk_store_counts_its_bytes_through_puts_deletes_and_reopen(tmp_path) -> None:
    path = tmp_path / "blocks.db"
    blocks = [codec.encode_block({"i": i, "pad": b"x" * (i * 100)}) for i in range(20)]
    total = sum(len(d) for _, d in blocks)
    with DiskBlockStore.open(path) as s:
        s.put_many(blocks[:10])
        s.put_many(blocks[5:] + blocks[:2])  # held ones and a repeat in one batch add nothing
        s.put_many(blocks[:5])
        s.put(*blocks[0])
        assert s.statistics().blocks == 20
        assert s.used_bytes() == total
        rows = list(s.usage())
        assert {c for c, _, _ in rows} == {c for c, _ in blocks}
        assert all(size == len(dict(blocks)[c]) for c, size, _ in rows)
        assert s.delete_many([c for c, _ in blocks[:5]] + [_cid(999)]) == 5
        s.delete(blocks[5][0])
        left = total - sum(len(d) for _, d in blocks[:6])
        assert s.used_bytes() == left
    # A store written before the byte counter existed gets it on open.
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key = 'bytes'")
    conn.commit()
    conn.close()
    with DiskBlockStore.open(path) as s:
        assert s.used_bytes() == left
        s.put(*blocks[0])
        assert s.used_bytes() == left + len(blocks[0][1])
        assert s.verify().blocks == 15 and s.used_bytes() == left + len(blocks[0][1])


def test_usage_clock_notes_reads_and_writes_in_memory_only() -> None:
    now = [100.0]
    inner = MemoryBlockStore()
    s = UsageTracking(inner, clock=lambda: now[0])
    a, b = codec.encode_block({"a": 1}), codec.encode_block({"b": 2})
    inner.put(*a)  # written before the wrapper: no use noted
    assert s.last_use(a[0]) is None
    s.put(*b)
    assert s.last_use(b[0]) == 100.0
    now[0] = 105.0
    assert s.get(a[0]) == a[1]
    assert s.last_use(a[0]) == 105.0
    now[0] = 107.0
    s.get_many([a[0], b[0]])
    assert s.last_use(b[0]) == 107.0
    assert s.delete_many([a[0]]) == 1 and s.last_use(a[0]) is None
    assert s.used_bytes() == len(b[1])  # everything else passes through
    assert s.tracked() == 1
