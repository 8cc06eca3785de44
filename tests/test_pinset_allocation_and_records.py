"""The pinset (``lattice.pinset``): who keeps which pin, and what the records say.

Allocation is weighted rendezvous hashing, so every node computes the same
archivists for a pin from the same live set, an archivist that leaves moves
only its own pins, and more free space draws more pins.  Pin state is the
newest pin or unpin record; reports are signed by the archivist they name.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec, pinset
from lattice.errors import BadRecord
from lattice.signing import Signer, peer_id_of
from lattice.state import State

CIDS = [codec.cid_of({"pin": i}) for i in range(400)]
ARCHIVISTS = [f"archivist-{i}" for i in range(5)]


def _state(*ops: list) -> State:
    s = State()
    for _, key, value in ops:
        s.add_encoded(key, codec.encode(value))
    return s


def test_allocation_is_deterministic_and_independent_of_order() -> None:
    weights = {a: 1 for a in ARCHIVISTS}
    for cid in CIDS[:50]:
        first = pinset.allocate(cid, 2, weights)
        assert len(first) == 2 and len(set(first)) == 2
        assert pinset.allocate(cid, 2, dict(reversed(list(weights.items())))) == first


def test_replicas_beyond_the_live_archivists_take_them_all() -> None:
    assert sorted(pinset.allocate(CIDS[0], 5, {"a": 1, "b": 1})) == ["a", "b"]
    assert pinset.allocate(CIDS[0], 3, {}) == []


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=4), st.integers(min_value=1, max_value=3))
def test_an_archivist_leaving_moves_only_its_own_pins(leaver_index: int, replicas: int) -> None:
    weights = {a: 4 for a in ARCHIVISTS}
    leaver = ARCHIVISTS[leaver_index]
    rest = {a: w for a, w in weights.items() if a != leaver}
    for cid in CIDS[:100]:
        before = pinset.allocate(cid, replicas, weights)
        after = pinset.allocate(cid, replicas, rest)
        survivors = [a for a in before if a != leaver]
        assert after[:len(survivors)] == survivors  # the others keep what they had, in order
        assert leaver not in after


def test_more_free_space_draws_proportionally_more_pins() -> None:
    weights = {"big": pinset.weight(64 << 30), "small": pinset.weight(16 << 30)}
    counts = Counter(pinset.allocate(cid, 1, weights)[0] for cid in CIDS)
    assert counts["big"] > 2.5 * counts["small"] > 0


def test_weight_is_a_power_of_two_bucket_of_free_mib() -> None:
    assert pinset.weight(0) == 1 and pinset.weight(-5) == 1
    assert pinset.weight(3 << 20) == 2 and pinset.weight(4 << 20) == 4
    assert pinset.weight((5 << 30) + 1) == pinset.weight(6 << 30) == 4096  # small drift: same bucket


def test_newest_pin_or_unpin_wins_and_expired_pins_are_gone() -> None:
    a, b = CIDS[0], CIDS[1]
    s = _state(pinset.pin_op(a, 2, "p", 100, name="first"),
               pinset.unpin_op(a, "p", 200),
               pinset.pin_op(a, 3, "p", 300, name="again"),
               pinset.pin_op(b, 1, "q", 100, expire_ms=1_000))
    live = pinset.pins(s, now_ms=500)
    assert live[a].replicas == 3 and live[a].name == "again"
    assert live[b].expire == 1_000
    assert b not in pinset.pins(s, now_ms=1_000)
    s.add_encoded(pinset.UNPINS, codec.encode(pinset.unpin_op(a, "p", 400)[2]))
    assert a not in pinset.pins(s, now_ms=500)


@pytest.mark.parametrize("change", [{"replicas": 0}, {"replicas": pinset.MAX_REPLICAS + 1}, {"cid": "text"},
                                    {"name": "x" * 300}, {"dataset": False}, {"extra": 1}, {"t": "other"}])
def test_malformed_pins_are_refused_and_ignored(change: dict) -> None:
    rec = {**pinset.pin_op(CIDS[0], 1, "p", 1)[2], **change}
    with pytest.raises(BadRecord):
        pinset.pin_from_untrusted(rec)
    assert pinset.pins(_state(["add", pinset.PINS, rec]), 0) == {}


def test_reports_verify_and_the_newest_per_archivist_wins() -> None:
    alice, mallory = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)
    first = pinset.held_record(alice, CIDS[0], True, 3, 300, 10)
    later = pinset.held_record(alice, CIDS[0], False, 0, 0, 20)
    forged = dict(pinset.held_record(mallory, CIDS[0], True, 9, 9, 30), archivist=peer_id_of(alice.public))
    s = _state(pinset.held_op(first), pinset.held_op(later), pinset.held_op(forged))
    got = pinset.reports(s)[CIDS[0]]
    assert list(got) == [peer_id_of(alice.public)]
    assert got[peer_id_of(alice.public)].held is False and got[peer_id_of(alice.public)].at == 20
    with pytest.raises(BadRecord):
        pinset.held_from_untrusted(forged)
    with pytest.raises(BadRecord):
        pinset.held_from_untrusted({**first, "blocks": -1})
