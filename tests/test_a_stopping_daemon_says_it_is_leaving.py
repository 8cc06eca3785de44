"""A stopping node says it is leaving, and its peers drop it at once (issue 15 item 4).

Peers used to learn of a stop only when the node's presence expired (6 s),
counting it as a runner meanwhile.  Now its last gossip is a signed presence
with ``"leaving": true``: the table marks it not live at once, a replayed
older presence cannot revive it, and its next presence (a restart) makes it
a new peer again.  The daemon test stops a real runner with SIGTERM and
watches its peer stop counting it well before the presence horizon.
"""

from __future__ import annotations

import time

import pytest

from lattice import codec
from lattice.peers import PeerTable, Received
from lattice.signing import Signer, peer_id_of

from ._daemons import wait_for

T0 = 1_700_000_000.0


def test_a_leaving_presence_drops_the_peer_until_it_comes_back() -> None:
    a, b = Signer.generate(), Signer.generate()
    ta = PeerTable(peer_id_of(a.public), roles=["runner"])
    tb = PeerTable(peer_id_of(b.public), roles=["runner"])
    hello = tb.encode_presence(b, roles=["runner"], now=T0)
    assert ta.receive_presence_untrusted(tb.me, hello, 0.0) is Received.NEW_PEER
    assert tb.me in ta.live(0.1, "runner")

    bye = tb.encode_presence(b, roles=["runner"], now=T0 + 1, leaving=True)
    assert codec.decode_trusted(bye)["leaving"] is True
    assert ta.receive_presence_untrusted(tb.me, bye, 0.2).accepted
    ta.mark_left(tb.me)  # what MeshCore does with an accepted leaving presence
    assert tb.me not in ta.live(0.3, "runner") and not ta.is_live(tb.me, 0.3)
    # A replay of the presence before it cannot bring it back.
    assert ta.receive_presence_untrusted(tb.me, hello, 0.4) is Received.REJECTED
    assert tb.me not in ta.live(0.5, "runner")
    # Restarted (a new table, the same key): its next presence is a new peer.
    tb2 = PeerTable(tb.me, roles=["runner"])
    again = tb2.encode_presence(b, roles=["runner"], now=T0 + 5)
    assert ta.receive_presence_untrusted(tb.me, again, 0.6) is Received.NEW_PEER
    assert tb.me in ta.live(0.7, "runner")


def test_leaving_is_signed_with_the_rest() -> None:
    b = Signer.generate()
    tb = PeerTable(peer_id_of(b.public))
    obj = codec.decode_trusted(tb.encode_presence(b, now=T0))
    obj["leaving"] = True  # added by someone else: the signature no longer matches
    ta = PeerTable(peer_id_of(Signer.generate().public))
    assert ta.receive_presence_untrusted(tb.me, codec.encode(obj), 0.0) is Received.REJECTED


@pytest.mark.slow
def test_a_stopped_runner_stops_counting_at_once(daemon_factory) -> None:
    a = daemon_factory("a").start()
    b = daemon_factory("b", bootstrap=[a.multiaddr]).start()
    wait_for(lambda: b.peer_id in a.get("/v1/peers").json()["live_runners"], timeout=60,
             what="A to count B as a runner")
    assert b.stop() == 0
    gone = time.monotonic()
    wait_for(lambda: b.peer_id not in a.get("/v1/peers").json()["live_runners"], timeout=30,
             what="A to stop counting B")
    late = time.monotonic() - gone
    print(f"A stopped counting B {late:.2f} s after B exited (the presence horizon is 6 s)")
    # Without the farewell A would count B until its presence expired: at
    # least 4 s after it exited (6 s horizon, a presence every 2 s).
    assert late < 2.0
