"""A v2 result record is authenticated by the delta that carries it: one signature per delta, not per result.

The view accepts a v2 record only from a delta authored by its runner, and
v1 records (signed on their own by old peers) keep being verified.
"""

from __future__ import annotations

import pytest

from lattice import codec, goho, records, results, signing
from lattice.blockstore import MemoryBlockStore

from ._result_records import signed_v1, v2_in_any_name

ME = signing.Signer.from_seed(b"\x41" * 32)
PEER = signing.Signer.from_seed(b"\x42" * 32)
THIRD = signing.Signer.from_seed(b"\x43" * 32)
MY_ID, PEER_ID, THIRD_ID = (signing.peer_id_of(s.public) for s in (ME, PEER, THIRD))

# Frozen v1 fixture: the result record of docs/protocol.md before v2 (Bob's,
# signed by Bob's key), byte for byte.
V1_RECORD = bytes.fromhex(
    "aa6173584023393727b9e8dd90238661538fd1fae963df0674cec480f8e5d76a"
    "cbcb17f1656590478c8e5c5db92d234fa2bdb7effc01448785b5241deffe1797"
    "6cac88010761746c6d657368642f726573756c746176016261741b0000018cc2"
    "5203a062706b582075f6837d070a852e0e14dad978a96f77ac60faccb15ec329"
    "a453c8597db836e8647461736bd82a58250001711220d954e5524e183dd270f9"
    "b31be2a5ae48a5e214c11099d871ebbe04010bbb59fd666f7574707574d82a58"
    "2500017112208725bf8b690028dcb2235b99139d38455078b150b68132f4e188"
    "7b9492d870856672756e6e65727834313244334b6f6f57486b7174524a416d65"
    "34433261324337634c6a455a617a54676b7276734a6f526763794a646b786f64"
    "44383366737464657272606a6475726174696f6e5f73fb3f8930be0ded288d"
)
V1_RECORD_CID = "bafyreih5q5l6gppv6zjpgniae5yjbi5exgrj6ngzisd5l2rknznk236s74"


def _task(i: int):
    return codec.cid_of({"task": i})


def _out(i: object):
    return codec.cid_of({"out": i})


def _replica(store: MemoryBlockStore | None = None) -> goho.Replica:
    return goho.Replica.empty(records.make_genesis("results", "t")[0], store or MemoryBlockStore())


def _from_peer(rep: goho.Replica, signer: signing.Signer, recs: list[dict]) -> None:
    """``recs`` in one delta signed by ``signer``, received as from the network."""
    parents, height = rep.tip()
    cid, data = records.sign_delta(signer, rep.genesis, parents, height, [results.result_op(r) for r in recs])
    assert rep.receive_untrusted(cid, data).applied


class _Ed25519Count:
    """Counts Ed25519 signatures made and verified through :mod:`lattice.signing`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.signed = self.verified = 0
        real_key, real_sign = signing.Ed25519PublicKey, signing.Signer.sign
        count = self

        class _CountingKey:
            @staticmethod
            def from_public_bytes(data: bytes):
                count.verified += 1  # verify_signature builds one key per verification
                return real_key.from_public_bytes(data)

        def sign(signer: signing.Signer, data: bytes) -> bytes:
            count.signed += 1
            return real_sign(signer, data)

        monkeypatch.setattr(signing, "Ed25519PublicKey", _CountingKey)
        monkeypatch.setattr(signing.Signer, "sign", sign)


def test_result_record_builds_an_unsigned_v2_record_in_the_signers_name() -> None:
    rec = results.result_record(ME, _task(1), _out(1), MY_ID, 7, duration_s=0.5, stderr="")
    assert rec == {"t": "meshd/result", "v": 2, "task": _task(1), "output": _out(1), "runner": MY_ID, "at": 7,
                   "duration_s": 0.5, "stderr": ""}
    with pytest.raises(ValueError):
        results.result_record(ME, _task(1), _out(1), PEER_ID, 7)  # another runner's name: nobody would accept it
    with pytest.raises(ValueError):
        results.result_record(ME, _task(1), _out(1), MY_ID, 7, s=b"\x00" * 64)


def test_a_v2_record_in_its_runners_delta_is_accepted_with_one_verification_per_delta(monkeypatch) -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    recs = [results.result_record(PEER, _task(i), _out(i), PEER_ID, i) for i in range(5)]
    parents, height = rep.tip()
    cid, data = records.sign_delta(PEER, rep.genesis, parents, height, [results.result_op(r) for r in recs])
    count = _Ed25519Count(monkeypatch)
    assert rep.receive_untrusted(cid, data).applied
    assert [view.results(_task(i)) for i in range(5)] == [[r] for r in recs]
    assert count.verified == 1  # the delta's signature, once, for all five results
    assert view.statistics() == results.ResultsStatistics(tasks=5, records=5, rejected=0, own_trusted=0, verified=0)
    assert results.verify_result_record(recs[0], PEER.public)


def test_a_v2_record_naming_another_runner_is_rejected() -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    in_my_name = v2_in_any_name(_task(1), _out("wrong"), MY_ID, 1)
    in_third_name = v2_in_any_name(_task(2), _out("wrong"), THIRD_ID, 2)
    _from_peer(rep, PEER, [in_my_name, in_third_name])
    assert view.results(_task(1)) == [] and view.results(_task(2)) == []
    assert not view.has(_task(1)) and not view.has(_task(2))
    assert view.statistics() == results.ResultsStatistics(tasks=0, records=0, rejected=2, own_trusted=0, verified=0)
    assert not results.verify_result_record(in_third_name, PEER.public)
    assert not results.verify_result_record(in_third_name)  # no delta at hand: never authentic
    assert results.verify_result_record(in_third_name, THIRD.public)


def test_malformed_and_misfiled_v2_records_are_rejected() -> None:
    rep = _replica()
    view = results.ResultsView(rep)
    good = results.result_record(PEER, _task(1), _out(1), PEER_ID, 1)
    with_pk = dict(good, pk=PEER.public, at=2)
    no_at = {k: v for k, v in good.items() if k != "at"}
    parents, height = rep.tip()
    ops = [results.result_op(with_pk), ["add", str(_task(1)), no_at], ["add", str(_task(9)), dict(good, at=3)]]
    cid, data = records.sign_delta(PEER, rep.genesis, parents, height, ops)
    assert rep.receive_untrusted(cid, data).applied
    assert not view.has(_task(1)) and not view.has(_task(9))
    assert view.statistics().rejected == 3


def test_v1_signed_records_are_still_accepted_and_forged_ones_rejected() -> None:
    old = codec.decode_untrusted(V1_RECORD)
    assert str(codec.cid_of(old)) == V1_RECORD_CID and old["v"] == 1
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    forged = dict(old, output=_out("wrong"), at=old["at"] + 1)
    # A v1 record authenticates itself: relayed in anyone's delta, it counts.
    _from_peer(rep, PEER, [old, forged])
    assert view.results(old["task"]) == [old]
    assert view.statistics() == results.ResultsStatistics(tasks=1, records=1, rejected=1, own_trusted=0, verified=2)
    assert results.verify_result_record(old) and not results.verify_result_record(forged, PEER.public)


def test_a_nodes_own_results_cost_no_signature_operation(monkeypatch) -> None:
    rep = _replica()
    view = results.ResultsView(rep, own_key=ME.public)
    count = _Ed25519Count(monkeypatch)
    recs = [results.result_record(ME, _task(i), _out(i), MY_ID, i) for i in range(4)]
    rep.update([results.result_op(r) for r in recs], ME)
    assert [view.results(_task(i)) for i in range(4)] == [[r] for r in recs]
    assert (count.signed, count.verified) == (1, 0)  # the delta's signature; no verification at all
    assert view.statistics() == results.ResultsStatistics(tasks=4, records=4, rejected=0, own_trusted=4, verified=0)


def test_a_copy_in_someone_elses_delta_does_not_hide_the_runners_own() -> None:
    # The set keeps one copy per task: when a peer's copy arrives first, the
    # runner's own delta adds nothing new, and the view must still bind it.
    rep = _replica()
    view = results.ResultsView(rep)
    rec = results.result_record(THIRD, _task(1), _out(1), THIRD_ID, 1)
    _from_peer(rep, PEER, [rec])
    assert view.results(_task(1)) == [] and view.statistics().rejected == 1
    _from_peer(rep, THIRD, [rec])
    assert view.results(_task(1)) == [rec]
    assert view.statistics() == results.ResultsStatistics(tasks=1, records=1, rejected=0, own_trusted=0, verified=0)


def test_a_view_built_on_a_restarted_replica_binds_records_to_their_stored_deltas() -> None:
    store = MemoryBlockStore()
    rep = _replica(store)
    mine = results.result_record(ME, _task(1), _out(1), MY_ID, 1)
    theirs = results.result_record(PEER, _task(2), _out(2), PEER_ID, 2)
    forgery = v2_in_any_name(_task(3), _out("wrong"), THIRD_ID, 3)  # PEER writes in THIRD's name
    old = signed_v1(PEER, _task(4), _out(4), PEER_ID, 4)
    rep.update([results.result_op(mine)], ME)
    _from_peer(rep, PEER, [theirs, forgery, old])
    live = results.ResultsView(rep, own_key=ME.public).statistics()
    # A restart: the replica is replayed from the store before any view exists.
    again = goho.Replica.open(rep.genesis, store, rep.heads)
    view = results.ResultsView(again, own_key=ME.public)
    assert [view.results(_task(i)) for i in (1, 2, 3, 4)] == [[mine], [theirs], [], [old]]
    assert view.statistics() == live == results.ResultsStatistics(
        tasks=3, records=3, rejected=1, own_trusted=1, verified=1)
    # The runner's own delta still binds the refused record later.
    _from_peer(again, THIRD, [forgery])
    assert view.results(_task(3)) == [forgery] and view.statistics().rejected == 0


def test_v2_records_that_came_with_a_snapshot_are_taken_on_its_word() -> None:
    # No delta of theirs is at hand: the snapshot vouches for its whole state,
    # misattributed records included (snapshot authentication: issue 14).
    src = _replica()
    theirs = results.result_record(PEER, _task(1), _out(1), PEER_ID, 1)
    forgery = v2_in_any_name(_task(2), _out("wrong"), THIRD_ID, 2)
    _from_peer(src, PEER, [theirs, forgery])
    blocks = src.make_snapshot(PEER)
    snap = records.snapshot_from_untrusted(*blocks[-1])
    parts = [records.part_from_untrusted(c, d) for c, d in blocks[:-1]]
    fresh = _replica()  # a store without the deltas
    fresh.install_snapshot(snap, parts)
    view = results.ResultsView(fresh)
    assert view.results(_task(1)) == [theirs] and view.results(_task(2)) == [forgery]
    assert view.statistics().rejected == 0
