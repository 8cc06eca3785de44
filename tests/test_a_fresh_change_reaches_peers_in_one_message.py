"""A fresh change reaches a peer that is one change behind in one gossip message.

Three parts of HPCP keep the per-hop cost of a lone change low (issue 13):

* the first change after a quiet window is announced at once (the window
  only coalesces changes that follow it);
* that announcement pushes the new head blocks along, so the peer applies
  them with no want and no answer (on py-libp2p each request is a stream
  open and a protocol negotiation);
* a want lists the asker's heads in ``have``, so the server's ancestor walk
  stops there instead of sending up to 256 deltas the asker holds.

Bad pushes are refused like bad answers: counted, and the head is then wanted
the ordinary way.
"""

from __future__ import annotations

import pytest

from lattice import codec, hpcp, records
from lattice.errors import BadMessage
from lattice.meshcore import Changed, MeshCore, Request

from ._core_fixture import broadcasts, core_following, enqueue_inline

GENESIS = records.make_genesis("queue", "push-test")[0]


def _core(seed: bytes) -> MeshCore:
    return core_following(seed, GENESIS)


def _enqueue(core: MeshCore, name: str) -> None:
    enqueue_inline(core, GENESIS, name)


_broadcasts = broadcasts


def _sync(a: MeshCore, b: MeshCore, now: float) -> None:
    """The ordinary exchange (announce without push, wants, answers) until b has a's heads."""
    inbox = b.receive(a.me, a.syncers[GENESIS].announce(now), now)
    while inbox:
        o = inbox.pop(0)
        if isinstance(o, Request):
            inbox += b.on_response(o.ask_id, a.serve(b.me, o.data, now), now)
    assert b.syncers[GENESIS].replica.heads == a.syncers[GENESIS].replica.heads


def test_a_lone_change_is_announced_at_once_and_applied_from_the_gossip_message() -> None:
    a, b = _core(b"a"), _core(b"b")
    for i in range(30):  # some shared history first
        _enqueue(a, f"old{i}")
    _sync(a, b, 1.0)
    now = 10.0  # long after any announcement: the window is quiet
    _enqueue(a, "new")
    outs = a.local_change(GENESIS, now) + a.tick(now)
    (ann,) = _broadcasts(outs)  # at once, not after announce_coalesce_s
    msg = hpcp.decode_message_untrusted(ann)
    assert [c for c, _ in msg["push"]] == a.syncers[GENESIS].replica.heads
    got = b.receive(a.me, ann, now)
    assert not [o for o in got if isinstance(o, Request)], "the pushed head (task body inline) must need no want"
    assert Changed(GENESIS) in got
    assert b.syncers[GENESIS].replica.heads == a.syncers[GENESIS].replica.heads
    assert b.syncers[GENESIS].statistics().pushed_in == 1


def test_changes_within_the_window_share_the_next_announcement() -> None:
    a = _core(b"a")
    window = a.options.announce_coalesce_s
    _enqueue(a, "one")
    assert len(_broadcasts(a.local_change(GENESIS, 5.0) + a.tick(5.0))) == 1
    _enqueue(a, "two")
    assert _broadcasts(a.local_change(GENESIS, 5.001) + a.tick(5.001)) == []  # coalesced
    _enqueue(a, "three")
    assert _broadcasts(a.local_change(GENESIS, 5.002) + a.tick(5.002)) == []
    assert len(_broadcasts(a.tick(5.0 + window))) == 1  # one announcement for both


def test_a_push_whose_bytes_do_not_match_is_refused_and_the_head_is_fetched_later() -> None:
    a, b, c = _core(b"a"), _core(b"b"), _core(b"c")
    _enqueue(a, "x")
    head = a.syncers[GENESIS].replica.heads[0]
    forged = hpcp.encode_announce(a.signer, GENESIS, [head], 1_000_000, None, [(head, b"\xa1atx")])
    b.receive(a.me, forged, 1000.0)
    assert b.syncers[GENESIS].replica.heads == []
    assert sum(b.syncers[GENESIS].statistics().rejected.values()) >= 1
    # Another peer that holds the head announces it (no push): fetched the ordinary way.
    _sync(a, c, 1000.5)
    outs = b.receive(c.me, c.syncers[GENESIS].announce(1001.0), 1001.0)
    (want,) = [o for o in outs if isinstance(o, Request)]
    assert want.peer == c.me and head in hpcp.decode_message_untrusted(want.data)["cids"]
    b.on_response(want.ask_id, c.serve(b.me, want.data, 1001.0), 1001.0)
    assert b.syncers[GENESIS].replica.heads == [head]


def test_an_oversize_push_is_refused_whole() -> None:
    a = _core(b"a")
    _enqueue(a, "x")
    head = a.syncers[GENESIS].replica.heads[0]
    big = [(head, b"\0" * (hpcp.MAX_PUSH_BYTES + 1))]
    with pytest.raises(BadMessage):
        hpcp.decode_message_untrusted(hpcp.encode_announce(a.signer, GENESIS, [head], 1, None, big))
    many = [(head, b"\0")] * (hpcp.MAX_PUSH_BLOCKS + 1)
    with pytest.raises(BadMessage):
        hpcp.decode_message_untrusted(hpcp.encode_announce(a.signer, GENESIS, [head], 1, None, many))


def test_a_want_with_have_gets_only_what_the_asker_lacks() -> None:
    a = _core(b"a")
    for i in range(40):
        _enqueue(a, f"t{i}")
    rep = a.syncers[GENESIS].replica
    tip = rep.heads[0]
    parent = records.delta_from_untrusted(tip, a.store.get(tip)).parents[0]
    full = hpcp.decode_message_untrusted(a.serve("b", hpcp.encode_want([tip]), 1.0))
    lean = hpcp.decode_message_untrusted(a.serve("b", hpcp.encode_want([tip], [parent]), 1.0))
    assert len(full["blocks"]) == 40  # the tip and every ancestor
    assert [c for c, _ in lean["blocks"]] == [tip]


def test_a_want_with_too_many_haves_is_refused() -> None:
    cids = [codec.cid_of({"i": i}) for i in range(hpcp.MAX_HAVE + 1)]
    msg = codec.encode({"t": "hpcp/want", "v": 1, "cids": cids[:1], "have": cids})
    with pytest.raises(BadMessage):
        hpcp.decode_message_untrusted(msg)
