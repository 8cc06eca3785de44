"""A linked block is wanted only after ``link_grace_s``, and not at all if it arrived meanwhile.

A result record names its task, whose body rides inline in the queue's
delta; the announcements of the two objects reach a peer in either order.
Wanting every linked block the moment an op names it made each peer of a
quiet 3-node mesh ask for half a block per task that was already on its way
(issue 13).  The core waits ``link_grace_s`` (0.1 s), says so in its
:meth:`~lattice.meshcore.MeshCore.deadline`, and then wants only what is
still missing.
"""

from __future__ import annotations

from lattice import codec, hpcp, queue, records
from lattice.meshcore import MeshCore, Request

from ._core_fixture import core_following

GENESIS = records.make_genesis("queue", "link-grace-test")[0]


def _enqueue_linked(core: MeshCore, name: str) -> tuple:
    """Enqueue a task whose body is *not* inline (a v1 delta): peers must get the body elsewhere."""
    body, data = codec.encode_block({"task": name})
    core.store.put(body, data)
    core.syncers[GENESIS].replica.update(queue.enqueue_ops([body]), core.signer)
    return body, data


def _wants(outs: list) -> list:
    return [c for o in outs if isinstance(o, Request)
            for c in hpcp.decode_message_untrusted(o.data).get("cids", [])]


def test_a_missing_linked_block_is_wanted_once_the_grace_passed() -> None:
    a, b = core_following(b"a", GENESIS), core_following(b"b", GENESIS)
    body, _ = _enqueue_linked(a, "t")
    ann = a.syncers[GENESIS].announce(5.0, push=True)
    assert body not in _wants(b.receive(a.me, ann, 5.0))  # the delta came pushed; its body is not asked yet
    grace = b.options.link_grace_s
    assert b.deadline() is not None and b.deadline() <= 5.0 + grace
    assert body not in _wants(b.tick(5.0 + grace / 2))
    assert body in _wants(b.tick(5.0 + grace))


def test_a_linked_block_that_arrives_within_the_grace_is_never_wanted() -> None:
    a, b = core_following(b"a", GENESIS), core_following(b"b", GENESIS)
    body, data = _enqueue_linked(a, "t")
    b.receive(a.me, a.syncers[GENESIS].announce(5.0, push=True), 5.0)
    b.store.put(body, data)  # as if inline in another object's delta, read meanwhile
    grace = b.options.link_grace_s
    assert body not in _wants(b.tick(5.0 + grace))
    assert b.linked_blocks.due() is None
