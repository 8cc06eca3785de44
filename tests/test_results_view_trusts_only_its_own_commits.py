"""The results view does not re-verify this node's own v1 results, and verifies everyone else's.

These are v1 records (signed by their runner: old peers, old data); v2
records carry no signature at all (see
tests/test_result_records_are_authenticated_by_their_delta.py).

"Own" means: a record with this node's key and runner id, in a delta this
node signed (committed here, or its own delta replayed by a peer).  A record
that claims our key in a delta by anyone else is verified like any other.
"""

from __future__ import annotations

from lattice import codec, goho, records, results, signing
from lattice.blockstore import MemoryBlockStore

from ._result_records import signed_v1

ME = signing.Signer.from_seed(b"\x31" * 32)
PEER = signing.Signer.from_seed(b"\x32" * 32)
MY_ID = signing.peer_id_of(ME.public)
PEER_ID = signing.peer_id_of(PEER.public)


def _task(i: int):
    return codec.cid_of({"task": i})


def _replica() -> goho.Replica:
    return goho.Replica.empty(records.make_genesis("results", "t")[0], MemoryBlockStore())


def _from_peer(rep: goho.Replica, signer: signing.Signer, ops: list) -> None:
    """``ops`` in a delta signed by ``signer`` and received as from the network."""
    parents, height = rep.tip()
    cid, data = records.sign_delta(signer, rep.genesis, parents, height, ops)
    assert rep.receive_untrusted(cid, data).applied


def test_own_records_in_own_commits_are_taken_without_verification() -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    recs = [signed_v1(ME, _task(i), codec.cid_of({"out": i}), MY_ID, i) for i in range(3)]
    rep.update([results.result_op(r) for r in recs], ME)
    assert [view.results(_task(i)) for i in range(3)] == [[r] for r in recs]
    assert view.statistics() == results.ResultsStatistics(tasks=3, records=3, rejected=0, own_trusted=3)


def test_own_records_replayed_by_a_peer_in_our_delta_are_ours_too() -> None:
    # A restarted node that lost its store gets its old deltas back from
    # peers; the delta's signature (ours) was verified on arrival.
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    rec = signed_v1(ME, _task(1), codec.cid_of({"out": 1}), MY_ID, 1)
    _from_peer(rep, ME, [results.result_op(rec)])
    assert view.results(_task(1)) == [rec]
    assert view.statistics().own_trusted == 1


def test_a_record_claiming_our_key_in_a_peers_delta_is_verified() -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    good = signed_v1(ME, _task(1), codec.cid_of({"out": 1}), MY_ID, 1)
    forged = dict(good, output=codec.cid_of({"out": "wrong"}), at=2)  # our name, not our signature
    _from_peer(rep, PEER, [results.result_op(forged)])
    assert view.results(_task(1)) == []
    assert view.statistics() == results.ResultsStatistics(tasks=0, records=0, rejected=1, own_trusted=0, verified=1)
    # A genuine record of ours relayed in a peer's delta is verified (and kept).
    _from_peer(rep, PEER, [results.result_op(good)])
    assert view.results(_task(1)) == [good]
    assert view.statistics() == results.ResultsStatistics(tasks=1, records=1, rejected=1, own_trusted=0, verified=2)


def test_peers_records_in_our_delta_and_misattributed_records_are_still_checked() -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    theirs = signed_v1(PEER, _task(1), codec.cid_of({"out": 1}), PEER_ID, 1)
    their_forgery = dict(theirs, output=codec.cid_of({"out": "wrong"}), at=2)
    in_their_name = signed_v1(ME, _task(2), codec.cid_of({"out": 2}), PEER_ID, 3)  # our key, their id
    wrong_key = signed_v1(ME, _task(3), codec.cid_of({"out": 3}), MY_ID, 4)
    rep.update([results.result_op(r) for r in (theirs, their_forgery, in_their_name)]
               + [["add", str(_task(4)), wrong_key]], ME)  # filed under another task
    assert view.results(_task(1)) == [theirs]
    assert not view.has(_task(2)) and not view.has(_task(3)) and not view.has(_task(4))
    # Verified: theirs and their forgery; the other two are refused before any signature check.
    assert view.statistics() == results.ResultsStatistics(tasks=1, records=1, rejected=3, own_trusted=0, verified=2)


def test_without_our_key_every_record_is_verified() -> None:
    rep = _replica()
    view = results.ResultsView(rep)
    good = signed_v1(ME, _task(1), codec.cid_of({"out": 1}), MY_ID, 1)
    rep.update([results.result_op(good), results.result_op(dict(good, at=9))], ME)
    assert view.results(_task(1)) == [good]
    assert view.statistics() == results.ResultsStatistics(tasks=1, records=1, rejected=1, own_trusted=0, verified=2)
