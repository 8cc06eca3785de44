"""A delta's height must be exactly one more than its highest parent's.

Register (``put``) winners are ordered by height first, so a delta that claims
``h = 2**53`` over a parent of height 1 would win every register for good (job
rules, results, engine names).  The replica checks the height when the delta's
parents are known: at once when they are applied, or when a pending delta
becomes ready.  A delta with a wrong height is refused (``BadHeight``), and a
pending one is dropped with every delta waiting on it.
"""

from __future__ import annotations

import pytest

from lattice import goho, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.errors import BadHeight, BadRecord

GENESIS = records.make_genesis("dataset", "heights")[0]
HONEST = signing.Signer.from_seed(b"\x01" * 32)
ATTACKER = signing.Signer.from_seed(b"\x02" * 32)


def _replica() -> goho.Replica:
    return goho.Replica.empty(GENESIS, MemoryBlockStore())


def test_a_height_far_above_the_parents_is_refused() -> None:
    rep = _replica()
    rep.update([["put", "rule", "honest"]], HONEST)
    parents, height = rep.tip()
    assert height == 2
    cid, data = records.sign_delta(ATTACKER, GENESIS, parents, 2**53, [["put", "rule", "evil"]])
    with pytest.raises(BadHeight):
        rep.receive_untrusted(cid, data)
    assert rep.state.register("rule") == "honest"
    assert not rep.store.has(cid)
    assert rep.statistics().rejected == 1
    # A height below the rule is refused too (it would lose on purpose, but
    # the rule is exact so that every replica agrees on it).
    cid, data = records.sign_delta(ATTACKER, GENESIS, parents, 3, [["put", "rule", "evil"]])
    with pytest.raises(BadRecord):
        rep.receive_untrusted(cid, data)


def test_a_pending_delta_with_a_wrong_height_is_dropped_with_its_children() -> None:
    src = _replica()
    c1, d1 = src.update([["put", "rule", "honest"]], HONEST)
    bad_cid, bad = records.sign_delta(ATTACKER, GENESIS, [c1], 2**53, [["put", "rule", "evil"]])
    child_cid, child = records.sign_delta(ATTACKER, GENESIS, [bad_cid], 2**53, [["put", "x", 1]])
    rep = _replica()
    # Children first: nothing is known of their parents yet, so they wait.
    assert rep.receive_untrusted(child_cid, child).missing == [bad_cid]
    assert rep.receive_untrusted(bad_cid, bad).missing == [c1]
    receipt = rep.receive_untrusted(c1, d1)
    assert [d.cid for d in receipt.applied] == [c1]
    assert receipt.refused == 2  # for the caller to count (the syncer does, as BadHeight)
    assert rep.state.register("rule") == "honest"
    assert rep.heads == [c1]
    stats = rep.statistics()
    assert stats.pending == 0
    assert stats.rejected == 2
    # Refused deltas count as known: a re-announce does not fetch them again.
    assert rep.is_known(bad_cid) and rep.is_known(child_cid)
    assert rep.missing() == []


def test_deltas_waiting_on_a_refused_delta_are_dropped_with_it() -> None:
    rep = _replica()
    c1, _ = rep.update([["put", "rule", "honest"]], HONEST)
    bad_cid, bad = records.sign_delta(ATTACKER, GENESIS, [c1], 7, [["put", "rule", "evil"]])
    child_cid, child = records.sign_delta(ATTACKER, GENESIS, [bad_cid], 8, [["put", "x", 1]])
    assert rep.receive_untrusted(child_cid, child).missing == [bad_cid]
    with pytest.raises(BadHeight):
        rep.receive_untrusted(bad_cid, bad)
    assert rep.statistics().pending == 0
    assert rep.missing() == []
    grandchild_cid, grandchild = records.sign_delta(ATTACKER, GENESIS, [child_cid], 9, [["put", "y", 1]])
    with pytest.raises(BadHeight):
        rep.receive_untrusted(grandchild_cid, grandchild)
    assert rep.statistics().rejected == 3


def test_honest_forks_and_merges_keep_exact_heights() -> None:
    a, b = _replica(), _replica()
    c1, d1 = a.update([["put", "rule", "a1"]], HONEST)
    b.receive_untrusted(c1, d1)
    a.update([["put", "rule", "a2"]], HONEST)
    b.update([["put", "rule", "b2"]], ATTACKER)
    b.update([["put", "rule", "b3"]], ATTACKER)
    for c in b.store.cids():
        a.receive_untrusted(c, b.store.get(c))
    merged_cid, merged = a.update([["put", "rule", "a4"]], HONEST)
    assert records.delta_from_untrusted(merged_cid, merged).height == 4
    for c in a.store.cids():
        b.receive_untrusted(c, a.store.get(c))
    assert a.state == b.state
    assert a.state.register("rule") == "a4"
    assert a.statistics().rejected == b.statistics().rejected == 0


def test_a_syncer_counts_a_wrong_height_found_after_the_parents_arrive() -> None:
    """Fetched head first, parent after: the refusal happens inside the
    replica, not as a raised BadHeight, and the syncer still counts it (the
    node's ``hpcp_BadHeight``; it counted nothing before)."""
    from lattice import hpcp

    src = _replica()
    c1, _ = src.update([["put", "rule", "honest"]], HONEST)
    bad_cid, bad = records.sign_delta(ATTACKER, GENESIS, [c1], 2**53, [["put", "rule", "evil"]])
    src.store.put(bad_cid, bad)
    syncer = hpcp.Syncer(_replica(), signing.Signer.from_seed(b"\x05" * 32))
    outs = syncer.receive_untrusted("attacker", hpcp.encode_announce(ATTACKER, GENESIS, [bad_cid], 1), 1.0)
    for _ in range(20):
        if not outs:
            break
        msg = hpcp.decode_message_untrusted(outs.pop(0).data)
        if msg["t"] == "hpcp/want":
            outs += syncer.receive_untrusted("attacker", hpcp.serve_want(src.store, msg["cids"], 1 << 20), 1.0)
    assert syncer.replica.heads == [c1]
    assert syncer.statistics().rejected.get("BadHeight") == 1
