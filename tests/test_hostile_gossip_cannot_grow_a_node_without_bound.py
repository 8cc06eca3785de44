"""A hostile peer cannot grow a node's memory or disk without bound.

* A node follows an announced object only for a reason: the announcement must
  be well formed and signed, each author may make it follow at most
  ``follow_per_author`` objects, and all authors together ``max_auto_follow``.
  Garbage gossip makes it follow nothing.
* Out-of-order deltas wait in ``pending`` at most ``max_pending_per_author``
  per author (and ``max_pending`` in all).
* Linked blocks are discovered at most ``MAX_LINK_DEPTH`` levels into a value
  and ``MAX_LINKS_PER_DELTA`` per delta, and at most ``max_linked_wanted`` are
  wanted at once.
* The rate-limit table and the peer table evict idle entries instead of
  growing (or refusing newcomers) for ever.

Every refusal is counted in the node's rejection counters.
"""

from __future__ import annotations

import pytest

from lattice import codec, goho, hpcp, records
from lattice.admission import TokenBucket
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.errors import TooManyPending
from lattice.meshcore import MAX_LINK_DEPTH, MAX_LINKS_PER_DELTA, MeshCore, MeshCoreOptions
from lattice.meshout import Follow, Request
from lattice.peers import PeerTable, PeerTableOptions
from lattice.signing import Signer, peer_id_of

ME = Signer.from_seed(b"\x21" * 32)
QUEUE = records.make_genesis("queue", "growth")[0]


def _core(**options) -> MeshCore:
    core = MeshCore(peer_id_of(ME.public), ME, MemoryBlockStore(), options=MeshCoreOptions(**options))
    core.follow(goho.Replica.empty(QUEUE, core.store), 0.0)
    core.start(0.0)
    return core


def _follows(outs) -> list[CID]:
    return [o.genesis for o in outs if isinstance(o, Follow)]


def test_garbage_announcements_make_a_node_follow_nothing() -> None:
    core = _core()
    author = Signer.from_seed(b"\x22" * 32)
    followed = []
    for i in range(200):
        g = codec.cid_of({"object": i})
        good = hpcp.encode_announce(author, g, [codec.cid_of({"head": i})], 1000 + i)
        obj = codec.decode_trusted(good)
        bad = [
            codec.encode({"t": "hpcp/announce", "v": 1, "g": g}),  # missing fields
            codec.encode({**obj, "s": b"\x00" * 64}),  # a signature that does not verify
            codec.encode({**obj, "heads": "not a list"}),
        ][i % 3]
        followed += _follows(core.receive("peer-x", bad, 10.0))
    assert followed == []
    rejected = core.statistics(10.0).rejected
    assert rejected.get("bad_gossip", 0) + rejected.get("follow_unsigned", 0) == 200


def test_each_author_and_all_authors_together_have_a_follow_quota() -> None:
    core = _core(follow_per_author=5, max_auto_follow=12)
    followed = []
    for a in range(4):
        author = Signer.from_seed(bytes([0x30 + a]) * 32)
        for i in range(10):
            g = codec.cid_of({"author": a, "object": i})
            msg = hpcp.encode_announce(author, g, [codec.cid_of({"head": i})], 1000 + i)
            followed += _follows(core.receive(f"peer-{a}", msg, 10.0))
    assert len(followed) == 12
    rejected = core.statistics(10.0).rejected
    assert rejected["follow_quota"] == 2 * 5  # authors 0 and 1 each sent 5 past their quota
    assert rejected["follow_cap"] == 10 + 8  # then the node as a whole was full


def test_pending_deltas_are_capped_per_author() -> None:
    src = goho.Replica.empty(QUEUE, MemoryBlockStore())
    attacker = Signer.from_seed(b"\x23" * 32)
    honest = Signer.from_seed(b"\x24" * 32)
    blocks = [src.update([["add", "x", i]], attacker) for i in range(8)]
    rep = goho.Replica.empty(QUEUE, MemoryBlockStore(), goho.ReplicaOptions(max_pending_per_author=3))
    for cid, data in reversed(blocks[1:4]):  # children first: all wait for their parents
        rep.receive_untrusted(cid, data)
    with pytest.raises(TooManyPending):
        rep.receive_untrusted(*blocks[5])
    assert rep.statistics().pending == 3
    # Another author is not held up by the attacker's quota.
    h = src.update([["add", "x", "honest"]], honest)
    assert rep.receive_untrusted(*h).missing
    # Applying the chain frees the quota.
    rep.receive_untrusted(*blocks[0])
    assert rep.statistics().pending == 1  # only the honest delta still waits (for blocks[4..7])
    for cid, data in blocks[4:]:
        rep.receive_untrusted(cid, data)
    assert rep.statistics().pending == 0


def test_linked_blocks_are_discovered_shallowly_and_boundedly() -> None:
    core = _core(max_linked_wanted=MAX_LINKS_PER_DELTA + 10)
    author = Signer.from_seed(b"\x25" * 32)
    deep: object = codec.cid_of({"deep": 1})
    for _ in range(MAX_LINK_DEPTH + 1):
        deep = {"x": deep}
    many = [codec.cid_of({"link": i}) for i in range(MAX_LINKS_PER_DELTA + 50)]
    shallow = codec.cid_of({"shallow": 1})
    rep = core.syncers[QUEUE].replica
    rep.update([["add", "deep", deep], ["add", "shallow", {"output": shallow}], ["add", "many", many]], author)
    core.local_change(QUEUE, 1.0)
    outs = core.tick(2.0)
    wanted = set()
    for o in outs:
        if isinstance(o, Request) and o.genesis is None:
            wanted.update(hpcp.decode_message_untrusted(o.data)["cids"])
    wanted |= {c for c in core._linked}
    assert shallow in wanted
    assert codec.cid_of({"deep": 1}) not in wanted
    assert len(core._linked) <= MAX_LINKS_PER_DELTA
    # 51 past the per-delta cap (the shallow link and 10,050 others), and the one too deep.
    assert core.statistics(2.0).rejected["links_dropped"] == 51 + 1
    rep.update([["add", "more", [codec.cid_of({"more": i}) for i in range(20)]]], author)
    core.local_change(QUEUE, 3.0)
    core.tick(4.0)
    assert len(core._linked) <= MAX_LINKS_PER_DELTA + 10
    assert core.statistics(4.0).rejected["prefetch_full"] >= 10


def test_rate_limit_and_peer_tables_evict_idle_entries() -> None:
    bucket = TokenBucket(10.0, max_entries=100)
    for i in range(1000):
        assert bucket.allow(f"p{i}", float(i))
    assert len(bucket) <= 100
    table = PeerTable("me", options=PeerTableOptions(max_peers=50))
    for i in range(50):
        assert table.note_peer(f"fake{i}")
    # A new peer is not refused for ever: a peer never heard from (or long dead) makes room.
    signer = Signer.from_seed(b"\x26" * 32)
    pid = peer_id_of(signer.public)
    assert table.note_peer(pid)
    assert pid in table and len(table) == 50
    assert table.rejected.get("peer_table_full", 0) == 0
