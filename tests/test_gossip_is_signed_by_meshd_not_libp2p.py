"""Gossip without libp2p's own signatures (meshd.p2p._pubsub_tuning).

* py-libp2p still has the shape the tuning module relies on (these fail
  first when the library is upgraded).
* The message id: a hash over origin, seqno and data.
* A peer restarted with the same identity is heard at once, through a relay,
  although it starts its sequence numbers anew.
* Our signed peer record is built, and a peer's verified, a few times per
  connection, not once per RPC.
* A message's origin is only what it claims, and meshd's signed presence
  still refuses a forgery that claims another origin.

Every transport listens on 127.0.0.1:0; waits are on conditions, each bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import inspect
import os
import time

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.mcache import MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from lattice.peers import PeerTable, PeerTableOptions, Received
from lattice.signing import Signer, peer_id_of
from meshd.p2p import P2POptions, Transport
from meshd.p2p import _pubsub_tuning as tuning


async def _start(nursery: trio.Nursery, seed: bytes | None = None, **options) -> Transport:
    t = Transport(seed or os.urandom(32), P2POptions(**options))
    return await nursery.start(t.serve)


# -- the library's shape ------------------------------------------------------------------


def test_pubsub_still_takes_the_options_and_has_the_attributes_we_use() -> None:
    params = inspect.signature(Pubsub.__init__).parameters
    assert params["strict_signing"].default is True
    assert "msg_id_constructor" in params
    # The seqno counter start_seqno_from_clock sets, and how it is used.
    assert "self.counter += 1" in inspect.getsource(Pubsub._next_seqno)
    assert "self.counter = int(time.time())" in inspect.getsource(Pubsub.__init__)
    # Signing is skipped, and verification too, exactly when strict_signing is off.
    assert "if self.strict_signing:" in inspect.getsource(Pubsub.publish)
    assert "if self.strict_signing:" in inspect.getsource(Pubsub.push_msg)


def test_gossipsub_cache_still_keys_by_sender_and_seqno_and_is_replaceable() -> None:
    router = GossipSub(protocols=[PROTOCOL_ID_V12], degree=6, degree_low=6, degree_high=12)
    assert type(router.mcache) is MessageCache and not router.mcache.msgs
    # Quirk the cache swap works around: put() ignores pubsub's id function.
    assert "default_msg_id_fn(msg)" in inspect.getsource(MessageCache.put)
    tuning.use_message_id_in_gossip(router)
    msg = rpc_pb2.Message(from_id=b"a", seqno=b"\x00" * 8, data=b"x", topicIDs=["t"])
    router.mcache.put(msg)
    mid = tuning.message_id(msg)
    assert router.mcache.get(mid) is msg and router.mcache.window("t") == [mid]
    for _ in range(router.mcache.window_size):
        router.mcache.shift()
    assert router.mcache.window("t") == []


def test_the_patched_peer_record_functions_are_still_called_with_these_arguments() -> None:
    tuning.install_peer_record_caches()
    tuning.install_peer_record_caches()  # idempotent
    for module in tuning.PATCHED_MODULES:
        assert module.env_to_send_in_RPC is tuning._env_to_send_in_rpc
        assert module.maybe_consume_signed_record is tuning._maybe_consume_signed_record
    originals = tuning._originals
    assert list(inspect.signature(originals["env_to_send_in_RPC"]).parameters) == ["host"]
    assert list(inspect.signature(originals["maybe_consume_signed_record"]).parameters) == ["msg", "host", "peer_id"]
    sources = [inspect.getsource(m) for m in tuning.PATCHED_MODULES]
    assert all("env_to_send_in_RPC(" in s and "maybe_consume_signed_record(" in s for s in sources)


# -- message ids -----------------------------------------------------------------------------


def test_the_message_id_covers_origin_seqno_and_data_unambiguously() -> None:
    def mid(f: bytes, s: bytes, d: bytes) -> bytes:
        return tuning.message_id(rpc_pb2.Message(from_id=f, seqno=s, data=d))

    base = mid(b"peer", b"\x00" * 7 + b"\x01", b"data")
    assert base == mid(b"peer", b"\x00" * 7 + b"\x01", b"data")
    assert base != mid(b"peer", b"\x00" * 7 + b"\x01", b"other data")  # a restart reusing the seqno
    assert base != mid(b"peer2", b"\x00" * 7 + b"\x01", b"data")  # the same query from two nodes
    assert base != mid(b"peer", b"\x00" * 7 + b"\x02", b"data")  # the same bytes sent twice
    assert mid(b"ab", b"c", b"d") != mid(b"a", b"bc", b"d") != mid(b"a", b"b", b"cd")


async def test_sequence_numbers_start_at_the_clock_in_nanoseconds(nursery) -> None:
    before = time.time_ns()
    t = await _start(nursery)
    seqno = int.from_bytes(t._pubsub._next_seqno(), "big")
    assert before < seqno <= time.time_ns() + 1
    assert len(t._pubsub._next_seqno()) == 8


# -- restarts ----------------------------------------------------------------------------------


async def _grafted(t: Transport, peer: Transport) -> None:
    """Wait until ``t``'s gossipsub mesh holds ``peer`` (before that, a publish reaches nobody)."""
    router, want = t._pubsub.router, ID.from_base58(peer.peer_id)
    while want not in router.mesh.get(P2POptions().topic, ()):
        await trio.sleep(0.01)


async def _deliver(sender: Transport, receiver: Transport, messages: set[bytes]) -> None:
    """Broadcast ``messages`` once; wait until ``receiver`` has them all from ``sender``.

    Only the sender waits for queue room: a relay forwards a long burst
    without it and may drop some (see Transport.broadcast), so bursts go to
    a direct peer.
    """
    for data in sorted(messages):
        await sender.broadcast(data)
    waiting = set(messages)
    while waiting:  # anything else (a burst's stragglers) is skipped
        peer, data = await receiver.receive()
        assert peer == sender.peer_id
        waiting.discard(data)


async def test_a_restarted_peer_is_heard_at_once_through_a_relay(nursery) -> None:
    """A sends a burst, restarts with the same key (py-libp2p would start its
    seqnos again at the clock in seconds, below the burst's), and its new
    messages reach B through C at once: C neither takes them for messages
    already seen nor stops forwarding them as equivocation."""
    relay = await _start(nursery)
    b = await _start(nursery, bootstrap=tuple(relay.listen_addrs()))
    seed = os.urandom(32)
    scope = trio.CancelScope()

    async def run_a(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await Transport(seed, P2POptions(bootstrap=tuple(relay.listen_addrs()))).serve(task_status=task_status)

    a = await nursery.start(run_a)
    with trio.fail_after(30):
        await _grafted(relay, b)
        await _grafted(a, relay)
        # The relay sees seqnos up to 500 above A's start (py-libp2p's start
        # is the clock in seconds; a restart within 500 s would reuse them).
        await _deliver(a, relay, {f"before-{i}".encode() for i in range(500)})
    assert [p.peer_id for p in b.peers()] == [relay.peer_id]  # B hears A only through the relay

    scope.cancel()
    # Until the relay's pubsub has dropped A's stream it ignores A2's new
    # connection (py-libp2p keeps one pubsub stream per peer id and skips a
    # peer it already has): a restart faster than that is a separate race.
    with trio.fail_after(10):
        while ID.from_base58(a.peer_id) in relay._pubsub.peers:
            await trio.sleep(0.01)
    scope = trio.CancelScope()
    a2 = await nursery.start(run_a)
    assert a2.peer_id == a.peer_id
    with trio.fail_after(30):
        await _grafted(a2, relay)
        await _deliver(a2, b, {f"after-{i}".encode() for i in range(20)})


# -- the signed peer record -------------------------------------------------------------------


async def test_the_signed_peer_record_is_not_rebuilt_or_reverified_per_rpc(nursery) -> None:
    a = await _start(nursery)
    b = await _start(nursery, bootstrap=tuple(a.listen_addrs()))
    with trio.fail_after(15):
        await a.wait_peers(1)
        await b.wait_peers(1)
        before = tuning.peer_record_cache_statistics()
        t0 = time.monotonic()
        for i in range(500):
            await a.broadcast(b"m%d" % i)
        for _ in range(500):
            await b.receive()
    after = tuning.peer_record_cache_statistics()
    elapsed = time.monotonic() - t0
    built = after.own_built - before.own_built
    checked = after.peer_checked - before.peer_checked
    # Per host: one build per refresh interval (and one per new local
    # record), one check per peer per recheck interval.
    assert built <= 2 * (elapsed / tuning.OWN_RECORD_REFRESH_S + 2), (built, elapsed)
    assert checked <= 2 * (elapsed / tuning.PEER_RECORD_RECHECK_S + 2), (checked, elapsed)
    assert after.own_reused - before.own_reused >= 400
    assert after.peer_reused - before.peer_reused >= 400
    # ...and the peerstores still hold each other's signed record and address.
    for x, y in ((a, b), (b, a)):
        store = x._host.get_peerstore()
        assert store.get_peer_record(ID.from_base58(y.peer_id)) is not None
        assert {str(m) for m in store.addrs(ID.from_base58(y.peer_id))} >= set(y.listen_addrs())


# -- forged origins -----------------------------------------------------------------------------


async def test_a_forged_origin_arrives_as_claimed_and_meshd_refuses_the_presence(nursery) -> None:
    a = await _start(nursery)
    b = await _start(nursery, bootstrap=tuple(a.listen_addrs()))
    with trio.fail_after(15):
        await a.wait_peers(1)
        await b.wait_peers(1)
    b_signer = Signer.from_seed(b"\x21" * 32)
    victim = peer_id_of(Signer.from_seed(b"\x22" * 32).public)
    sender_table = PeerTable(peer_id_of(b_signer.public), roles=("runner",))
    presence = sender_table.encode_presence(b_signer, inventory={}, api=None, addrs=[], now=1_700_000_000.0)
    # B hands pubsub a message in the victim's name, unsigned, as any peer can.
    forged = rpc_pb2.Message(from_id=ID.from_base58(victim).to_bytes(), seqno=os.urandom(8), data=presence,
                             topicIDs=[P2POptions().topic])
    await b._pubsub.push_msg(ID.from_base58(b.peer_id), forged)
    with trio.fail_after(10):
        origin, data = await a.receive()
    assert (origin, data) == (victim, presence)
    table = PeerTable(peer_id_of(Signer.from_seed(b"\x23" * 32).public), roles=(), options=PeerTableOptions())
    assert table.receive_presence_untrusted(origin, data, 1.0) is Received.REJECTED
    assert table.rejected == {"bad_presence": 1}
    assert victim not in table.live(1.0)
