"""Dialling a peer that offers several addresses: happy eyeballs (RFC 8305 style).

A peer offers every interface address it has (see :mod:`meshd.p2p.addresses`),
and some of them may drop packets silently from where we are (another
host's private network, a VPN interface).  Dialling them one after the other
would wait out a TCP timeout per dead address; dialling all at once opens
needless connections.  :func:`dial_first` starts the next dial when the
previous one failed or after a short stagger, and the first to connect
cancels the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Any, Final

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from .wire import PeerUnreachable, TransportError

__all__ = ["DIAL_STAGGER_S", "dial_exact", "dial_first"]

#: The next address is dialled this long after the previous one if that has
#: neither connected nor failed yet.
DIAL_STAGGER_S: Final = 0.25


async def dial_exact(host: Any, addr: str, me: Any, connected: Container[str], timeout_s: float) -> str:
    """Dial exactly ``addr`` (``/…/p2p/<id>``) from a py-libp2p ``host``; return the peer id.

    Unlike ``host.connect``, which dials one address of its own choosing
    from all its peerstore holds for the peer (and refuses for a minute
    after a failure), this dials the address given; a peer in ``connected``
    is not dialled again.  Cancellation may leave the connection being set
    up; the swarm then keeps it.

    Raises:
        PeerUnreachable: malformed address, ourselves (``me``), or the dial
            failed or took longer than ``timeout_s``.
    """
    try:
        maddr = multiaddr.Multiaddr(addr)
        info = info_from_p2p_addr(maddr)
    except Exception as exc:  # multiaddr raises its own parse errors
        raise PeerUnreachable(f"malformed peer address {addr!r}: {exc}") from exc
    if info.peer_id == me:
        raise PeerUnreachable("refusing to dial ourselves")
    key = info.peer_id.to_base58()
    if key in connected:
        return key
    try:
        with trio.fail_after(timeout_s):
            conn = await host.get_network().dial_addr(maddr, info.peer_id)
            started = getattr(conn, "event_started", None)
            if started is not None:  # streams can open once the muxer runs
                await started.wait()
    except trio.TooSlowError:
        raise PeerUnreachable(f"dial to {addr} timed out") from None
    except Exception as exc:  # py-libp2p raises many kinds: mapped here
        raise PeerUnreachable(f"dial to {addr} failed: {exc}") from exc
    host.get_peerstore().add_addrs(info.peer_id, info.addrs, 120)
    return key


async def dial_first(connect: Callable[[str], Awaitable[str]], addrs: Sequence[str], *,
                     stagger_s: float = DIAL_STAGGER_S) -> str:
    """Dial ``addrs`` in order, staggered, and return what the first success returned.

    Args:
        connect: Dials one full multiaddr; raises :class:`TransportError` on failure.
        addrs: Full multiaddrs of one peer, best first.
        stagger_s: Head start of each dial over the next.

    Cancellation cancels every dial under way (a connection being set up
    may then be kept by the transport).

    Raises:
        PeerUnreachable: no address connected (or none was given).
    """
    if not addrs:
        raise PeerUnreachable("no address to dial")
    errors: list[str] = []
    won: list[str] = []
    async with trio.open_nursery() as nursery:
        for addr in addrs:
            failed = trio.Event()

            async def dial(addr: str = addr, failed: trio.Event = failed) -> None:
                try:
                    won.append(await connect(addr))
                except TransportError as exc:
                    errors.append(str(exc))
                    failed.set()
                    return
                nursery.cancel_scope.cancel()

            nursery.start_soon(dial)
            with trio.move_on_after(stagger_s):
                await failed.wait()
    if won:
        return won[0]
    raise PeerUnreachable(f"no address answered: {'; '.join(errors)[:500]}")
