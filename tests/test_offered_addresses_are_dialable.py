"""What a node offers peers, and how it dials theirs (issue 15 item 1), as pure functions.

A wildcard listen address used to be advertised as is (``/ip4/0.0.0.0/…``),
which no other host can dial.  :func:`advertised_addrs` expands it to the
interface addresses, keeps loopback only when nothing else is left, and
applies Kubo-style ``announce``/``no_announce``; :func:`dial_order` puts a
peer's addresses on our own networks first.  A real transport is checked
at the end: it offers no wildcard and connects past a dead address quickly.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
import trio

from meshd.config import ConfigError, P2PConfig
from meshd.p2p.addresses import Interface, advertised_addrs, dial_order, parse_filter
from meshd.p2p.options import P2POptions


def iface(cidr: str) -> Interface:
    i = ipaddress.ip_interface(cidr)
    return Interface(i.ip, i.network)


HOST = [iface("127.0.0.1/8"), iface("10.1.0.5/24"), iface("192.168.7.2/24"), iface("::1/128"),
        iface("fd00::5/64"), iface("fe80::1/64")]


def test_a_wildcard_becomes_the_interface_addresses_without_loopback() -> None:
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/4601", "/ip6/::/tcp/4602"], HOST)
    assert got == ["/ip4/10.1.0.5/tcp/4601", "/ip4/192.168.7.2/tcp/4601", "/ip6/fd00::5/tcp/4602"]


def test_loopback_is_offered_only_when_nothing_else_is_left() -> None:
    assert advertised_addrs(["/ip4/127.0.0.1/tcp/5"], HOST) == ["/ip4/127.0.0.1/tcp/5"]
    assert advertised_addrs(["/ip4/0.0.0.0/tcp/5"], [iface("127.0.0.1/8")]) == ["/ip4/127.0.0.1/tcp/5"]
    # A specific listen address next to loopback: loopback goes.
    assert advertised_addrs(["/ip4/127.0.0.1/tcp/5", "/ip4/10.1.0.5/tcp/5"], HOST) == ["/ip4/10.1.0.5/tcp/5"]


def test_observed_addresses_are_offered_next_to_the_listen_ones_once() -> None:
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/7", "/ip4/203.0.113.9/tcp/7", "/ip4/10.1.0.5/tcp/7"], HOST)
    assert got == ["/ip4/10.1.0.5/tcp/7", "/ip4/192.168.7.2/tcp/7", "/ip4/203.0.113.9/tcp/7"]


def test_announce_replaces_and_no_announce_removes_addresses_and_ranges() -> None:
    assert advertised_addrs(["/ip4/0.0.0.0/tcp/7"], HOST, announce=["/dns4/node.example/tcp/7"]) == [
        "/dns4/node.example/tcp/7"]
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/7"], HOST, no_announce=["/ip4/192.168.0.0/ipcidr/16"])
    assert got == ["/ip4/10.1.0.5/tcp/7"]
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/7"], HOST, no_announce=["/ip4/10.1.0.5"])
    assert got == ["/ip4/192.168.7.2/tcp/7"]
    # Everything real refused: loopback is all that is left, so it stays.
    got = advertised_addrs(["/ip4/0.0.0.0/tcp/7"], HOST, no_announce=["/ip4/10.0.0.0/ipcidr/8", "/ip4/192.168.0.0/ipcidr/16"])
    assert got == ["/ip4/127.0.0.1/tcp/7"]


def test_dial_order_puts_our_networks_first_and_drops_loopback_next_to_others() -> None:
    peer = ["/ip4/127.0.0.1/tcp/1/p2p/x", "/ip4/172.16.0.9/tcp/1/p2p/x", "/ip4/10.1.0.77/tcp/1/p2p/x",
            "/dns4/a.example/tcp/1/p2p/x"]
    assert dial_order(peer, HOST) == ["/ip4/10.1.0.77/tcp/1/p2p/x", "/ip4/172.16.0.9/tcp/1/p2p/x",
                                      "/dns4/a.example/tcp/1/p2p/x"]
    assert dial_order(["/ip4/127.0.0.1/tcp/1/p2p/x"], HOST) == ["/ip4/127.0.0.1/tcp/1/p2p/x"]


@pytest.mark.parametrize("bad", ["/ip4/10.0.0.0/ipcidr/99", "/ip4/10.0.0.0/ipcidr/x"])
def test_a_bad_range_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_filter(bad)
    with pytest.raises(ValueError):
        P2POptions(no_announce=(bad,)).validate()


def test_the_config_takes_announce_and_no_announce() -> None:
    cfg = P2PConfig(announce=("/ip4/203.0.113.9/tcp/4601",), no_announce=("/ip4/10.0.0.0/ipcidr/8",))
    assert cfg.announce == ("/ip4/203.0.113.9/tcp/4601",)
    with pytest.raises(ConfigError):
        P2PConfig(announce=("203.0.113.9:4601",))


async def test_a_transport_offers_no_wildcard_and_dials_past_a_dead_address() -> None:
    from meshd.p2p import Transport
    from meshd.p2p.dialing import dial_first

    async with trio.open_nursery() as nursery:
        a = await nursery.start(Transport(os.urandom(32), P2POptions(listen=("/ip4/0.0.0.0/tcp/0",))).serve)
        b = await nursery.start(Transport(os.urandom(32), P2POptions()).serve)
        offered = a.listen_addrs()
        assert offered and not any("/0.0.0.0/" in x for x in offered), offered
        # 198.51.100.0/24 (TEST-NET-2) is not routed: a dial there hangs or fails.
        dead = "/ip4/198.51.100.1/tcp/9/p2p/" + a.peer_id
        t0 = trio.current_time()
        # Dialled first, the dead address costs one stagger (250 ms), not a timeout.
        assert await dial_first(b.connect, [dead, *offered]) == a.peer_id
        assert trio.current_time() - t0 < 2.0
        with trio.fail_after(10):
            await b.wait_peers(1)
        nursery.cancel_scope.cancel()
