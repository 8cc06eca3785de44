"""Above ``max_peers`` every node still counts every live runner, and made-up ids stay out (issue 15).

Nodes each hold a real :class:`lattice.peers.PeerTable` and connect by the
daemon's own rule (:func:`lattice.topology.plan`) in rounds over a simulated
network; every round each node signs a presence that lists the peers it is
connected to (``links``), and gossip delivers it to every live node.  A node
counts live runners by the daemon's own rule (:func:`lattice.vouching.live`).

Above the cap each node holds connections to its neighbours only, so the
old rule (only peers *this* node is connected to are live) left most of the
mesh out of every node's claim ranking: the test shows it, then shows that
vouching counts everyone, on every node, the same; that a crashed node drops
out; and that a connected liar's made-up ids are bounded by
:data:`lattice.peers.MAX_LINKS` on its neighbours, nothing elsewhere, and that
made-up ids vouching for each other add nobody.
"""

from __future__ import annotations

import random

import pytest

from lattice import vouching
from lattice.peers import MAX_LINKS, PeerTable, PeerTableOptions
from lattice.signing import Signer, peer_id_of
from lattice.topology import plan

WALL = 1_700_000_000.0
ROUND_S = 2.0  # one presence interval per round
OPTIONS = PeerTableOptions(presence_interval_s=ROUND_S)


class Sim:
    """Nodes with peer tables, connections by lattice.topology, presence with links gossiped to all."""

    def __init__(self, n: int, cap: int, seed: int) -> None:
        rng = random.Random(seed)
        self.signers = {}
        for _ in range(n):
            s = Signer.from_seed(rng.randbytes(32))
            self.signers[peer_id_of(s.public)] = s
        self.ids = sorted(self.signers)
        self.alive = set(self.ids)
        self.cap = cap
        self.tables = {p: PeerTable(p, roles=["runner"], options=OPTIONS) for p in self.ids}
        self.conns: dict[str, set[str]] = {p: set() for p in self.ids}
        self.t = 0.0
        boot = self.ids[0]
        for p in self.ids[1:]:  # everyone bootstraps to one node
            self._connect(p, boot)

    def _connect(self, a: str, b: str) -> None:
        if a != b and a in self.alive and b in self.alive:
            self.conns[a].add(b)
            self.conns[b].add(a)

    def kill(self, p: str) -> None:
        self.alive.discard(p)
        for q in self.conns.pop(p, set()):
            self.conns[q].discard(p)

    def gossip(self, src: str, data: bytes) -> None:
        for dst in self.alive - {src}:
            self.tables[dst].receive_presence_untrusted(src, data, self.t)

    def round(self) -> None:
        self.t += ROUND_S
        for p in sorted(self.alive):
            msg = self.tables[p].encode_presence(self.signers[p], roles=["runner"], now=WALL + self.t,
                                                 links=sorted(self.conns[p]))
            self.gossip(p, msg)
        for p in sorted(self.alive):
            live = self.tables[p].live(self.t)
            step = plan(p, live, self.conns[p], cap=self.cap)
            for q in step.close:
                self.conns[p].discard(q)
                self.conns[q].discard(p)
            for q in step.dial:
                self._connect(p, q)

    def runners(self, me: str) -> set[str]:
        """What ``me`` counts as live runners (the daemon's rule; connected = connected now)."""
        table = self.tables[me]
        return set(vouching.live(table.live(self.t, "runner"), me=me, connected=self.conns[me],
                                 fresh=lambda p: table.is_live(p, self.t), links=table.links))

    def connected_only(self, me: str) -> set[str]:
        """The old rule: only peers ``me`` is connected to."""
        return {p for p in self.tables[me].live(self.t, "runner") if p == me or p in self.conns[me]}


@pytest.mark.parametrize(("n", "seed"), [(40, 1), (72, 2)])
def test_every_node_counts_every_live_runner_above_the_cap(n: int, seed: int) -> None:
    sim = Sim(n, cap=32, seed=seed)
    for _ in range(4):
        sim.round()
    degrees = [len(sim.conns[p]) for p in sim.alive]
    assert max(degrees) <= 32, degrees
    # The conflict this fixes: connected-only counting leaves most of the mesh out.
    assert min(len(sim.connected_only(p)) for p in sim.alive) < n
    everyone = set(sim.alive)
    for p in sim.alive:
        assert sim.runners(p) == everyone, (p, len(sim.runners(p)), n)
    old = [len(sim.connected_only(p)) for p in sim.alive]
    print(f"{n} nodes, cap 32: {min(degrees)}-{max(degrees)} connections each; "
          f"live runners counted: connected only {min(old)}-{max(old)}, vouching {n} on every node")

    # A crashed node stops sending presence: gone from every view within the horizon.
    dead = sim.ids[n // 2]
    sim.kill(dead)
    for _ in range(OPTIONS.live_periods + 1):
        sim.round()
    for p in sim.alive:
        assert sim.runners(p) == set(sim.alive)


def test_a_connected_liar_adds_a_bounded_number_of_made_up_ids() -> None:
    n = 40
    sim = Sim(n, cap=32, seed=7)
    for _ in range(3):
        sim.round()
    liar = sim.ids[5]
    rng = random.Random(99)
    fakes = [Signer.from_seed(rng.randbytes(32)) for _ in range(3 * MAX_LINKS)]
    fake_ids = [peer_id_of(f.public) for f in fakes]
    # Each made-up id has a validly signed, fresh presence, and vouches for the others.
    sim.t += 0.5
    for f, fid in zip(fakes, fake_ids):
        table = PeerTable(fid, roles=["runner"], options=OPTIONS)
        sim.gossip(fid, table.encode_presence(f, roles=["runner"], now=WALL + sim.t,
                                              links=[x for x in fake_ids if x != fid][:MAX_LINKS]))
    # The liar, a real member, says it is connected to every made-up id.
    lie = sim.tables[liar].encode_presence(sim.signers[liar], roles=["runner"], now=WALL + sim.t,
                                           links=fake_ids + sorted(sim.conns[liar]))
    sim.gossip(liar, lie)
    honest = set(sim.alive)
    for p in sim.alive - {liar}:
        counted = sim.runners(p)
        made_up = counted - honest
        if liar in sim.conns[p]:
            assert len(made_up) <= MAX_LINKS, len(made_up)
        else:
            assert not made_up, "a peer not connected to the liar counted its made-up ids"
    neighbours_of_liar = sim.conns[liar]
    assert neighbours_of_liar, "the liar must hold connections for the test to mean anything"
