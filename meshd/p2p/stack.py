"""py-libp2p's host and gossipsub stack as meshd configures it, and the order they run in.

:class:`~meshd.p2p.transport.Transport` owns the stack's lifecycle; this
module holds what py-libp2p 0.8.1 needs set by hand to behave (search for
"Quirk"): the plaintext/secio/TLS security defaults, the 250 ms connect
delay, the 120 s default heartbeat, gossipsub spam and eclipse protection,
the 1 MiB pubsub RPC limit, the swarm's dial retries and a listen that
fails silently; and it applies the process-wide patches of
:mod:`meshd.p2p._pubsub_tuning`, :mod:`meshd.p2p._yamux_tuning`,
:mod:`meshd.p2p._yamux_control_writes` and :mod:`meshd.p2p._exclusive_ports`.
Kept apart from the transport so that the transport reads as what it offers
(broadcast, requests, connections) and this as what it is built from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import multiaddr
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as _x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from ._exclusive_ports import install_exclusive_listeners
from ._pubsub_tuning import (
    idontwant_only_for_large,
    install_peer_record_caches,
    message_id,
    start_seqno_from_clock,
    use_message_id_in_gossip,
)
from ._yamux_control_writes import install_control_writes_aside
from ._yamux_tuning import install_window_hysteresis
from .addresses import Advertiser
from .budgets import ConnectionBudgets
from .options import P2POptions
from .wire import TransportError

__all__ = ["MAX_BROADCAST_BYTES", "build_stack", "running_stack"]

# Quirk: py-libp2p's per-peer RpcQueue splits RPCs at 1 MiB and drops (at
# debug level) any single message that does not fit, so a gossip payload must
# stay below 1 MiB minus the RPC envelope (signature, key, seqno, topic, the
# sender's signed peer record).  We refuse larger broadcasts loudly instead.
MAX_BROADCAST_BYTES: Final = 1024 * 1024 - 16 * 1024


def build_stack(
    key_pair: Any,
    local_id: ID,
    opts: P2POptions,
    advertiser: Advertiser,
    budgets: ConnectionBudgets,
) -> tuple[Any, Pubsub, GossipSub]:
    """The host, pubsub and gossipsub router, built but not started: ``(host, pubsub, router)``.

    Opens nothing; it also installs the process-wide py-libp2p patches
    (idempotent).
    """
    # Quirk: new_host defaults offer plaintext, secio and TLS next to
    # Noise; we pin Noise and yamux only.
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[multiaddr.Multiaddr(a) for a in opts.listen],
        # Quirk: without max_connections_per_peer=1 every connect() waits
        # 250 ms for extra connections to the same peer.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        # Listen (wildcards expanded) plus observed addresses, filtered:
        # what identify, the signed peer record and presence offer.
        addrs_factory=advertiser.factory,
    )
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        # Quirk: with degree_low < degree a small mesh stays under-grafted
        # until enough peers appear; equal bounds graft every peer we have.
        degree=6,
        degree_low=6,
        degree_high=12,
        # Quirk: the default heartbeat is 120 s; mesh repair needs ~1 s.
        heartbeat_interval=opts.heartbeat_s,  # type: ignore[arg-type]  # a float works
        heartbeat_initial_delay=min(0.1, opts.heartbeat_s),
        # Quirk: spam protection drops > 10 msgs/s per peer per topic,
        # far below HPCP's rate; peers are authenticated by signatures.
        spam_protection_enabled=False,
        # Quirk: eclipse protection wants 3 distinct IPs in the mesh and
        # prunes/ignores same-host meshes (tests, one LAN box).
        eclipse_protection_enabled=False,
    )
    # Not libp2p's signatures: meshd signs and checks what it gossips
    # (HPCP announcements, presence), so libp2p's signature on every
    # message, and its verification at every hop, only cost CPU.  The
    # message id is then a hash of origin, seqno and data (see
    # _pubsub_tuning), and a message's origin is what it claims.
    use_message_id_in_gossip(router)
    idontwant_only_for_large(router)
    pubsub = Pubsub(
        host,
        router,
        strict_signing=False,
        msg_id_constructor=message_id,
        # Quirk: pubsub refuses inbound RPCs over 1 MiB by default.
        max_inbound_rpc_size=MAX_BROADCAST_BYTES + 64 * 1024,
        allowed_topics={opts.topic},
    )
    # Per-connection budgets, on the forwarder, not the claimed origin (meshd.p2p.budgets).
    pubsub.set_topic_validator(opts.topic, budgets.gossip_validator(local_id), False)
    start_seqno_from_clock(pubsub)
    install_peer_record_caches()
    install_window_hysteresis()
    install_control_writes_aside()
    install_exclusive_listeners()
    # Quirk: the swarm retries a failed dial 3 times with backoff (~0.7 s
    # for a refused port) and new_host has no option for it.  The mesh
    # redials on its own schedule and takes a dial refused at once as a
    # sign the peer is gone (meshd.p2p.mesh): one attempt per dial.
    host.get_network().retry_config = RetryConfig(max_retries=0)
    return host, pubsub, router


@asynccontextmanager
async def running_stack(host: Any, pubsub: Pubsub, router: GossipSub, listen: tuple[str, ...]) -> AsyncIterator[None]:
    """py-libp2p's services in start order (swarm, pubsub, router), ready; they stop in reverse on exit.

    Raises:
        TransportError: the host could not listen on every address of ``listen``.
    """
    async with (
        host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]),
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        # Quirk: the swarm logs a listen that failed (a port in use)
        # and carries on without it; a node that cannot listen where
        # it was told must not start.
        missing = [a for a in listen if a not in host.get_network().listeners]
        if missing:
            raise TransportError(f"cannot listen on {', '.join(missing)}: address in use or not available")
        await pubsub.wait_until_ready()
        yield
