"""Opt-in mDNS peer discovery for :mod:`meshd.p2p`, limited to chosen interfaces.

Quirk: py-libp2p's own ``MDNSDiscovery`` (``new_host(enable_mDNS=True)``)
builds ``Zeroconf()`` with its default ``InterfaceChoice.All``, i.e. it
multicasts on every interface and offers no way to restrict that.  We reuse
its spec-compliant pieces (``PeerBroadcaster`` advertises our multiaddrs in
``dnsaddr`` TXT records, ``PeerListener`` browses for others) but hand them a
``Zeroconf(interfaces=[...])`` of our own, built from
``P2POptions.mdns_interfaces`` (IPv4 addresses of the allowed interfaces).

zeroconf runs its own thread; the listener fills ``discovered_services`` and
the peerstore from there.  A trio task reads that dict every heartbeat and
dials peers we are not connected to.
"""

from __future__ import annotations

import random
import string
from typing import Any

import trio

from ..runtime.logs import get_logger

log = get_logger("meshd.p2p")


async def serve_mdns(
    transport: Any,
    host: Any,
    interfaces: tuple[str, ...],
    interval_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise ``host`` and dial discovered peers until cancelled.

    Cancellation unregisters our service (a goodbye packet) and closes the
    zeroconf sockets and thread; peers already dialled stay connected.
    """
    from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
    from libp2p.discovery.mdns.listener import PeerListener
    from libp2p.discovery.mdns.mdns import SERVICE_TYPE
    from libp2p.peer.peerinfo import PeerInfo
    from zeroconf import Zeroconf

    port = 0
    for addr in host.get_transport_addrs():
        try:
            port = int(addr.value_for_protocol("tcp"))
            break
        except Exception:  # not a TCP address: look at the next one
            continue
    name = "".join(random.choices(string.ascii_lowercase + string.digits, k=32)) + "." + SERVICE_TYPE
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=list(interfaces)))
    broadcaster = listener = None
    try:
        broadcaster = PeerBroadcaster(
            zeroconf=zc,
            service_type=SERVICE_TYPE,
            service_name=name,
            peer_id=transport.peer_id,
            port=port,
            host=host,
        )
        await trio.to_thread.run_sync(broadcaster.register)
        listener = PeerListener(peerstore=host.get_peerstore(), zeroconf=zc, service_type=SERVICE_TYPE, service_name=name)
        log.info("p2p_mdns_started", interfaces=",".join(interfaces))
        task_status.started()
        while True:
            connected = {p.to_base58() for p in host.get_connected_peers()}
            for peer_id, _seen in list(listener.discovered_services.values()):
                key = peer_id.to_base58()
                if key == transport.peer_id or key in connected:
                    continue
                try:
                    addrs = host.get_peerstore().addrs(peer_id)
                    with trio.move_on_after(interval_s * 5):
                        await host.connect(PeerInfo(peer_id, addrs))
                        log.info("p2p_mdns_connected", peer_id=key)
                except Exception as exc:  # an unreachable LAN peer must not stop discovery
                    log.debug("p2p_mdns_dial_failed", peer_id=key, error=repr(exc))
            await trio.sleep(interval_s)
    finally:
        with trio.CancelScope(shield=True):  # the goodbye packet must go out

            def _close() -> None:
                if listener is not None:
                    listener.stop()
                if broadcaster is not None:
                    broadcaster.unregister()
                zc.close()

            await trio.to_thread.run_sync(_close)
