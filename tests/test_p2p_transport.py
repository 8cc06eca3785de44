"""The libp2p transport: gossip broadcast, request/response, failure modes.

Every transport listens on 127.0.0.1:0.  Waits are on conditions (received
messages, ``wait_peers``), each bounded by ``trio.fail_after`` so a broken
transport fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from meshd.p2p import (
    BadFrame,
    MessageTooLarge,
    P2POptions,
    PeerUnreachable,
    RemoteHandlerError,
    RequestTimeout,
    Transport,
    TransportError,
)
from meshd.p2p.budgets import BudgetOptions
from meshd.p2p.identity import Identity, peer_id_from_public_key
from meshd.p2p.wire import FrameReader, decode_frame_untrusted, encode_frame

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


async def _echo(peer_id: str, data: bytes) -> bytes:
    return data


async def start(nursery: trio.Nursery, seed: bytes | None = None, **options) -> Transport:
    t = Transport(seed or os.urandom(32), P2POptions(**options))
    t.set_request_handler(_echo)
    await nursery.start(t.serve)
    return t


async def start_cancellable(nursery: trio.Nursery, **options) -> tuple[Transport, trio.CancelScope]:
    """A started transport whose ``serve`` can be cancelled on its own."""
    t = Transport(os.urandom(32), P2POptions(**options))
    t.set_request_handler(_echo)
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await t.serve(task_status=task_status)

    await nursery.start(run)
    return t, scope


async def pair(nursery: trio.Nursery, **options) -> tuple[Transport, Transport]:
    a = await start(nursery, **options)
    b = await start(nursery, bootstrap=tuple(a.listen_addrs()), **options)
    with trio.fail_after(10):
        await a.wait_peers(1)
        await b.wait_peers(1)
    return a, b


async def test_peer_id_is_the_identity_peer_id_and_listen_addr_has_real_port(nursery):
    seed = os.urandom(32)
    t = await start(nursery, seed=seed)
    assert t.peer_id == peer_id_from_public_key(Identity.from_seed(seed).public_bytes)
    assert t.peer_id.startswith("12D3KooW")
    [addr] = t.listen_addrs()
    assert addr.startswith("/ip4/127.0.0.1/tcp/") and addr.endswith(f"/p2p/{t.peer_id}")
    assert int(addr.split("/")[4]) > 0


async def test_bootstrap_connects_both_ways(nursery):
    a, b = await pair(nursery)
    assert [p.peer_id for p in a.peers()] == [b.peer_id]
    assert [p.peer_id for p in b.peers()] == [a.peer_id]
    assert b.peers()[0].connected_since <= time.time()
    assert await b.connect(a.listen_addrs()[0]) == a.peer_id  # already connected: no-op


async def test_broadcast_reaches_the_other_peer_and_never_ourselves(nursery):
    a, b = await pair(nursery)
    with trio.fail_after(10):
        await a.broadcast(b"from a")
        assert await b.receive() == (a.peer_id, b"from a")
        await b.broadcast(b"from b")
        # Our own message would have been queued locally at publish time,
        # before b's reply could arrive, so the first message a sees is b's.
        assert await a.receive() == (b.peer_id, b"from b")
    assert a.statistics().messages_received == 1


async def test_burst_of_1000_broadcasts_all_arrive(nursery):
    a, b = await pair(nursery)
    n = 1000
    got: list[bytes] = []

    async def collect() -> None:
        while len(got) < n:
            _sender, data = await b.receive()
            got.append(data)

    started = time.perf_counter()
    with trio.fail_after(45):
        async with trio.open_nursery() as inner:
            inner.start_soon(collect)
            for i in range(n):
                await a.broadcast(i.to_bytes(4, "big"))
    elapsed = time.perf_counter() - started
    assert sorted(int.from_bytes(d, "big") for d in got) == list(range(n))
    stats = a.statistics()
    assert stats.broadcasts_sent == n and stats.broadcast_overflows == 0
    assert b.statistics().messages_dropped == 0
    print(f"\nin-process burst: {n / elapsed:.0f} msgs/s, flow-control waits {stats.broadcast_waits}")


async def test_request_round_trips_a_4_mib_payload(nursery):
    # Requests are capped at 256 KiB by default (meshd's wants are small): this pair allows 8 MiB.
    a, b = await pair(nursery, budgets=BudgetOptions(max_request_bytes=8 * MiB, request_bytes_per_s=8 * MiB))
    payload = os.urandom(4 * MiB)
    with trio.fail_after(20):
        assert await a.request(b.peer_id, payload) == payload
    assert b.statistics().requests_served == 1


async def test_oversize_response_frame_is_rejected_as_bad_frame(nursery):
    a = await start(nursery, max_message_bytes=1 * MiB)
    b = await start(nursery, bootstrap=tuple(a.listen_addrs()))
    b.set_request_handler(lambda peer, data: _big(2 * MiB))
    with trio.fail_after(10):
        await a.wait_peers(1)
        with pytest.raises(BadFrame):
            await a.request(b.peer_id, b"give me too much")


async def _big(n: int) -> bytes:
    return b"\0" * n


async def test_oversize_request_frame_resets_the_stream_and_server_keeps_serving(nursery):
    small = await start(nursery, max_message_bytes=1 * MiB)
    big = await start(nursery, bootstrap=tuple(small.listen_addrs()))
    with trio.fail_after(10):
        await big.wait_peers(1)
        with pytest.raises(TransportError):
            await big.request(small.peer_id, b"x" * (2 * MiB))
        assert small.statistics().bad_frames == 1
        assert await big.request(small.peer_id, b"still fine") == b"still fine"
    with pytest.raises(MessageTooLarge):
        await small.request(big.peer_id, b"x" * (1 * MiB + 1))


async def test_handler_exception_is_reported_and_the_host_survives(nursery):
    a, b = await pair(nursery)

    async def flaky(peer_id: str, data: bytes) -> bytes:
        if data == b"boom":
            raise RuntimeError("handler bug")
        return data.upper()

    b.set_request_handler(flaky)
    with trio.fail_after(10):
        with pytest.raises(RemoteHandlerError):
            await a.request(b.peer_id, b"boom")
        assert await a.request(b.peer_id, b"ok") == b"OK"
    assert b.statistics().handler_errors == 1


async def test_request_to_a_peer_that_dies_midway_raises_before_the_timeout(nursery):
    a = await start(nursery)
    b, b_scope = await start_cancellable(nursery, bootstrap=tuple(a.listen_addrs()))
    in_handler = trio.Event()

    async def hang(peer_id: str, data: bytes) -> bytes:
        in_handler.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    b.set_request_handler(hang)
    with trio.fail_after(10):
        await a.wait_peers(1)

    async def kill_b_when_busy() -> None:
        await in_handler.wait()
        b_scope.cancel()

    nursery.start_soon(kill_b_when_busy)
    started = time.perf_counter()
    with pytest.raises(TransportError):
        await a.request(b.peer_id, b"anything", timeout_s=8)
    assert time.perf_counter() - started < 5


async def test_request_to_a_silent_peer_times_out(nursery):
    a, b = await pair(nursery)

    async def hang(peer_id: str, data: bytes) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    b.set_request_handler(hang)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout):
        await a.request(b.peer_id, b"hello?", timeout_s=0.5)
    assert time.perf_counter() - started < 3


async def test_request_to_an_unknown_peer_is_unreachable(nursery):
    a = await start(nursery)
    stranger = peer_id_from_public_key(Identity.generate().public_bytes)
    with trio.fail_after(10), pytest.raises(PeerUnreachable):
        await a.request(stranger, b"hi", timeout_s=5)


async def test_broadcast_from_one_peer_reaches_a_chain_and_a_late_joiner(nursery):
    # a <- b <- c: c hears a only through b's forwarding.
    a = await start(nursery)
    b = await start(nursery, bootstrap=tuple(a.listen_addrs()))
    c = await start(nursery, bootstrap=tuple(b.listen_addrs()))
    with trio.fail_after(10):
        await b.wait_peers(2)
        await c.wait_peers(1)
        await a.broadcast(b"first")
        assert await b.receive() == (a.peer_id, b"first")
        assert await c.receive() == (a.peer_id, b"first")

    late = await start(nursery, bootstrap=tuple(c.listen_addrs()))
    with trio.fail_after(15):
        await late.wait_peers(1)
        await a.broadcast(b"second")
        # py-libp2p replays recent messages to a new subscriber, so the late
        # joiner may see b"first" too (HPCP messages are idempotent).
        received = await late.receive()
        if received == (a.peer_id, b"first"):
            received = await late.receive()
        assert received == (a.peer_id, b"second")
    assert [p.peer_id for p in late.peers()] == [c.peer_id]


async def test_bootstrap_peer_that_restarts_is_redialled(nursery):
    seed = os.urandom(32)
    a_scope = trio.CancelScope()
    a_gone = trio.Event()

    async def run_a(listen=("/ip4/127.0.0.1/tcp/0",), *, task_status=trio.TASK_STATUS_IGNORED):
        with a_scope:
            t = Transport(seed, P2POptions(listen=listen))
            await t.serve(task_status=task_status)
        a_gone.set()

    a = await nursery.start(run_a)
    addr = a.listen_addrs()[0]
    b = await start(nursery, bootstrap=(addr,), reconnect_s=0.2)
    with trio.fail_after(10):
        await b.wait_peers(1)
    a_scope.cancel()
    with trio.fail_after(10):
        while b.peers():
            await trio.sleep(0.01)
        await a_gone.wait()  # its listener is closed: the port is free again (no shared binds)
    a_scope = trio.CancelScope()
    port_addr = "/".join(addr.split("/")[:5])  # same port, same identity
    a2 = await nursery.start(run_a, (port_addr,))
    with trio.fail_after(15):
        await b.wait_peers(1)
        await a2.broadcast(b"back")
        assert await b.receive() == (a2.peer_id, b"back")


def test_frames_round_trip_and_garbage_is_bad_frame():
    assert decode_frame_untrusted(encode_frame(b"abc") + b"rest", 10) == (b"abc", b"rest")
    for garbage in [b"", b"\x80", b"\xff" * 11, b"\x05ab", b"\x80\x00", encode_frame(b"x" * 11)]:
        with pytest.raises(BadFrame):
            decode_frame_untrusted(garbage, 10)


async def test_frame_reader_reassembles_split_reads_and_rejects_truncation():
    class Chunks:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        async def read(self, n: int | None = None) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

    data = encode_frame(b"hello world") + encode_frame(b"")
    reader = FrameReader(Chunks([data[i : i + 1] for i in range(len(data))]))
    assert await reader.read_frame_untrusted(100) == b"hello world"
    assert await reader.read_frame_untrusted(100) == b""
    with pytest.raises(BadFrame):
        await FrameReader(Chunks([encode_frame(b"hello")[:-1]])).read_frame_untrusted(100)
    with pytest.raises(BadFrame):
        await FrameReader(Chunks([encode_frame(b"hello")])).read_frame_untrusted(4)


def test_options_are_validated():
    for bad in [
        {"listen": ()},
        {"listen": ("not a multiaddr",)},
        {"bootstrap": ("/ip4/127.0.0.1/tcp/1",)},  # no /p2p/ part
        {"mdns": True},  # mDNS must be limited to named interfaces
        {"heartbeat_s": 0},
        {"request_timeout_s": float("nan")},
        {"max_message_bytes": 0},
        {"max_concurrent_requests": 0},
    ]:
        with pytest.raises(ValueError):
            Transport(os.urandom(32), P2POptions(**bad))


@pytest.mark.slow
async def test_cross_process_peer_echoes_gossip_and_requests_then_dies(nursery):
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests._p2p_peer"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "child exited before listening"
                line += chunk
        child = json.loads(line)
        me = await start(nursery, bootstrap=tuple(child["addrs"]))
        with trio.fail_after(15):
            await me.wait_peers(1)
        assert me.peers()[0].peer_id == child["peer_id"]

        # Latency: sequential ping -> echo round trips.
        rtts = []
        with trio.fail_after(30):
            for i in range(100):
                sent = time.perf_counter()
                await me.broadcast(b"ping%d" % i)
                assert await me.receive() == (child["peer_id"], b"echo:ping%d" % i)
                rtts.append(time.perf_counter() - sent)

        # Throughput: a burst, every message crosses twice (there and echoed back).
        n = 1000
        echoed: set[bytes] = set()

        async def collect() -> None:
            while len(echoed) < n:
                _sender, data = await me.receive()
                echoed.add(data)

        started = time.perf_counter()
        # Generous: the outcome (every message echoed) is asserted, the speed
        # only reported; on a loaded 2-core machine the burst took over 40 s.
        with trio.fail_after(120):
            async with trio.open_nursery() as inner:
                inner.start_soon(collect)
                for i in range(n):
                    await me.broadcast(b"bulk%d" % i)
        burst_s = time.perf_counter() - started
        assert echoed == {b"echo:bulk%d" % i for i in range(n)}

        # Block exchange: 4 MiB requests echoed back.
        payload = os.urandom(4 * MiB)
        started = time.perf_counter()
        with trio.fail_after(30):
            for _ in range(5):
                assert await me.request(child["peer_id"], payload) == payload
        mib_s = 5 * 2 * 4 / (time.perf_counter() - started)

        print(
            f"\ncross-process gossip: {n / burst_s:.0f} msgs/s echoed ({2 * n / burst_s:.0f} deliveries/s), "
            f"median echo RTT {statistics.median(rtts) * 1000:.2f} ms "
            f"(one-way ~{statistics.median(rtts) * 500:.2f} ms); "
            f"block exchange {mib_s:.0f} MiB/s (both directions)"
        )
        assert mib_s > 1 and n / burst_s > 20

        # The child dies mid-request: we fail fast, well before the timeout.
        # The child's "hang" is looked for across reads and the bound is timed
        # from the kill: looking in one read at a time, the test on a loaded
        # machine sometimes never killed the child and the request sat out
        # its timeout (4 of 26 runs here under load, and one CI run).
        killed_at: list[float] = []

        async def kill_once_the_child_is_in_its_handler() -> None:
            seen = b""
            while b"hang\n" not in seen:
                seen = seen[-8:] + await proc.stdout.receive_some(4096)
            proc.kill()
            killed_at.append(time.perf_counter())

        nursery.start_soon(kill_once_the_child_is_in_its_handler)
        with pytest.raises(TransportError):
            await me.request(child["peer_id"], b"hang", timeout_s=60)
        assert killed_at, "the request failed before it reached the child's handler"
        assert time.perf_counter() - killed_at[0] < 8
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.slow
async def test_mdns_limited_to_loopback_discovers_a_peer(nursery):
    options = dict(mdns=True, mdns_interfaces=("127.0.0.1",), heartbeat_s=0.5)
    a = await start(nursery, **options)
    b = await start(nursery, **options)
    with trio.fail_after(20):
        await a.wait_peers(1)
    assert [p.peer_id for p in a.peers()] == [b.peer_id]
