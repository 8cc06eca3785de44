"""The daemon's libp2p transport: gossipsub broadcast plus request/response.

HPCP (:mod:`lattice.hpcp`) is a sync engine over bytes; this module is the
network under it.  It offers two things over one py-libp2p host (TCP, Noise,
yamux, identity = the node's Ed25519 key):

* **Broadcast** — gossipsub on one topic.  :meth:`Transport.broadcast` publishes,
  :meth:`Transport.receive` yields ``(origin peer id, data)`` for every message
  from *another* peer (our own are filtered out).  libp2p does not sign
  these messages (meshd signs its own records and checks them), so the
  origin is the one the message claims: a hint for rate limits and for whom
  to ask for blocks, never proof of authorship.
* **Requests** — protocol ``/meshd/blocks/1.0.0``, one stream per request, one
  length-prefixed frame each way (see :mod:`meshd.p2p.wire` for the bytes).

py-libp2p runs on its own ``async_service`` framework.  :meth:`Transport.serve`
hides it: it is a plain trio service (``await nursery.start(t.serve)``) that
enters py-libp2p's context managers in order, host, then pubsub, then the
gossipsub router, and leaves them in reverse when cancelled.  Cancelling
``serve`` therefore closes every connection and stream (peers see them
reset), stops libp2p's tasks and unregisters mDNS; the transport can't be
restarted afterwards.  Pending :meth:`receive`/:meth:`request`/:meth:`broadcast`
calls in other tasks then fail with :class:`TransportClosed` (or a
:class:`TransportError` mapped from the broken stream).

Two-peer use::

    async with trio.open_nursery() as nursery:
        a = await nursery.start(Transport(seed_a, P2POptions()).serve)
        b = await nursery.start(Transport(seed_b, P2POptions(bootstrap=tuple(a.listen_addrs()))).serve)
        await a.wait_peers(1)
        await b.broadcast(b"hello")
        assert await a.receive() == (b.peer_id, b"hello")

py-libp2p 0.8.1 quirks handled here (search for "Quirk"): the 32-message
subscription channel, a teardown that leaves sockets open, gossip sent to
peers not yet grafted, and its logging; in :mod:`meshd.p2p.stack`: how the
host and gossipsub are built (plaintext/secio/TLS defaults, the 250 ms
connect delay, the 120 s heartbeat, spam protection, the 1 MiB RPC limit,
dial retries); in :mod:`meshd.p2p.backpressure`: the silently dropping
32-RPC outgoing queue; in :mod:`meshd.p2p.peer_dials`: crossing dials; in
:mod:`meshd.p2p.connections`: the swarm's negative dial cache; in
:mod:`meshd.p2p._pubsub_tuning`: sequence numbers reused after a restart, a
gossip cache keyed apart from the message id, the signed peer record
rebuilt and verified on every RPC, and newly subscribed peers grafted only
at the next heartbeat; in :mod:`meshd.p2p._exclusive_ports`: listeners
shared through SO_REUSEPORT.  What we offer peers and how we dial
theirs: :mod:`meshd.p2p.addresses`, :mod:`meshd.p2p.dialing`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Final

import multiaddr
import trio

import libp2p  # noqa: F401  (importing it reconfigures logging; undone right below)

from .wire import (
    BadFrame,
    MessageTooLarge,
    PeerUnreachable,
    RemoteHandlerError,
    RequestTimeout,
    TransportClosed,
    TransportError,
    adopt_libp2p_logging,
    ed25519_key_pair,
)

# Quirk: `import libp2p` takes over the "libp2p" logger; hand it back to ours.
adopt_libp2p_logging()

from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.pubsub.gossipsub import GossipSub  # noqa: E402
from libp2p.pubsub.pubsub import Pubsub  # noqa: E402

from ..runtime.logs import get_logger  # noqa: E402
from ._pubsub_tuning import fill_mesh_now  # noqa: E402
from .addresses import Advertiser  # noqa: E402
from .backpressure import Backpressure  # noqa: E402
from .budgets import ConnectionBudgets  # noqa: E402
from .connections import Connections  # noqa: E402
from .dialing import dial_first  # noqa: E402
from .leaving import Farewell, say_farewell  # noqa: E402
from .mdns import serve_mdns  # noqa: E402
from .options import P2POptions, PeerInfo, TransportStatistics  # noqa: E402
from .peer_dials import PeerDials  # noqa: E402
from .requests import RequestHandler, Served, answer_stream, call_over_stream, reset_quietly  # noqa: E402
from .stack import MAX_BROADCAST_BYTES, build_stack, running_stack  # noqa: E402

__all__ = [
    "BLOCKS_PROTOCOL",
    "MAX_BROADCAST_BYTES",
    "BadFrame",
    "MessageTooLarge",
    "P2POptions",
    "PeerInfo",
    "PeerUnreachable",
    "RemoteHandlerError",
    "RequestTimeout",
    "Transport",
    "TransportClosed",
    "TransportError",
    "TransportStatistics",
]

BLOCKS_PROTOCOL: Final = TProtocol("/meshd/blocks/1.0.0")
_POLL_S: Final = 0.01
_GRAFT_POLL_S: Final = 0.02
#: Subscriptions arrive just after a connection, and wake the graft loop; as a
#: backstop it also polls every _GRAFT_POLL_S this long after a connect or
#: disconnect, then only every _GRAFT_QUIET_S (or at the next connection or
#: subscription change), so an idle node does not wake 50 times a second
#: (issue 16: idle CPU).
_GRAFT_FAST_FOR_S: Final = 3.0
_GRAFT_QUIET_S: Final = 1.0
_CLOSE_TIMEOUT_S: Final = 2.0

log = get_logger("meshd.p2p")

class Transport:
    """One libp2p host speaking gossipsub and ``/meshd/blocks/1.0.0``.

    Args:
        seed: The node's 32-byte Ed25519 private seed; the peer id derives
            from it exactly as :func:`meshd.p2p.identity.peer_id_from_public_key`.
        options: Validated here; nothing is opened until :meth:`serve`.

    Raises:
        ValueError: bad seed or options.
    """

    def __init__(self, seed: bytes, options: P2POptions) -> None:
        options.validate()
        self._options = options
        self._key_pair = ed25519_key_pair(seed)
        self._id = ID.from_pubkey(self._key_pair.public_key)
        self._peer_id = self._id.to_base58()
        self._handler: RequestHandler | None = None
        self._host: Any = None
        self._pubsub: Pubsub | None = None
        self._serving = False
        self._recv_send, self._recv_recv = trio.open_memory_channel[tuple[str, bytes]](options.receive_buffer)
        self._publish_lock = trio.Lock()
        self._serve_limits: dict[str, trio.Semaphore] = {}
        self._serve_users: dict[str, int] = defaultdict(int)
        self._counts: dict[str, int] = defaultdict(int)
        self._backpressure = Backpressure(options, self._counts)
        self._dials = PeerDials(self._id, options.request_timeout_s, self._counts)
        self._connections = Connections(self._counts, self._dials.cancel)
        self._advertiser = Advertiser(announce=options.announce, no_announce=options.no_announce)
        self._farewell: Farewell | None = None
        self._budgets = ConnectionBudgets(options.budgets)

    # -- public API -----------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """Our libp2p peer id ("12D3KooW…")."""
        return self._peer_id

    def listen_addrs(self) -> list[str]:
        """The multiaddrs we offer peers (identify sends the same), ``/p2p/<id>`` included.

        See :func:`meshd.p2p.addresses.advertised_addrs` (wildcards expanded, no loopback, announce).
        """
        if self._host is None:
            return []
        return [str(a) for a in self._host.get_addrs()]

    def set_request_handler(self, handler: RequestHandler) -> None:
        """Serve ``/meshd/blocks/1.0.0`` requests with ``handler(peer_id, data)``.

        May be called before or after :meth:`serve`; without a handler every
        request is answered with the handler-failed status.
        """
        self._handler = handler

    def set_farewell(self, farewell: Farewell) -> None:
        """Gossip ``farewell()`` as serving stops, before connections close (:mod:`meshd.p2p.leaving`)."""
        self._farewell = farewell

    async def serve(self, *, task_status: trio.TaskStatus[Transport] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host until cancelled.

        Starts the host, listens, subscribes to the topic, then reports
        ``started(self)`` and keeps (re)dialling the bootstrap peers and, if
        enabled, mDNS-discovered peers.  Cancellation first closes the host
        (every connection, stream and listener, bounded by 2 s, so peers see
        their streams end at once), then stops py-libp2p's services in
        reverse start order (gossipsub router, pubsub, swarm).  Pending
        :meth:`receive` calls then raise :class:`TransportClosed`; this
        transport can't serve again.

        Raises:
            TransportError: the host could not listen.
        """
        if self._serving or self._host is not None:
            raise TransportError("a Transport serves once")
        opts = self._options
        host, pubsub, router = build_stack(self._key_pair, self._id, opts, self._advertiser, self._budgets)
        host.get_network().register_notifee(self._connections.notifee())
        # Quirk: py-libp2p has no event for "a peer's subscription arrived".
        # This instance's handler is wrapped so that the graft loop and the
        # mesh's watch loop wake at once instead of polling for it.
        handle = pubsub.handle_subscription

        def handle_subscription(origin_id: ID, sub_message: Any) -> None:
            handle(origin_id, sub_message)
            self._wake_pollers()

        pubsub.handle_subscription = handle_subscription  # type: ignore[method-assign]
        host.set_stream_handler(BLOCKS_PROTOCOL, self._handle_stream)
        self._host = host
        self._pubsub = pubsub
        # Quirk: when a cancellation reaches py-libp2p's own tasks, their
        # teardown (Swarm.run -> close) is itself cancelled before it closes
        # any socket, and marks the connections closed so a later close() is
        # a no-op: the TCP sockets stay open until garbage collection and
        # peers never notice we left (their requests hang until timeout).
        # So the stack runs under a shielded scope of its own; when *we* are
        # cancelled we first close the host while its tasks still run, then
        # cancel the stack.
        stack_scope = trio.CancelScope(shield=True)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_stack, host, pubsub, router, stack_scope)
                self._serving = True
                log.info("p2p_listening", peer_id=self._peer_id, addrs=",".join(self.listen_addrs()))
                task_status.started(self)
                try:
                    await trio.sleep_forever()
                finally:
                    self._serving = False
                    await say_farewell(pubsub, opts.topic, self._farewell)  # shielded, bounded
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_TIMEOUT_S):
                        try:
                            await host.close()  # every connection, stream and listener
                        except Exception as exc:  # best effort: the sockets die with the process anyway
                            log.warning("p2p_close_failed", error=repr(exc))
                    stack_scope.cancel()
        except OSError as exc:
            raise TransportError(f"libp2p host failed: {exc}") from exc
        except BaseExceptionGroup as group:
            # py-libp2p's nested nurseries wrap a failed start (see _run_stack).
            refused = group.subgroup(lambda e: isinstance(e, TransportError))
            while isinstance(refused, BaseExceptionGroup):
                refused = refused.exceptions[0]
            if refused is not None:
                raise refused from None
            raise
        finally:
            self._serving = False
            self._recv_send.close()

    async def _run_stack(
        self,
        host: Any,
        pubsub: Pubsub,
        router: GossipSub,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """py-libp2p's services in start order; they stop in reverse when ``scope`` is cancelled."""
        opts = self._options
        with scope:
            async with running_stack(host, pubsub, router, opts.listen):
                subscription = await pubsub.subscribe(opts.topic)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, subscription)
                    nursery.start_soon(self._graft_newcomers, pubsub, router)
                    for addr in opts.bootstrap:
                        nursery.start_soon(self._keep_connected, addr)
                    if opts.mdns:
                        await nursery.start(serve_mdns, self, host, opts.mdns_interfaces, opts.heartbeat_s)
                    task_status.started()
                    await trio.sleep_forever()

    async def broadcast(self, data: bytes) -> None:
        """Publish ``data`` on the topic to every subscribed peer.

        Applies backpressure: waits while any subscribed peer's outgoing
        queue is above a high-water mark, so py-libp2p never drops the
        message for being full.  A peer stalled longer than
        ``request_timeout_s`` stops holding everyone back: the message is
        published anyway, may be dropped for that peer only (gossipsub's
        IHAVE/IWANT and HPCP's own sync repair that) and is counted in
        ``broadcast_overflows`` with a warning.  Cancellation while waiting
        publishes nothing; once publishing started it completes or not at all
        for each peer queue.

        Raises:
            MessageTooLarge: ``data`` exceeds :data:`MAX_BROADCAST_BYTES`.
            TransportClosed: not serving.
        """
        if len(data) > MAX_BROADCAST_BYTES:
            raise MessageTooLarge(f"broadcast of {len(data)} bytes exceeds {MAX_BROADCAST_BYTES}")
        pubsub = self._require_pubsub()
        async with self._publish_lock:  # one publisher at a time keeps our order
            await self._backpressure.wait_for_queue_room(pubsub)
            await pubsub.publish(self._options.topic, bytes(data))
        self._counts["broadcasts_sent"] += 1
        self._counts["broadcast_bytes_sent"] += len(data)
        await self._backpressure.reset_wedged(self._disconnect_stalled)

    async def _disconnect_stalled(self, peer: Any) -> None:
        await self._require_host().disconnect(peer)

    async def receive(self) -> tuple[str, bytes]:
        """The next gossip message from another peer: ``(origin peer id, data)``.

        The origin is the one the message claims (libp2p does not sign
        gossip; see the module doc).

        Cancellation loses nothing: the message stays buffered.

        Raises:
            TransportClosed: the transport stopped serving and the buffer is empty.
        """
        try:
            return await self._recv_recv.receive()
        except trio.EndOfChannel:
            raise TransportClosed("transport stopped") from None

    async def request(self, peer_id: str, data: bytes, *, timeout_s: float | None = None) -> bytes:
        """Send one request to ``peer_id`` and return its response.

        Dials the peer if needed (addresses from bootstrap, mDNS or earlier
        connections), opens a fresh stream, writes one frame, reads one.
        Cancellation or timeout resets the stream; the peer's handler may
        still run to completion on its side.

        Raises:
            MessageTooLarge: ``data`` exceeds ``max_message_bytes``.
            PeerUnreachable: no connection, or it broke before the response.
            RequestTimeout: no response within ``timeout_s`` (default
                ``request_timeout_s``).
            BadFrame: the response is malformed or oversize.
            RemoteHandlerError: the peer's handler failed.
            TransportClosed: not serving.
        """
        opts = self._options
        if len(data) > opts.max_message_bytes:
            raise MessageTooLarge(f"request of {len(data)} bytes exceeds {opts.max_message_bytes}")
        host = self._require_host()
        timeout = opts.request_timeout_s if timeout_s is None else timeout_s
        self._counts["requests_sent"] += 1
        stream = None
        try:
            with trio.fail_after(timeout):
                try:
                    target = ID.from_base58(peer_id)
                except Exception as exc:
                    raise PeerUnreachable(f"malformed peer id {peer_id!r}") from exc
                try:
                    stream = await host.new_stream(target, [BLOCKS_PROTOCOL])
                except Exception as exc:
                    raise PeerUnreachable(f"cannot open a stream to {peer_id}: {exc}") from exc
                return await call_over_stream(stream, peer_id, data, opts.max_message_bytes)
        except trio.TooSlowError:
            self._counts["requests_failed"] += 1
            await reset_quietly(stream)
            raise RequestTimeout(f"no response from {peer_id} within {timeout} s") from None
        except BaseException:
            self._counts["requests_failed"] += 1
            await reset_quietly(stream)
            raise

    async def connect(self, multiaddr_: str) -> str:
        """Dial exactly ``/…/p2p/<id>`` (no-op if connected); see :func:`~meshd.p2p.dialing.dial_exact`.

        Raises:
            PeerUnreachable: malformed address or the dial failed.
            TransportClosed: not serving.
        """
        host = self._require_host()
        async with self._dials.one_dial(multiaddr_.rsplit("/p2p/", 1)[-1]):
            return await self._dials.dial_exact(host, multiaddr_)

    async def connect_any(self, peer_id: str, addrs: list[str]) -> str:
        """Dial ``peer_id`` at the first of ``addrs`` that answers.

        Ordered by :func:`meshd.p2p.addresses.dial_order` (our networks
        first, loopback only when nothing else is offered), dialled by
        :func:`meshd.p2p.dialing.dial_first` (an address that drops packets
        costs 250 ms, not a timeout).  Cancellation cancels every dial.

        Raises:
            PeerUnreachable: no address connected (or none was given).
            TransportClosed: not serving.
        """
        host = self._require_host()
        full = [a if "/p2p/" in a else f"{a}/p2p/{peer_id}" for a in addrs]
        async with self._dials.one_dial(peer_id):  # the addresses race each other, not other dials of this peer
            if peer_id in {p.to_base58() for p in host.get_connected_peers()}:
                return peer_id
            return await dial_first(lambda a: self._dials.dial_exact(host, a), self._advertiser.dial_order(full))

    def peer_ids(self) -> frozenset[str]:
        """The ids of the peers we hold a connection to: :meth:`peers` without
        their addresses, which pollers (the mesh's watch loop, every core
        call) do not need and which cost a string per multiaddr."""
        host = self._host
        if host is None:
            return frozenset()
        return frozenset(pid.to_base58() for pid in host.get_connected_peers())

    def peers(self) -> list[PeerInfo]:
        """The peers we hold a connection to."""
        host = self._host
        if host is None:
            return []
        store = host.get_peerstore()
        out = []
        for pid in host.get_connected_peers():
            key = pid.to_base58()
            try:
                addrs = tuple(str(a) for a in store.addrs(pid))
            except Exception:  # the peerstore raises when it holds no address
                addrs = ()
            out.append(PeerInfo(key, addrs, self._connections.since.get(key, time.time())))
        return out

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` (no-op when there is none).

        Raises:
            PeerUnreachable: malformed peer id.
            TransportClosed: not serving.
        """
        host = self._require_host()
        try:
            target = ID.from_base58(peer_id)
        except Exception as exc:  # base58 and multihash raise their own errors
            raise PeerUnreachable(f"malformed peer id {peer_id!r}") from exc
        await host.disconnect(target)

    def subscribed_peers(self) -> set[str]:
        """Connected peers our gossip reaches now: subscribed to our topic, and in our gossipsub mesh
        (or subscribed while our mesh is full enough that it may leave them out)."""
        pubsub = self._pubsub
        if pubsub is None or self._host is None:
            return set()
        topic = self._options.topic
        connected = {p.to_base58() for p in self._host.get_connected_peers()}
        subscribed = connected & {p.to_base58() for p in pubsub.peer_topics.get(topic, ())}
        router = pubsub.router
        mesh = getattr(router, "mesh", {}).get(topic, set())
        if len(mesh) >= getattr(router, "degree_low", 0):
            return subscribed
        # Quirk: gossipsub publishes only to its mesh, so a message sent to a
        # peer that subscribed but is not grafted yet reaches nobody.
        return subscribed & {p.to_base58() for p in mesh}

    async def wait_peers(self, n: int) -> None:
        """Wait until ``n`` peers are connected *and* subscribed to our topic.

        "Subscribed" matters: a broadcast reaches only peers whose
        subscription has arrived, so start-up and tests wait for that.
        Cancellation changes nothing.
        """
        pubsub = self._require_pubsub()
        while True:
            connected = {p.to_base58() for p in self._host.get_connected_peers()}
            subscribed = {p.to_base58() for p in pubsub.peer_topics.get(self._options.topic, ())}
            if len(connected & subscribed) >= n:
                return
            # py-libp2p has no event for "subscription received": poll.
            await trio.sleep(_POLL_S)

    def statistics(self) -> TransportStatistics:
        """A snapshot of the counters."""
        c = self._counts
        return TransportStatistics(
            peers=len(self._host.get_connected_peers()) if self._host is not None else 0,
            **{f: c[f] for f in TransportStatistics.__dataclass_fields__ if f != "peers"},
        )

    def take_rejections(self) -> list[str]:
        """Reasons of the messages the connection budgets refused since the last call; any thread."""
        return self._budgets.take_rejections()

    # -- internals --------------------------------------------------------------


    def _require_host(self) -> Any:
        if self._host is None or not self._serving:
            raise TransportClosed("transport is not serving")
        return self._host

    def _require_pubsub(self) -> Pubsub:
        self._require_host()
        assert self._pubsub is not None
        return self._pubsub

    def _wake_pollers(self) -> None:
        """Wake whoever waits in :meth:`wait_churn` (a connection or subscription changed)."""
        self._connections.wake_pollers()

    def quiet_s(self) -> float:
        """Seconds since a peer last connected or disconnected (since start, before any)."""
        return self._connections.quiet_s()

    async def wait_churn(self, timeout_s: float) -> bool:
        """Wait until a peer connects, disconnects, subscribes or unsubscribes,
        or our gossip mesh grafts newcomers; at most ``timeout_s``; True if one did.

        Lets a poller that looks at the connections sleep while none change.
        Cancellation changes nothing.
        """
        return await self._connections.wait_churn(timeout_s)

    async def _wait_for_queue_room(self, pubsub: Pubsub) -> None:
        """See :meth:`meshd.p2p.backpressure.Backpressure.wait_for_queue_room`."""
        await self._backpressure.wait_for_queue_room(pubsub)

    async def _pump(self, subscription: Any) -> None:
        # Quirk: py-libp2p's subscription channel holds 32 messages and drops
        # (send_nowait) when full, so this task only moves messages into our
        # own larger buffer and never blocks on the consumer.
        while True:
            msg = await subscription.get()
            origin = ID(msg.from_id)
            if origin == self._id:
                continue
            try:
                self._recv_send.send_nowait((origin.to_base58(), bytes(msg.data)))
            except trio.WouldBlock:
                self._counts["messages_dropped"] += 1
                continue
            self._counts["messages_received"] += 1
            self._counts["message_bytes_received"] += len(msg.data)

    async def _graft_newcomers(self, pubsub: Pubsub, router: GossipSub) -> None:
        """Graft newly subscribed peers at once, not at the next heartbeat (see ``fill_mesh_now``)."""
        seen: set[Any] = set()
        while True:
            now = set(pubsub.peer_topics.get(self._options.topic, ()))
            if now - seen:
                await fill_mesh_now(router, self._options.topic)
                self._wake_pollers()  # the watch loop greets whom we grafted
            seen = now
            # A subscription wakes us (the wrapped handle_subscription); the
            # short poll after a connection change is a backstop, for a
            # newcomer whose outgoing stream was not ready when it arrived.
            if self.quiet_s() < _GRAFT_FAST_FOR_S:
                await trio.sleep(_GRAFT_POLL_S)
            else:
                await self.wait_churn(_GRAFT_QUIET_S)

    async def _keep_connected(self, addr: str) -> None:
        """Dial a bootstrap peer, and redial every ``reconnect_s`` while it is away."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        key = info.peer_id.to_base58()
        host = self._host
        while True:
            if key not in self._connections.since:
                try:
                    # Not self.connect(): this runs before serve() reports
                    # started, when connect() still refuses (the first dial
                    # then waited out a whole reconnect_s).
                    async with self._dials.one_dial(key):
                        await self._dials.dial_exact(host, addr)
                except TransportError as exc:
                    log.debug("p2p_bootstrap_dial_failed", addr=addr, error=str(exc))
            await trio.sleep(self._options.reconnect_s)

    async def _handle_stream(self, stream: Any) -> None:
        """Serve one request stream; runs in a py-libp2p task, never raises."""
        peer_id = stream.muxed_conn.peer_id.to_base58()
        limit = self._serve_limits.get(peer_id)
        if limit is None:
            limit = self._serve_limits[peer_id] = trio.Semaphore(self._options.max_concurrent_requests)
        self._serve_users[peer_id] += 1
        try:
            async with limit:
                served = await answer_stream(stream, peer_id, self._handler, self._options,
                                             self._budgets.request)
            self._counts[served.value] += 1
            if served is Served.BAD_FRAME:
                self._budgets.refuse("bad_request_frame")
        finally:
            self._serve_users[peer_id] -= 1
            if self._serve_users[peer_id] == 0:
                del self._serve_users[peer_id]
                self._serve_limits.pop(peer_id, None)
