"""Which of our addresses to offer peers, and in which order to dial theirs.

A node told to listen on ``/ip4/0.0.0.0/tcp/4601`` used to advertise exactly
that, in presence and identify: an address no other host can dial, so every
connection went through the bootstrap peers (issue 15).  Here:

* :func:`advertised_addrs` turns the listen addresses (wildcards included)
  and the addresses peers observed us at (libp2p identify) into the ones we
  offer: a wildcard becomes one address per local interface address; the
  loopback addresses are dropped whenever a non-loopback one remains (a peer
  on another host can never dial them, and one on this host can dial the
  others), IPv6 link-local ones always (they need a zone); ``announce``
  replaces the whole list and ``no_announce`` removes addresses or whole
  ranges (``/ip4/10.0.0.0/ipcidr/8``), as Kubo's ``Addresses.Announce`` and
  ``Addresses.NoAnnounce``.
* :func:`dial_order` orders a peer's offered addresses for dialling: those on
  one of our own networks first, then the rest, loopback only when the peer
  offers nothing else.

Both are pure (strings and :mod:`ipaddress` values in, strings out); only
:func:`local_interfaces` reads the machine.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Union

import multiaddr
import psutil

__all__ = ["Advertiser", "Interface", "advertised_addrs", "dial_order", "local_interfaces", "parse_filter"]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
#: Interface addresses are re-read at most this often (what we offer follows within it).
INTERFACES_REFRESH_S: Final = 5.0
_WILDCARDS = {"ip4": ipaddress.ip_address("0.0.0.0"), "ip6": ipaddress.ip_address("::")}


@dataclass(frozen=True)
class Interface:
    """One address of a local interface, with its network (``10.0.0.2/24``)."""

    address: IPAddress
    network: IPNetwork


def local_interfaces() -> list[Interface]:
    """The IPv4 and IPv6 addresses of this machine's interfaces that are up (reads the OS)."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if st is not None and not st.isup:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
                net = ipaddress.ip_network(f"{ip}/{a.netmask}", strict=False)
            except ValueError:  # an odd netmask: skip the address, not the interface
                continue
            out.append(Interface(ip, net))
    return out


def _split(addr: str) -> tuple[str, IPAddress, str] | None:
    """``/ip4/1.2.3.4/tcp/1/p2p/x`` -> ("ip4", 1.2.3.4, "/tcp/1/p2p/x"); None when not an IP address."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    return parts[1], ip, "/" + "/".join(parts[3:]) if len(parts) > 3 else ""


def parse_filter(spec: str) -> IPNetwork | str:
    """A ``no_announce`` entry: ``/ip4/<net>/ipcidr/<bits>`` as a network, else the multiaddr itself.

    Raises:
        ValueError: a malformed ``ipcidr`` entry.
    """
    parts = spec.split("/")
    if len(parts) == 5 and parts[1] in ("ip4", "ip6") and parts[3] == "ipcidr":
        return ipaddress.ip_network(f"{parts[2]}/{parts[4]}", strict=False)
    return spec


def _filtered(addr: str, filters: Sequence[IPNetwork | str]) -> bool:
    split = _split(addr)
    for f in filters:
        if isinstance(f, str):
            if addr == f or addr.startswith(f + "/"):
                return True
        elif split is not None and split[1].version == f.version and split[1] in f:
            return True
    return False


def advertised_addrs(candidates: Iterable[str], interfaces: Sequence[Interface], *,
                     announce: Sequence[str] = (), no_announce: Sequence[str] = ()) -> list[str]:
    """The addresses to offer peers (see the module doc).

    Args:
        candidates: Our listen addresses (wildcards included) and the
            addresses peers confirmed they observe us at, without ``/p2p/``.
        interfaces: This machine's interface addresses (:func:`local_interfaces`).
        announce: When non-empty, offered instead of everything else.
        no_announce: Addresses, prefixes or ``/ip4|ip6/<net>/ipcidr/<bits>``
            ranges never offered.

    Returns:
        Distinct addresses, in candidate order, wildcards expanded in place.
    """
    filters = [parse_filter(f) for f in no_announce]
    if announce:
        return [a for a in dict.fromkeys(announce) if not _filtered(a, filters)]
    out: list[str] = []
    for addr in candidates:
        split = _split(addr)
        if split is None or split[1] != _WILDCARDS[split[0]]:
            out.append(addr)
            continue
        family, _, rest = split
        for iface in interfaces:
            if iface.address.version == (4 if family == "ip4" else 6):
                out.append(f"/{family}/{iface.address}{rest}")
    kept = []
    for addr in dict.fromkeys(out):
        split = _split(addr)
        if split is not None and split[1].version == 6 and split[1].is_link_local:
            continue  # needs a zone (fe80::1%eth0) no peer can use
        if not _filtered(addr, filters):
            kept.append(addr)
    if any(not _is_loopback(a) for a in kept):
        kept = [a for a in kept if not _is_loopback(a)]
    return kept


def _is_loopback(addr: str) -> bool:
    split = _split(addr)
    return split is not None and split[1].is_loopback


def dial_order(addrs: Iterable[str], interfaces: Sequence[Interface]) -> list[str]:
    """A peer's offered addresses in the order to dial them.

    Addresses on one of our own networks come first (the peer is most likely
    on that link), then the others in the peer's order; loopback addresses
    are left out when the peer offers any other (they would reach this host,
    not the peer), and last otherwise.
    """
    addrs = list(dict.fromkeys(addrs))
    if any(not _is_loopback(a) for a in addrs):
        addrs = [a for a in addrs if not _is_loopback(a)]
    networks = [i.network for i in interfaces if not i.address.is_loopback]

    def rank(addr: str) -> int:
        split = _split(addr)
        if split is None:
            return 1
        if split[1].is_loopback:
            return 2
        return 0 if any(split[1].version == n.version and split[1] in n for n in networks) else 1

    return sorted(addrs, key=rank)  # stable: the peer's order within a rank


class Advertiser:
    """The transport's side of this module: cached interfaces, our options.

    :meth:`factory` is py-libp2p's ``addrs_factory`` (listen plus observed
    addresses in, offered ones out), so identify, the signed peer record and
    presence all offer the same list.
    """

    def __init__(self, *, announce: Sequence[str] = (), no_announce: Sequence[str] = ()) -> None:
        self.announce = tuple(announce)
        self.no_announce = tuple(no_announce)
        self._interfaces: tuple[float, list[Interface]] = (float("-inf"), [])

    def interfaces(self) -> list[Interface]:
        """:func:`local_interfaces`, re-read at most every :data:`INTERFACES_REFRESH_S`."""
        at, interfaces = self._interfaces
        now = time.monotonic()
        if now - at >= INTERFACES_REFRESH_S:
            interfaces = local_interfaces()
            self._interfaces = (now, interfaces)
        return interfaces

    def factory(self, candidates: list[Any]) -> list[Any]:
        """py-libp2p ``Multiaddr`` candidates in, the ones to offer out."""
        offered = advertised_addrs([str(a) for a in candidates], self.interfaces(),
                                   announce=self.announce, no_announce=self.no_announce)
        return [multiaddr.Multiaddr(a) for a in offered]

    def dial_order(self, addrs: Iterable[str]) -> list[str]:
        """:func:`dial_order` against this machine's interfaces."""
        return dial_order(addrs, self.interfaces())
