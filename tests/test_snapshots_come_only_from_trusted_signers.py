"""A fresh replica takes a snapshot only from a trusted signer, checked
against the heads it claims, and gives up on one nobody serves.

A snapshot replaces a replica's whole history with its signer's word: the
covered deltas are marked applied without being fetched.  So an HPCP syncer
installs one only when its signer is the syncer's own key or one of
``SyncOptions.snapshot_signers``, after fetching and verifying every covered
head (same object, heights matching the snapshot's).  A snapshot fetch that
does not finish within ``snapshot_timeout_s`` is abandoned and the replica
syncs from deltas instead.  Everything refused is counted in
``statistics().rejected``.
"""

from __future__ import annotations

from collections.abc import Callable

from lattice import codec, goho, hpcp, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID

GENESIS = records.make_genesis("dataset", "snapshots")[0]
AUTHOR = signing.Signer.from_seed(b"\x01" * 32)
TRUSTED = signing.Signer.from_seed(b"\x02" * 32)
ATTACKER = signing.Signer.from_seed(b"\x03" * 32)
ME = signing.Signer.from_seed(b"\x04" * 32)


def _history(n: int = 6) -> goho.Replica:
    rep = goho.Replica.empty(GENESIS, MemoryBlockStore())
    for i in range(n):
        rep.update([["add", "items", i], ["put", "rule", f"r{i}"]], AUTHOR)
    return rep


def _poison_snapshot(store: MemoryBlockStore, signer: signing.Signer, covers: list[CID],
                     height: int) -> CID:
    part_cid, part = codec.encode_block({"t": "goho/snapshot-part", "v": 1,
                                         "adds": [["items", ["evil"]]], "puts": []})
    store.put(part_cid, part)
    root_cid, root = records.sign_snapshot(signer, GENESIS, covers, height, [part_cid])
    store.put(root_cid, root)
    return root_cid


def _sync(src: goho.Replica, dst: hpcp.Syncer, snap: CID | None, *,
          serves: Callable[[CID], bool] = lambda c: True, rounds: int = 400) -> float:
    """Drive ``dst`` against a peer serving ``src``'s store (and ``snap``) until
    it holds ``src``'s heads; return the virtual time it took."""
    now = 1000.0
    announce = hpcp.encode_announce(AUTHOR, GENESIS, src.heads, int(now * 1000), snap)
    outs = dst.receive_untrusted("src", announce, now)
    for _ in range(rounds):
        while outs:
            msg = hpcp.decode_message_untrusted(outs.pop(0).data)
            if msg["t"] != "hpcp/want":
                continue
            cids = [c for c in msg["cids"] if serves(c)]
            if cids:  # a peer that does not serve a CID does not answer for it
                answer = hpcp.serve_want(src.store, cids, 4 * 1024 * 1024)
                outs += dst.receive_untrusted("src", answer, now)
        if set(src.heads) <= {c for c in dst.replica.heads} and not dst.syncing:
            return now
        now += 0.5
        outs = dst.tick(now)
    raise AssertionError(f"did not sync: heads {dst.replica.heads} vs {src.heads}")


def _fresh(options: hpcp.SyncOptions | None = None) -> hpcp.Syncer:
    return hpcp.Syncer(goho.Replica.empty(GENESIS, MemoryBlockStore()), ME, options)


def test_a_snapshot_from_an_untrusted_signer_is_refused() -> None:
    src = _history()
    snap = _poison_snapshot(src.store, ATTACKER, src.heads, src.height)
    dst = _fresh(hpcp.SyncOptions(snapshot_signers=frozenset({TRUSTED.public})))
    _sync(src, dst, snap)
    assert dst.replica.state == src.state
    assert not dst.replica.state.contains("items", "evil")
    assert dst.replica.base is None
    assert dst.statistics().rejected.get("untrusted_snapshot") == 1


def test_a_trusted_snapshot_must_match_the_heads_it_claims() -> None:
    src = _history()
    # Claims a made-up head, at a made-up height: nothing checks out.
    fake_head = CID.for_block(0x71, codec.encode({"not": "a delta"}))
    src.store.put(fake_head, codec.encode({"not": "a delta"}))
    snap = _poison_snapshot(src.store, TRUSTED, [fake_head], 99)
    dst = _fresh(hpcp.SyncOptions(snapshot_signers=frozenset({TRUSTED.public})))
    _sync(src, dst, snap)
    assert dst.replica.state == src.state
    assert dst.replica.base is None
    assert not dst.replica.is_known(fake_head)
    assert sum(dst.statistics().rejected.values()) >= 1
    # Right heads, wrong height.
    src2 = _history()
    snap2 = _poison_snapshot(src2.store, TRUSTED, src2.heads, src2.height + 5)
    dst2 = _fresh(hpcp.SyncOptions(snapshot_signers=frozenset({TRUSTED.public})))
    _sync(src2, dst2, snap2)
    assert dst2.replica.state == src2.state
    assert dst2.replica.base is None


def test_a_trusted_snapshot_is_installed_and_later_deltas_follow() -> None:
    src = _history()
    blocks = src.make_snapshot(TRUSTED)
    snap = blocks[-1][0]
    src.update([["add", "items", "after"]], AUTHOR)
    dst = _fresh(hpcp.SyncOptions(snapshot_signers=frozenset({TRUSTED.public})))
    _sync(src, dst, snap)
    assert dst.replica.base == snap
    assert dst.replica.state == src.state
    # Only the delta after the snapshot was applied, on top of the covered head.
    assert dst.replica.statistics().applied == 2
    assert dst.statistics().rejected == {}


def test_a_snapshot_nobody_serves_times_out_and_deltas_take_over() -> None:
    src = _history()
    blocks = src.make_snapshot(TRUSTED)
    snap = blocks[-1][0]
    opts = hpcp.SyncOptions(snapshot_signers=frozenset({TRUSTED.public}), snapshot_timeout_s=20.0)
    dst = _fresh(opts)
    took = _sync(src, dst, snap, serves=lambda c: c != snap)
    assert dst.replica.state == src.state
    assert dst.replica.base is None
    assert dst.statistics().rejected.get("snapshot_timeout") == 1
    assert took - 1000.0 < 20.0 + 30.0
