"""Archivists running ``lattice.pinset.plan`` on a simulated, lossy-order network.

Four archivists each keep their own copy of the pinset and act on it every
round exactly as the daemon's pin holder does (hold what is allocated to
you and report it; let go of what moved once its new holders report it, or
at once when it is removed).  Reports reach the others after seeded random
delays, and fetching a pin's DAG takes 1-3 rounds.  One archivist dies mid-run, and later a fifth joins.  The simulation checks that every pin
ends up held by exactly the archivists its allocation names, and that while
pins move no pin is ever held by fewer live archivists than it had.
"""

from __future__ import annotations

import random

import pytest

from lattice import codec, pinset
from lattice.signing import Signer, peer_id_of
from lattice.state import State

SIGNERS = {peer_id_of(s.public): s for s in (Signer.from_seed(bytes([i]) * 32) for i in range(1, 6))}
PINS = [codec.cid_of({"sim": i}) for i in range(30)]


class Archivist:
    def __init__(self, me: str) -> None:
        self.me = me
        self.state = State()
        self.holding: set = set()
        self.fetched_at: dict = {}  # cid -> round its DAG is whole here (fetching takes time)

    def apply(self, op: list) -> None:
        self.state.add_encoded(op[1], codec.encode(op[2]))


@pytest.mark.parametrize("seed", range(6))
def test_pins_converge_on_their_allocation_and_never_lose_a_holder_while_moving(seed: int) -> None:
    rng = random.Random(seed)
    nodes = {p: Archivist(p) for p in SIGNERS}
    in_flight: list[tuple[int, str, list]] = []  # (deliver at round, to, op)
    now = 0

    def broadcast(op: list, origin: str) -> None:
        nodes[origin].apply(op)
        for p in nodes:
            if p != origin:
                in_flight.append((now + rng.randint(0, 3), p, op))

    for i, cid in enumerate(PINS):
        broadcast(pinset.pin_op(cid, 1 + i % 3, "user", 1_000 + i), rng.choice(sorted(nodes)))

    joiner = sorted(nodes)[-1]  # joins at round 35: pins move to it from their holders
    live = {p: 4 for p in nodes if p != joiner}
    dead: set[str] = {joiner}
    replicas = {cid: 1 + i % 3 for i, cid in enumerate(PINS)}

    def holders(cid) -> set[str]:
        return {p for p, n in nodes.items() if p not in dead and cid in n.holding}

    before = {cid: set() for cid in PINS}
    moved_to_joiner = 0
    for now in range(70):
        lost: set[str] = set()
        if now == 20:
            victim = sorted(live)[seed % len(live)]
            dead.add(victim)
            del live[victim]
            lost = {victim}
        if now == 35:
            dead.discard(joiner)
            live[joiner] = 4
        due = [m for m in in_flight if m[0] <= now]
        in_flight[:] = [m for m in in_flight if m[0] > now]
        for _, to, op in due:
            nodes[to].apply(op)
        order = sorted(p for p in nodes if p not in dead)
        rng.shuffle(order)
        for p in order:
            n = nodes[p]
            todo = pinset.plan(p, n.state, now, live, n.holding)
            for pin in todo.hold:
                if pin.cid not in n.holding and n.fetched_at.setdefault(pin.cid, now + rng.randint(1, 3)) <= now:
                    moved_to_joiner += p == joiner
                    n.holding.add(pin.cid)
                    broadcast(pinset.held_op(pinset.held_record(SIGNERS[p], pin.cid, True, 1, 10, now * 10 + 1)), p)
            for cid in todo.release:
                n.holding.discard(cid)
                broadcast(pinset.held_op(pinset.held_record(SIGNERS[p], cid, False, 0, 0, now * 10 + 2)), p)
        for cid in PINS:
            # Letting go happens only once `replicas` allocated archivists hold the pin, so
            # a pin never falls below what it had (capped at its replicas), save for the
            # holder that died.
            floor = min(len(before[cid] - lost), replicas[cid])
            assert len(holders(cid)) >= floor, (now, cid, before[cid], holders(cid))
            before[cid] = holders(cid)

    assert moved_to_joiner > 0
    for i, cid in enumerate(PINS):
        want = set(pinset.allocate(cid, 1 + i % 3, live))
        assert holders(cid) == want, (cid, holders(cid), want)
