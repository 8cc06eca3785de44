"""IPFS swarm addresses ride in presence (optional, signed, bounded) and follow
meshd's address rules: loopback is never offered to, or dialled for, a peer on
another host."""

from __future__ import annotations

import ipaddress

import pytest

from lattice import codec
from lattice.peers import MAX_ADDR_LEN, MAX_ADDRS, PeerTable
from lattice.signing import Signer, peer_id_of
from meshd.p2p.addresses import Interface
from meshd.p2p.ipfs_swarm import IpfsSwarmOptions, PeerOffer, connect_order, offered_ipfs_addrs

IPFS_ID = "12D3KooWLFC7hKubouWUJUaitKcSBjwWfjeA8nYJBdMg2wGcc37K"
LAN = [Interface(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_network("10.0.0.0/24")),
       Interface(ipaddress.ip_address("127.0.0.1"), ipaddress.ip_network("127.0.0.0/8"))]


def _tables() -> tuple[Signer, PeerTable, PeerTable]:
    a, b = Signer.generate(), Signer.generate()
    return a, PeerTable(peer_id_of(a.public)), PeerTable(peer_id_of(b.public))


def test_presence_without_ipfs_addresses_is_unchanged_and_with_them_is_signed_and_kept() -> None:
    a, ta, tb = _tables()
    plain = codec.decode_untrusted(ta.encode_presence(a, now=1_700_000_000.0))
    assert "ipfs" not in plain
    addr = f"/ip4/10.0.0.2/tcp/4001/p2p/{IPFS_ID}"
    msg = ta.encode_presence(a, now=1_700_000_001.0, ipfs=[addr])
    assert codec.decode_untrusted(msg)["ipfs"] == [addr]
    assert tb.receive_presence_untrusted(ta.me, msg, now=0.0).accepted
    assert tb.ipfs_addrs(ta.me) == [addr]


def test_hostile_ipfs_entries_are_bounded_and_dropped() -> None:
    a, ta, tb = _tables()
    body = codec.decode_untrusted(ta.encode_presence(a, now=1_700_000_000.0))
    del body["s"]
    body["ipfs"] = ["/ok/" + str(i) for i in range(50)] + [7, "no-slash", "/" + "x" * (MAX_ADDR_LEN + 1)]
    body["s"] = a.sign(codec.encode(body))
    assert tb.receive_presence_untrusted(ta.me, codec.encode(body), now=0.0).accepted
    assert tb.ipfs_addrs(ta.me) == ["/ok/" + str(i) for i in range(MAX_ADDRS)]

    body["seq"] += 1
    body["ipfs"] = {"not": "a list"}
    del body["s"]
    body["s"] = a.sign(codec.encode(body))
    assert tb.receive_presence_untrusted(ta.me, codec.encode(body), now=1.0).accepted
    assert tb.ipfs_addrs(ta.me) == []


def test_loopback_ipfs_addresses_are_offered_only_by_a_one_host_mesh() -> None:
    loop = f"/ip4/127.0.0.1/tcp/4001/p2p/{IPFS_ID}"
    lan = f"/ip4/10.0.0.2/tcp/4001/p2p/{IPFS_ID}"
    # meshd offers only loopback: a one-host mesh, loopback IPFS addresses go.
    assert offered_ipfs_addrs([loop], ["/ip4/127.0.0.1/tcp/4601/p2p/x"], LAN) == [loop]
    # meshd is reachable from other hosts but the IPFS node is not: nothing is offered.
    assert offered_ipfs_addrs([loop], ["/ip4/10.0.0.2/tcp/4601/p2p/x"], LAN) == []
    # Both: loopback is dropped, the LAN address kept; no_announce is honoured.
    assert offered_ipfs_addrs([loop, lan], ["/ip4/10.0.0.2/tcp/4601"], LAN) == [lan]
    assert offered_ipfs_addrs([loop, lan], ["/ip4/10.0.0.2/tcp/4601"], LAN,
                              no_announce=["/ip4/10.0.0.0/ipcidr/8"]) == []
    # A wildcard listen address becomes the interface addresses.
    wild = f"/ip4/0.0.0.0/tcp/4001/p2p/{IPFS_ID}"
    assert offered_ipfs_addrs([wild], ["/ip4/10.0.0.2/tcp/4601"], LAN) == [lan]


def test_loopback_ipfs_addresses_are_dialled_only_for_a_peer_on_this_host() -> None:
    loop = f"/ip4/127.0.0.1/tcp/4001/p2p/{IPFS_ID}"
    lan = f"/ip4/10.0.0.9/tcp/4001/p2p/{IPFS_ID}"
    same_host = PeerOffer(addrs=("/ip4/127.0.0.1/tcp/4601/p2p/x",), ipfs=(loop,))
    other_host = PeerOffer(addrs=("/ip4/10.0.0.9/tcp/4601/p2p/x",), ipfs=(loop, lan))
    assert connect_order(same_host, LAN) == [loop]
    assert connect_order(other_host, LAN) == [lan]
    assert connect_order(PeerOffer(addrs=(), ipfs=(loop,)), LAN) == []


def test_swarm_options_are_validated() -> None:
    for bad in ({"interval_s": 0}, {"retry_s": -1}):
        with pytest.raises(ValueError):
            IpfsSwarmOptions(**bad)
