"""The peer table: presence keeps its wire format, bad and replayed presence is
counted and changes nothing, and liveness views converge on a lossy network."""

from __future__ import annotations

import heapq
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec
from lattice.peers import MAX_ADDRS, PeerTable, PeerTableOptions, Received
from lattice.signing import Signer, peer_id_of

WALL = 1_700_000_000.0
SIGNER = Signer.from_seed(b"\x11" * 32)
PEER = peer_id_of(SIGNER.public)
INVENTORY = {"os": "linux", "arch": "x86_64", "cpus": 4, "memory": 8 * 2**30, "gpu": False, "labels": ["a"],
             "skip": 1.5, "none": None}
ADDRS = [f"/ip4/10.0.0.{i}/tcp/4001" for i in range(10)]
API = "http://127.0.0.1:8420"

#: Frozen fixture: the presence meshd sent before the peer table moved to
#: lattice (the old ``meshd.mesh.Mesh._presence`` with the inputs above, wall clock
#: WALL, roles runner+verifier).  Peers running that code must keep
#: understanding what we send, and we theirs.
PRESENCE_V1_HEX = (
    "aa61615820d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737617358407741f4beeeb5c75ec5d89"
    "33c7f37372bdd50e11fb5230a5861be966f086790a0019d52e50a2f02a5c1a2764e1cba2f040468347aaf33b518bd0da7877805"
    "9b0c61746e6d657368642f70726573656e63656176016361706975687474703a2f2f3132372e302e302e313a3834323063696e"
    "76a6626f73656c696e757863677075f46461726368667838365f3634646370757304666c6162656c73816161666d656d6f7279"
    "1b0000000200000000637365711b0000018bcfe5680064706565727834313244334b6f6f57507154326e4d44536958555378354"
    "437666173617868784b696756686371666b4b71724c67684371396a787a65616464727388762f6970342f31302e302e302e302f"
    "7463702f34303031762f6970342f31302e302e302e312f7463702f34303031762f6970342f31302e302e302e322f7463702f34"
    "303031762f6970342f31302e302e302e332f7463702f34303031762f6970342f31302e302e302e342f7463702f34303031762f"
    "6970342f31302e302e302e352f7463702f34303031762f6970342f31302e302e302e362f7463702f34303031762f6970342f31"
    "302e302e302e372f7463702f3430303165726f6c6573826672756e6e6572687665726966696572"
)


def _table(signer: Signer = SIGNER, roles=("runner", "verifier"), **opts) -> PeerTable:
    return PeerTable(peer_id_of(signer.public), roles=roles, options=PeerTableOptions(**opts))


def _presence(table: PeerTable, signer: Signer, now: float = WALL, **kw) -> bytes:
    return table.encode_presence(signer, inventory=kw.pop("inventory", INVENTORY), api=kw.pop("api", API),
                                 addrs=kw.pop("addrs", ADDRS), now=now, **kw)


def _resign(signer: Signer, body: dict) -> bytes:
    body = {k: v for k, v in body.items() if k != "s"}
    return codec.encode(dict(body, s=signer.sign(codec.encode(body))))


# -- wire format ----------------------------------------------------------------------------


def test_presence_bytes_match_the_frozen_v1_fixture() -> None:
    assert _presence(_table(), SIGNER).hex() == PRESENCE_V1_HEX


def test_the_v1_fixture_is_accepted_with_roles_inventory_api_and_addresses() -> None:
    other = _table(Signer.from_seed(b"\x22" * 32))
    assert other.receive_presence_untrusted(PEER, bytes.fromhex(PRESENCE_V1_HEX), now=5.0) is Received.NEW_PEER
    info = other.peer(PEER)
    assert info is not None
    assert info.roles == ("runner", "verifier")
    assert dict(info.inventory) == {k: v for k, v in INVENTORY.items() if k not in ("skip", "none")}
    assert other.api(PEER) == API
    assert other.addrs(PEER) == ADDRS[:MAX_ADDRS]
    assert other.capacity(PEER) == 4
    assert info.seq == int(WALL * 1000) and info.last_seen == 5.0
    assert other.rejected == {}


def test_decoded_maps_are_accepted_like_bytes() -> None:
    other = _table(Signer.from_seed(b"\x22" * 32))
    obj = codec.decode_untrusted(bytes.fromhex(PRESENCE_V1_HEX))
    assert other.receive_presence_untrusted(PEER, obj, now=0.0) is Received.NEW_PEER


def test_the_sequence_grows_within_one_millisecond_and_across_restarts() -> None:
    me = _table()
    receiver = _table(Signer.from_seed(b"\x22" * 32))
    seqs = []
    for _ in range(3):
        msg = _presence(me, SIGNER)
        seqs.append(codec.decode_untrusted(msg)["seq"])
        assert receiver.receive_presence_untrusted(PEER, msg, now=1.0).accepted
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    restarted = _table()  # a new process: its counter starts again from the wall clock
    assert receiver.receive_presence_untrusted(PEER, _presence(restarted, SIGNER, now=WALL + 1), now=2.0) \
        is Received.ACCEPTED
    assert receiver.rejected == {}


def test_encoding_with_another_peers_key_is_refused() -> None:
    with pytest.raises(ValueError):
        _table().encode_presence(Signer.from_seed(b"\x33" * 32), now=WALL)


# -- hostile presence ------------------------------------------------------------------------


def test_bad_presence_is_counted_and_changes_nothing() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32))
    good = codec.decode_untrusted(bytes.fromhex(PRESENCE_V1_HEX))
    mallory = Signer.from_seed(b"\x66" * 32)
    bad_inputs = [
        b"\xff",  # not CBOR
        codec.encode([1, 2]),  # not a map
        codec.encode(dict(good, s=b"\x00" * 64)),  # bad signature
        _resign(SIGNER, dict(good, v=2)),  # unknown version
        _resign(SIGNER, dict(good, t="meshd/other")),  # not a presence
        codec.encode(dict(good, a=b"\x01")),  # short key
        codec.encode(dict(good, a="k" * 32)),  # key of the wrong type
        codec.encode({k: v for k, v in good.items() if k != "a"}),  # no key
        _resign(mallory, dict(good, a=mallory.public)),  # signed by someone else in PEER's name
    ]
    for data in bad_inputs:
        assert table.receive_presence_untrusted(PEER, data, now=1.0) is Received.REJECTED
    # Correctly signed, but relayed under another sender's id.
    assert table.receive_presence_untrusted(peer_id_of(mallory.public), bytes.fromhex(PRESENCE_V1_HEX),
                                            now=1.0) is Received.REJECTED
    assert table.rejected == {"bad_presence": len(bad_inputs) + 1}
    assert PEER not in table and len(table) == 0 and table.live(1.0) == [table.me]


def test_replayed_and_older_presence_is_counted_and_changes_nothing() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32))
    sender = _table()
    first, second = _presence(sender, SIGNER, api="http://one"), _presence(sender, SIGNER, api="http://two")
    assert table.receive_presence_untrusted(PEER, second, now=1.0) is Received.NEW_PEER
    assert table.receive_presence_untrusted(PEER, second, now=2.0) is Received.REJECTED  # duplicate
    assert table.receive_presence_untrusted(PEER, first, now=3.0) is Received.REJECTED  # older, late
    seq_str = _resign(SIGNER, dict(codec.decode_untrusted(second), seq="9" * 20))
    assert table.receive_presence_untrusted(PEER, seq_str, now=4.0) is Received.REJECTED
    assert table.rejected == {"presence_replayed": 3}
    assert table.api(PEER) == "http://two" and table.peer(PEER).last_seen == 1.0


def test_a_signed_but_odd_presence_is_sanitised_for_the_json_api() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32))
    body = codec.decode_untrusted(bytes.fromhex(PRESENCE_V1_HEX))
    link = codec.cid_of({"x": 1})
    odd = _resign(SIGNER, dict(body, inv={"k": b"\xff", "link": link, "cpus": -1}, api=b"\xff",
                               roles=["runner", 7, "x" * 1000] + ["r"] * 40, addrs=["/ok", 5, "not-a-multiaddr"]))
    assert table.receive_presence_untrusted(PEER, odd, now=0.0) is Received.NEW_PEER
    info = table.peer(PEER)
    assert info.roles == ("runner",) + ("r",) * 15
    assert info.addrs == ("/ok",) and info.api is None
    assert info.inventory["link"] == {"/": str(link)}
    assert table.capacity(PEER) == 1  # a nonsense cpu count counts as one slot
    json.dumps(table.peer_list(1.0))
    weird = _resign(SIGNER, dict(body, seq=body["seq"] + 1, roles="runner", inv=[1], addrs={"a": 1}))
    assert table.receive_presence_untrusted(PEER, weird, now=0.5) is Received.ACCEPTED
    assert table.peer(PEER).roles == () and dict(table.inventory(PEER)) == {} and table.addrs(PEER) == []


def test_own_echoed_presence_is_ignored_and_the_table_is_bounded() -> None:
    table = _table(max_peers=2)
    assert table.receive_presence_untrusted(PEER, bytes.fromhex(PRESENCE_V1_HEX), now=0.0) is Received.REJECTED
    assert len(table) == 0 and table.rejected == {}
    assert table.note_peer("a") and table.note_peer("b") and not table.note_peer("a")
    # "a" was never present: it makes room for a signed newcomer (evicted, counted).
    other = Signer.from_seed(b"\x44" * 32)
    msg = _presence(_table(other), other)
    assert table.receive_presence_untrusted(peer_id_of(other.public), msg, now=0.0) is Received.NEW_PEER
    assert table.rejected == {"peer_evicted": 1} and len(table) == 2 and "a" not in table
    third = Signer.from_seed(b"\x45" * 32)
    assert table.receive_presence_untrusted(peer_id_of(third.public), _presence(_table(third), third),
                                            now=1.0) is Received.NEW_PEER
    # Every entry is live now: a newcomer is refused, and the table stays bounded.
    assert not table.note_peer("c")
    assert table.rejected == {"peer_evicted": 2, "peer_table_full": 1} and len(table) == 2


# -- liveness, views ---------------------------------------------------------------------------


def test_a_peer_is_live_for_three_intervals_after_its_last_presence() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32), roles=("verifier",), presence_interval_s=2.0)
    table.note_peer(PEER)  # heard through gossip only: known, not live
    assert PEER in table and not table.is_live(PEER, 0.0) and not table.any_presence()
    assert table.receive_presence_untrusted(PEER, bytes.fromhex(PRESENCE_V1_HEX), now=10.0) is Received.NEW_PEER
    assert table.any_presence()
    assert table.live(16.0, "runner") == [PEER]  # this node does not run tasks
    assert table.live(16.0, "verifier") == sorted([PEER, table.me])
    assert table.live(16.0, "archivist") == []
    assert table.live(16.1, "runner") == [] and not table.is_live(PEER, 16.1)
    assert table.is_live(table.me, 1e9)


def test_peer_list_merges_connections_and_heads() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32))
    table.receive_presence_untrusted(PEER, bytes.fromhex(PRESENCE_V1_HEX), now=10.0)
    listed = table.peer_list(12.34, connected={"zz": ["/ip4/1.2.3.4/tcp/1"]}, heads={PEER: {"g": ["h"]}})
    assert [p["peer_id"] for p in listed] == sorted([PEER, "zz"])
    mine = next(p for p in listed if p["peer_id"] == PEER)
    assert mine == {"peer_id": PEER, "connected": False, "addresses": [], "roles": ["runner", "verifier"],
                    "inventory": dict(table.inventory(PEER)), "api": API, "last_seen_s": 2.3,
                    "heads": {"g": ["h"]}}
    zz = next(p for p in listed if p["peer_id"] == "zz")
    assert zz["connected"] and zz["last_seen_s"] is None and zz["roles"] == []


def test_dials_are_rate_limited_per_peer() -> None:
    table = _table(Signer.from_seed(b"\x22" * 32), dial_interval_s=10.0)
    table.receive_presence_untrusted(PEER, bytes.fromhex(PRESENCE_V1_HEX), now=0.0)
    first = table.dial_addrs(PEER, 0.0, connected=False)
    assert first == [f"{a}/p2p/{PEER}" for a in ADDRS[:MAX_ADDRS]]
    assert table.dial_addrs(PEER, 9.9, connected=False) == []
    assert table.dial_addrs(PEER, 10.0, connected=True) == []
    assert table.dial_addrs(PEER, 10.0, connected=False) == first


def test_options_are_validated() -> None:
    assert PeerTableOptions().horizon_s == 6.0
    for bad in ({"presence_interval_s": 0}, {"live_periods": 0}, {"max_peers": 0}, {"dial_interval_s": -1}):
        with pytest.raises(ValueError):
            PeerTableOptions(**bad)


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(6)), dups=st.lists(st.integers(0, 5), max_size=6))
def test_any_delivery_order_keeps_the_newest_presence(order: list[int], dups: list[int]) -> None:
    sender = _table()
    msgs = [_presence(sender, SIGNER, api=f"http://{i}") for i in range(6)]
    table = _table(Signer.from_seed(b"\x22" * 32))
    deliveries = [msgs[i] for i in order] + [msgs[i] for i in dups]
    results = [table.receive_presence_untrusted(PEER, m, now=float(n)) for n, m in enumerate(deliveries)]
    accepted = sum(r.accepted for r in results)
    assert table.api(PEER) == "http://5"
    assert accepted + table.rejected.get("presence_replayed", 0) == len(deliveries)
    assert table.rejected.keys() <= {"presence_replayed"}


# -- many peers on a lossy network, in virtual time -----------------------------------------


class PresenceNet:
    """Seeded virtual-time gossip of presence: drops, duplicates, delays (reorder), partitions."""

    def __init__(self, n: int, seed: int, *, drop: float, duplicate: float, max_delay_s: float,
                 interval_s: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.drop, self.duplicate, self.max_delay_s = drop, duplicate, max_delay_s
        self.interval_s = interval_s
        self.signers = {}
        self.tables: dict[str, PeerTable] = {}
        for i in range(n):
            signer = Signer.from_seed(self.rng.randbytes(32))
            pid = peer_id_of(signer.public)
            self.signers[pid] = signer
            self.tables[pid] = PeerTable(pid, roles=["runner"] if i % 2 else ["runner", "verifier"],
                                         options=PeerTableOptions(presence_interval_s=interval_s))
        self.names = sorted(self.tables)
        self.now = 0.0
        self.groups: list[set[str]] | None = None
        self.down: set[str] = set()
        self._events: list[tuple[float, int, str, str, bytes]] = []
        self._n = 0
        self._next_presence = {p: self.rng.uniform(0, interval_s) for p in self.names}
        self.expected_replays = {p: 0 for p in self.names}
        self.expected_bad = {p: 0 for p in self.names}

    def _reachable(self, a: str, b: str) -> bool:
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def _post(self, src: str, dst: str, data: bytes) -> None:
        if self.rng.random() < self.drop:
            return
        for _ in range(2 if self.rng.random() < self.duplicate else 1):
            self._n += 1
            heapq.heappush(self._events, (self.now + self.rng.uniform(0, self.max_delay_s), self._n, src, dst, data))

    def inject(self, src: str, dst: str, data: bytes, *, bad: bool) -> None:
        """Hand ``dst`` a message claiming to come from ``src`` (an attacker on the path)."""
        if bad:
            self.expected_bad[dst] += 1
        self._n += 1
        heapq.heappush(self._events, (self.now, self._n, src, dst, data))

    def _deliver(self, src: str, dst: str, data: bytes) -> None:
        table = self.tables[dst]
        known = table.peer(src)
        obj = codec.decode_untrusted(data)
        signed_by_src = peer_id_of(obj.get("a")) == src == obj.get("peer")
        if signed_by_src and known is not None and obj["seq"] <= known.seq:
            self.expected_replays[dst] += 1
        table.receive_presence_untrusted(src, data, self.now)

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            t_presence = min(self._next_presence.values())
            t_event = self._events[0][0] if self._events else float("inf")
            t = min(t_presence, t_event)
            if t > end:
                break
            self.now = t
            if t_event <= t_presence:
                _, _, src, dst, data = heapq.heappop(self._events)
                if dst not in self.down and self._reachable(src, dst):
                    self._deliver(src, dst, data)
                continue
            src = min(self._next_presence, key=self._next_presence.get)
            self._next_presence[src] = t + self.interval_s
            if src in self.down:
                continue
            data = self.tables[src].encode_presence(self.signers[src], now=WALL + t)
            for dst in self.names:
                if dst != src:
                    self._post(src, dst, data)
        self.now = end

    def run_until(self, condition, *, within_s: float, step_s: float = 0.1) -> float:
        """Advance virtual time until ``condition()`` holds; returns the time it took."""
        start = self.now
        while not condition():
            assert self.now - start < within_s, f"not reached within {within_s} virtual seconds"
            self.run_for(step_s)
        return self.now - start

    def views(self, role: str | None = None) -> dict[str, list[str]]:
        return {p: self.tables[p].live(self.now, role) for p in self.names if p not in self.down}


@pytest.mark.parametrize("seed", [3, 4])
def test_liveness_views_converge_through_loss_duplicates_reorder_and_partition(seed: int) -> None:
    net = PresenceNet(16, seed, drop=0.1, duplicate=0.2, max_delay_s=1.5)
    names = net.names
    # Every peer comes to see every peer, and the verifiers among them (a lossy
    # network makes views flap: wait for the condition, never a fixed time).
    net.run_until(lambda: all(v == names for v in net.views().values()), within_s=20.0)
    verifiers = sorted(p for p in names if "verifier" in net.tables[p].roles)
    net.run_until(lambda: all(v == verifiers for v in net.views("verifier").values()), within_s=20.0)

    left, right = set(names[:8]), set(names[8:])
    net.groups = [left, right]
    took = net.run_until(lambda: all(v == sorted(left if p in left else right) for p, v in net.views().items()),
                         within_s=20.0)
    assert took >= 3 * net.interval_s - 1.5  # the other side stays live until its last presence ages out
    net.run_for(5.0)  # nothing from across the cut gets through: the views stay split
    assert all(v == sorted(left if p in left else right) for p, v in net.views().items())

    net.groups = None
    net.down = {names[0], names[13]}  # two peers stop while the partition heals
    alive = sorted(set(names) - net.down)
    net.run_until(lambda: all(v == alive for v in net.views().values()), within_s=20.0)

    # Late, duplicated and reordered copies were all refused as replays, and nothing else was refused.
    for p in names:
        counts = net.tables[p].rejected
        assert counts.get("presence_replayed", 0) == net.expected_replays[p]
        assert set(counts) <= {"presence_replayed"}
    assert sum(net.expected_replays.values()) > 0  # the network did duplicate and reorder


def test_an_attacker_on_the_path_cannot_forge_or_replay_presence() -> None:
    net = PresenceNet(8, seed=7, drop=0.0, duplicate=0.0, max_delay_s=0.2)
    net.run_for(4.0)
    victim, target, *_ = net.names
    captured = net.tables[victim].encode_presence(net.signers[victim], now=WALL + net.now)
    net.inject(victim, target, captured, bad=False)
    net.run_for(0.01)
    before = dict(net.tables[target].rejected)
    mallory = Signer.from_seed(b"\x66" * 32)
    body = codec.decode_untrusted(captured)
    forged = [
        _resign(mallory, dict(body, roles=["runner"], seq=body["seq"] + 10**6)),  # in the victim's name
        codec.encode(dict(body, api="http://evil", seq=body["seq"] + 10**6)),  # edited after signing
    ]
    for data in forged:
        net.inject(victim, target, data, bad=True)
    for _ in range(3):
        net.inject(victim, target, captured, bad=False)  # replayed: counted by _deliver
    net.down = {victim}
    net.run_for(10.0)
    counts = net.tables[target].rejected
    assert counts.get("bad_presence", 0) == net.expected_bad[target] == 2
    assert counts.get("presence_replayed", 0) - before.get("presence_replayed", 0) >= 3
    assert counts.get("presence_replayed", 0) == net.expected_replays[target]
    assert net.tables[target].api(victim) is None
    # The victim went down: replays kept nobody alive.
    assert victim not in net.views()[target]


def test_the_module_example_runs() -> None:
    import textwrap

    import lattice.peers

    exec(textwrap.dedent(lattice.peers.__doc__.split("::\n")[-1]), {})
