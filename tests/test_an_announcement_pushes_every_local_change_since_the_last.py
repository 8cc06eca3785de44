"""An announcement pushes every change this node made since its last one, not only the newest.

Changes close together share one announcement (``announce_coalesce_s``): a
task's enqueue and its completion 8 ms later, say.  When only the newest
head rode along, every peer had to want and fetch the one below it: on a
quiet 3-node mesh each peer sent 1.1 wants per task, each a stream open and
a protocol negotiation on py-libp2p (issue 13).  Now the announcement also
pushes this node's own deltas below the heads, down to the heads it last
announced, within ``MAX_PUSH_BLOCKS`` and ``MAX_PUSH_BYTES``; other
authors' deltas are theirs to push.  A receiver takes a pushed block that
is not a head only when a delta it took awaits it.
"""

from __future__ import annotations

from lattice import hpcp, records
from lattice.meshcore import Changed, MeshCore, Request

from ._core_fixture import broadcasts, core_following, enqueue_inline

GENESIS = records.make_genesis("queue", "push-chain-test")[0]


def _announce_now(core: MeshCore, now: float) -> bytes:
    (ann,) = broadcasts(core.local_change(GENESIS, now) + core.tick(now + core.options.announce_coalesce_s))
    return ann


def _pushed(ann: bytes) -> list:
    return [c for c, _ in hpcp.decode_message_untrusted(ann)["push"]]


def test_changes_that_share_an_announcement_are_all_pushed_and_need_no_want() -> None:
    a, b = core_following(b"a", GENESIS), core_following(b"b", GENESIS)
    enqueue_inline(a, GENESIS, "one")
    assert b.receive(a.me, _announce_now(a, 5.0), 5.0)  # b applied "one" from the push
    rep = a.syncers[GENESIS].replica
    enqueue_inline(a, GENESIS, "two")
    two = rep.heads[0]
    enqueue_inline(a, GENESIS, "three")
    three = rep.heads[0]
    ann = _announce_now(a, 6.0)
    assert _pushed(ann) == [three, two]  # the head, then the change below it; not "one", announced before
    got = b.receive(a.me, ann, 6.0)
    assert not [o for o in got if isinstance(o, Request)], "both changes came in the message: nothing to want"
    assert Changed(GENESIS) in got
    assert b.syncers[GENESIS].replica.heads == [three]
    assert b.syncers[GENESIS].statistics().pushed_in == 3  # "one", then "three" and "two"


def test_a_peers_change_below_the_heads_is_not_pushed_again() -> None:
    a, b = core_following(b"a", GENESIS), core_following(b"b", GENESIS)
    enqueue_inline(b, GENESIS, "from-b")
    a.receive(b.me, _announce_now(b, 5.0), 5.0)  # a merged b's change (and does not echo it)
    enqueue_inline(a, GENESIS, "from-a")
    ann = _announce_now(a, 6.0)
    assert _pushed(ann) == a.syncers[GENESIS].replica.heads  # b's delta below it is b's to push


def test_the_push_stops_at_its_limits() -> None:
    a, b = core_following(b"a", GENESIS), core_following(b"b", GENESIS)
    for i in range(3 * hpcp.MAX_PUSH_BLOCKS):
        enqueue_inline(a, GENESIS, f"t{i}")
    ann = _announce_now(a, 5.0)
    assert len(_pushed(ann)) == hpcp.MAX_PUSH_BLOCKS
    got = b.receive(a.me, ann, 5.0)
    (want,) = [o for o in got if isinstance(o, Request)]  # the rest is wanted the ordinary way
    b.on_response(want.ask_id, a.serve(b.me, want.data, 5.0), 5.0)
    assert b.syncers[GENESIS].replica.heads == a.syncers[GENESIS].replica.heads


def test_a_pushed_block_that_no_taken_delta_awaits_is_not_stored() -> None:
    a, b, c = (core_following(s, GENESIS) for s in (b"a", b"b", b"c"))
    enqueue_inline(c, GENESIS, "unrelated")  # a valid delta of the object, on no path from a's head
    (stray,) = c.syncers[GENESIS].replica.heads
    enqueue_inline(a, GENESIS, "x")
    (head,) = a.syncers[GENESIS].replica.heads
    msg = hpcp.encode_announce(a.signer, GENESIS, [head], 1_000_000, None,
                               [(head, a.store.get(head)), (stray, c.store.get(stray))])
    b.receive(a.me, msg, 1000.0)
    rep = b.syncers[GENESIS].replica
    assert rep.heads == [head]
    assert not rep.is_known(stray) and not b.store.has(stray)
