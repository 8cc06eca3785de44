"""An idle node's mesh core asks to be ticked only for presence and
anti-entropy, not every ``tick_s`` (issue 16: an idle daemon's CPU went to
waking a worker thread twice a second for a tick with nothing to do).  While
a block is wanted, the retry round is due again every ``tick_s``."""

from __future__ import annotations

from lattice import codec

from ._mesh_sim import CoreNet, genesis

QUEUE = genesis("queue", "idle")


def test_an_idle_core_is_due_at_its_next_presence_or_announcement() -> None:
    net = CoreNet(3)
    (a,) = net.add_nodes(1, follow=[QUEUE])
    a.core.start(net.now)
    o = a.core.options
    a.core.tick(net.now)  # nothing is wanted: the retry round is not what is due next
    assert not a.core.fetching()
    due = a.core.deadline()
    assert due is not None
    assert due - net.now >= min(o.presence_interval_s, o.announce_interval_s) - 1e-9 > o.tick_s


def test_a_wanted_block_makes_the_retry_round_due_again() -> None:
    net = CoreNet(3)
    a, b = net.add_nodes(2, follow=[QUEUE])
    for n in (a, b):
        n.core.start(net.now)
    a.core.tick(net.now)
    missing, _ = codec.encode_block({"t": "test/absent", "v": 1})
    a.core.want([missing], b.peer_id, net.now)  # b does not hold it: the want stays open
    assert a.core.fetching()
    due = a.core.deadline()
    assert due is not None and due - net.now <= a.core.options.tick_s + 1e-9
