"""A node that merges a peer's change announces only what the peer did not.

A fresh change arrives pushed in its author's announcement, and gossip carries
that announcement to every member.  Re-announcing the merged heads when they
are exactly the author's (an echo) costs every member one or two gossip
messages and tells none of them anything; measured on a 3-node ``bench
spread``, echoes were about half of every node's announcements.  A merge that
adds something (the node's own concurrent change) is still announced, and an
echo's information is never lost: the next anti-entropy round re-announces
every object.
"""

from __future__ import annotations

from lattice import records
from lattice.meshcore import Changed, MeshCore

from ._core_fixture import broadcasts, core_following, enqueue_inline

GENESIS = records.make_genesis("queue", "echo-test")[0]


def _core(seed: bytes) -> MeshCore:
    return core_following(seed, GENESIS)


def _enqueue(core: MeshCore, name: str, now: float) -> list:
    """Enqueue on ``core`` and tell it; the outputs (its announcement)."""
    enqueue_inline(core, GENESIS, name)
    return core.local_change(GENESIS, now) + core.tick(now)


_announcements = broadcasts


def _quiet(core: MeshCore, now: float) -> None:
    """Start ``core`` and let its start-up messages (presence, queries) go out."""
    core.start(now)
    core.tick(now)


def test_a_pushed_change_that_a_peer_merges_is_not_announced_again() -> None:
    a, b = _core(b"a"), _core(b"b")
    _quiet(b, 0.5)
    (ann,) = _announcements(_enqueue(a, "t1", 1.0))
    got = b.receive(a.me, ann, 1.0)
    assert Changed(GENESIS) in got
    assert b.syncers[GENESIS].replica.heads == a.syncers[GENESIS].replica.heads
    later = b.tick(1.0 + b.options.announce_coalesce_s) + b.tick(1.5)
    assert [d for d in _announcements(later) if b"hpcp/announce" in d] == []
    # The echo is not lost: anti-entropy re-announces every object.
    ae = b.tick(1.0 + b.options.announce_interval_s + 0.1)
    assert [d for d in _announcements(ae) if b"hpcp/announce" in d]


def test_a_merge_that_adds_a_concurrent_change_is_announced() -> None:
    a, b = _core(b"a"), _core(b"b")
    _quiet(b, 0.5)
    _enqueue(b, "mine", 0.9)  # b's own change, concurrent with a's
    (ann,) = _announcements(_enqueue(a, "t1", 1.0))
    b.receive(a.me, ann, 1.0)
    assert set(b.syncers[GENESIS].replica.heads) != set(a.syncers[GENESIS].replica.heads)
    outs = b.tick(1.0 + b.options.announce_coalesce_s)
    assert [d for d in _announcements(outs) if b"hpcp/announce" in d]
