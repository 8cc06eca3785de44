"""CRDT laws of GOHO merge, as Hypothesis properties.

Merge is the union of two replicas' DAGs; we check it is commutative,
associative and idempotent, and that any delivery order of the same blocks
(including parents after children) reaches the same state and heads.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import goho, records, signing
from lattice.blockstore import MemoryBlockStore

GENESIS = records.make_genesis("queue", "laws")[0]
SIGNERS = [signing.Signer.from_seed(bytes([i]) * 32) for i in range(3)]

op = st.tuples(
    st.sampled_from(["add", "put"]),
    st.sampled_from(["available", "assigned", "split/results"]),
    st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans()),
).map(list)
# A history: a list of steps (replica index, ops, sync-from index or None).
step = st.tuples(st.integers(0, 2), st.lists(op, min_size=1, max_size=3), st.none() | st.integers(0, 2))


def _blocks(rep: goho.Replica) -> list[tuple]:
    store = rep.store
    return [(c, store.get(c)) for c in store.cids()]


def _merge_into(dst: goho.Replica, *srcs: goho.Replica) -> None:
    for src in srcs:
        for cid, data in _blocks(src):
            dst.receive_untrusted(cid, data)


def _fresh() -> goho.Replica:
    return goho.Replica.empty(GENESIS, MemoryBlockStore())


def _build(steps) -> list[goho.Replica]:
    reps = [_fresh() for _ in range(3)]
    for who, ops, sync_from in steps:
        if sync_from is not None and sync_from != who:
            _merge_into(reps[who], reps[sync_from])
        reps[who].update(ops, SIGNERS[who])
    return reps


def _merged(*reps: goho.Replica) -> goho.Replica:
    out = _fresh()
    _merge_into(out, *reps)
    return out


def _same(a: goho.Replica, b: goho.Replica) -> bool:
    return a.state == b.state and a.heads == b.heads


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=8))
def test_merge_is_commutative(steps) -> None:
    a, b, _ = _build(steps)
    assert _same(_merged(a, b), _merged(b, a))


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=8))
def test_merge_is_associative(steps) -> None:
    a, b, c = _build(steps)
    assert _same(_merged(_merged(a, b), c), _merged(a, _merged(b, c)))


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=8))
def test_merge_is_idempotent(steps) -> None:
    a, _, _ = _build(steps)
    again = _merged(a)
    _merge_into(again, a)
    assert _same(again, a)
    _merge_into(a, a)
    assert _same(again, a)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=8), st.integers(0, 2**32))
def test_any_delivery_order_converges(steps, seed) -> None:
    a, b, c = _build(steps)
    blocks = _blocks(a) + _blocks(b) + _blocks(c) + _blocks(a)  # duplicates too
    reference = _merged(a, b, c)
    shuffled = list(blocks)
    random.Random(seed).shuffle(shuffled)
    rep = _fresh()
    for cid, data in shuffled:
        rep.receive_untrusted(cid, data)
    assert _same(rep, reference)
    assert rep.statistics().pending == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(step, min_size=1, max_size=8))
def test_snapshot_bootstrap_matches_full_replay(steps) -> None:
    a, b, _ = _build(steps)
    _merge_into(a, b)
    blocks = a.make_snapshot(SIGNERS[0], part_entries=3)
    root_cid, root = blocks[-1]
    snap = records.snapshot_from_untrusted(root_cid, root)
    parts = [records.part_from_untrusted(c, d) for c, d in blocks[:-1]]
    fresh = _fresh()
    covers = [records.delta_from_untrusted(c, a.store.get(c)) for c in snap.covers]
    fresh.install_snapshot(snap, parts, covers)
    assert fresh.state == a.state
    assert fresh.heads == a.heads
    # Updates after the snapshot still merge.
    b.update([["add", "available", 99]], SIGNERS[1])
    _merge_into(fresh, b)
    _merge_into(a, b)
    assert fresh.state == a.state
