"""Connecting the IPFS nodes of a mesh to each other, so blocks also move by bitswap.

When a node's block store is an IPFS node, meshd alone moves blocks between
members (HPCP over libp2p), and the IPFS nodes never meet: a block one of them
holds is out of reach of the others' ``ipfs`` tools.  This service closes the
gap:

* it reads its IPFS node's swarm addresses (``id``) every
  :attr:`IpfsSwarmOptions.interval_s` and offers them in presence (the
  optional ``"ipfs"`` key, :mod:`lattice.peers`), filtered by
  :func:`offered_ipfs_addrs`;
* for every live peer that offers IPFS addresses and whose IPFS node ours is
  not connected to (``swarm/peers``), it asks ours to ``swarm connect`` to
  them, in :func:`connect_order`, at most once per ``retry_s`` per peer.

Which addresses travel follows the rules meshd uses for its own
(:mod:`meshd.p2p.addresses`): wildcards expanded, link-local and
``no_announce`` dropped, loopback dropped whenever another remains.  One rule
more, because the IPFS node is configured apart from meshd: an IPFS node that
listens on loopback only (the test node of ``scripts/start-ipfs.sh`` does) is
offered only while meshd itself offers loopback addresses only (a one-host
mesh), since a peer on another host would dial its *own* host at them.  On
the receiving side loopback IPFS addresses are dialled only for a peer whose
meshd addresses are all loopback (it runs on this host).

A private mesh (``[p2p] secret``) does not run this service at all: its
members offer no IPFS addresses and connect no IPFS nodes, so its blocks
never travel by bitswap, which its secret could not seal (see
docs/security.md).

The IPFS calls block (HTTP), so they run in a worker thread; a failed call is
counted and retried at the next round, never fatal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from lattice.errors import StoreError

from ..runtime.logs import get_logger
from .addresses import Interface, _is_loopback, advertised_addrs, dial_order, local_interfaces

__all__ = ["IpfsSwarm", "IpfsSwarmOptions", "IpfsSwarmStatistics", "connect_order", "offered_ipfs_addrs"]

log = get_logger("meshd.p2p.ipfs_swarm")


class SwarmNode(Protocol):
    """What the service needs of the IPFS node (:class:`meshd.store.ipfs.IpfsBlockStore` has it)."""

    def swarm_identity(self) -> tuple[str, list[str]]:
        """The node's IPFS peer id and swarm multiaddrs ending in ``/p2p/<id>``."""
        ...

    def swarm_peers(self) -> set[str]:
        """IPFS peer ids connected now."""
        ...

    def swarm_connect(self, addr: str) -> None:
        """Connect to ``addr``; raises on failure."""
        ...


@dataclass(frozen=True)
class PeerOffer:
    """What a live peer's presence says about reaching it: meshd addresses and IPFS ones."""

    addrs: tuple[str, ...]
    ipfs: tuple[str, ...]


@dataclass(frozen=True)
class IpfsSwarmOptions:
    """How often the service looks and dials.

    Attributes:
        interval_s: Between two rounds (read our addresses, connect to peers).
            Default 2.0 (the presence interval): a new member's IPFS node is
            connected within about two presence intervals.
        retry_s: Least time between two connection attempts to one peer's
            IPFS node.  Default 10.0.
        no_announce: ``[p2p] no_announce``: addresses or ranges never offered.
    """

    interval_s: float = 2.0
    retry_s: float = 10.0
    no_announce: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= 3600:
            raise ValueError("interval_s must be in (0, 3600]")
        if not 0 <= self.retry_s <= 86400:
            raise ValueError("retry_s must be in [0, 86400]")


@dataclass(frozen=True)
class IpfsSwarmStatistics:
    """Counters since start.

    Attributes:
        ipfs_peer_id: Our IPFS node's peer id ("" until first read).
        offered: The IPFS addresses offered in presence now.
        connects: ``swarm connect`` calls that succeeded.
        connect_failures: Those that failed (every address of a peer refused).
        node_errors: Rounds in which our IPFS node itself failed to answer.
    """

    ipfs_peer_id: str = ""
    offered: tuple[str, ...] = ()
    connects: int = 0
    connect_failures: int = 0
    node_errors: int = 0


def _strip_p2p(addr: str) -> str:
    return addr.split("/p2p/", 1)[0]


def offered_ipfs_addrs(ipfs_addrs: Iterable[str], own_addrs: Sequence[str], interfaces: Sequence[Interface], *,
                       no_announce: Sequence[str] = ()) -> list[str]:
    """The IPFS swarm addresses to offer peers (see the module doc).

    Args:
        ipfs_addrs: Our IPFS node's addresses, each ending in ``/p2p/<id>``.
        own_addrs: The meshd addresses we offer (:meth:`Transport.listen_addrs`).
        interfaces: This machine's interface addresses.
        no_announce: Addresses or ranges never offered.

    Returns:
        Addresses with their ``/p2p/<id>`` suffix, in the node's order.
    """
    addrs = [a for a in ipfs_addrs if "/p2p/" in a]
    if not addrs:
        return []
    suffix = "/p2p/" + addrs[0].rpartition("/p2p/")[2]  # one node, one id
    bases = [_strip_p2p(a) for a in addrs if a.endswith(suffix)]
    kept = advertised_addrs(bases, interfaces, no_announce=no_announce)  # wildcards expanded here
    if kept and all(_is_loopback(a) for a in kept) and any(not _is_loopback(_strip_p2p(a)) for a in own_addrs):
        # Our meshd is reachable from other hosts, our IPFS node is not:
        # peers there would dial their own host at these addresses.
        return []
    return [a + suffix for a in kept]


def connect_order(peer: PeerOffer, interfaces: Sequence[Interface]) -> list[str]:
    """A peer's offered IPFS addresses in the order to try them; loopback ones
    only when its meshd addresses are all loopback (it runs on this host)."""
    same_host = bool(peer.addrs) and all(_is_loopback(_strip_p2p(a)) for a in peer.addrs)
    addrs = [a for a in peer.ipfs if same_host or not _is_loopback(_strip_p2p(a))]
    return dial_order(addrs, interfaces)


class IpfsSwarm:
    """The service (see the module doc).  The constructor does no I/O.

    Args:
        node: Our IPFS node.
        own_addrs: The meshd addresses we offer now.
        peers: Live peers with what their presence offers (our own id left out).
        options: See :class:`IpfsSwarmOptions`.
    """

    def __init__(self, node: SwarmNode, *, own_addrs: Callable[[], Sequence[str]],
                 peers: Callable[[], Mapping[str, PeerOffer]], options: IpfsSwarmOptions | None = None) -> None:
        self.node = node
        self.options = options or IpfsSwarmOptions()
        self._own_addrs = own_addrs
        self._peers = peers
        self._offered: tuple[str, ...] = ()
        self._ipfs_id = ""
        self._tried: dict[str, float] = {}  # meshd peer id -> monotonic time of the last attempt
        self._counts = [0, 0, 0]  # connects, connect_failures, node_errors
        self._interfaces: tuple[float, list[Interface]] = (float("-inf"), [])

    def offered(self) -> list[str]:
        """The IPFS addresses to put in our presence now (the mesh reads this)."""
        return list(self._offered)

    def statistics(self) -> IpfsSwarmStatistics:
        """A snapshot of the counters."""
        c = self._counts
        return IpfsSwarmStatistics(ipfs_peer_id=self._ipfs_id, offered=self._offered, connects=c[0],
                                   connect_failures=c[1], node_errors=c[2])

    def _local_interfaces(self) -> list[Interface]:
        at, cached = self._interfaces
        now = time.monotonic()
        if now - at >= 5.0:
            cached = local_interfaces()
            self._interfaces = (now, cached)
        return cached

    def _round(self) -> None:
        """One round, in a worker thread: read our addresses, connect to peers' IPFS nodes."""
        interfaces = self._local_interfaces()
        try:
            ident, addrs = self.node.swarm_identity()
            connected = self.node.swarm_peers()
        except StoreError as exc:  # counted, retried next round
            self._counts[2] += 1
            log.warning("ipfs_swarm_node_error", error=str(exc)[:300])
            return
        self._ipfs_id = ident
        self._offered = tuple(offered_ipfs_addrs(addrs, list(self._own_addrs()), interfaces,
                                                 no_announce=self.options.no_announce))
        now = time.monotonic()
        for peer, offer in self._peers().items():
            order = [a for a in connect_order(offer, interfaces) if a.rpartition("/p2p/")[2] != ident]
            if not order or {a.rpartition("/p2p/")[2] for a in order} & connected:
                continue
            if now - self._tried.get(peer, float("-inf")) < self.options.retry_s:
                continue
            self._tried[peer] = now
            last = ""
            for addr in order:
                try:
                    self.node.swarm_connect(addr)
                except StoreError as exc:  # try the next address
                    last = str(exc)[:300]
                    continue
                self._counts[0] += 1
                log.info("ipfs_swarm_connected", peer=peer, addr=addr)
                break
            else:
                self._counts[1] += 1
                log.warning("ipfs_swarm_connect_failed", peer=peer, error=last)
        if len(self._tried) > 4096:  # forget the oldest attempts: bounded whatever the churn
            for p, _ in sorted(self._tried.items(), key=lambda kv: kv[1])[:2048]:
                del self._tried[p]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run rounds until cancelled; started once the first round has read our addresses.

        Cancellation leaves nothing half done: a round only reads and dials.
        """
        await trio.to_thread.run_sync(self._round, abandon_on_cancel=True)
        task_status.started()
        while True:
            await trio.sleep(self.options.interval_s)
            await trio.to_thread.run_sync(self._round, abandon_on_cancel=True)
