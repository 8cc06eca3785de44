"""A seeded simulated network for many-peer HPCP tests.

Peers exchange bytes through :class:`SimNet`, which can drop, duplicate,
delay/reorder and partition messages, all from one seeded RNG.  Virtual time
advances in ticks; nothing sleeps.  (The pattern follows trio's
``testing/_fake_net.py`` and go-ds-crdt's partition helpers.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lattice import goho, hpcp, records, signing
from lattice.blockstore import MemoryBlockStore


@dataclass
class SimPeer:
    name: str
    replica: goho.Replica
    syncer: hpcp.Syncer
    signer: signing.Signer


@dataclass
class SimNet:
    seed: int
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 0  # ticks; >0 reorders
    peers: dict[str, SimPeer] = field(default_factory=dict)
    now: float = 0.0
    tick_s: float = 0.1
    delivered: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, str, str | None, bytes]] = []
        self._n = 0
        self.groups: list[set[str]] | None = None  # partition, None = healed

    def add_peers(self, n: int, genesis, options: hpcp.SyncOptions | None = None) -> list[SimPeer]:
        out = []
        for i in range(n):
            name = f"p{i:02d}"
            signer = signing.Signer.from_seed(self.rng.randbytes(32))
            rep = goho.Replica.empty(genesis, MemoryBlockStore())
            peer = SimPeer(name, rep, hpcp.Syncer(rep, signer, options or hpcp.SyncOptions(want_timeout_s=1.0)), signer)
            self.peers[name] = peer
            out.append(peer)
        return out

    def connected(self, a: str, b: str) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def partition(self, *groups: set[str]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def send(self, src: str, outs: list[hpcp.Outgoing]) -> None:
        for o in outs:
            targets = [o.to] if o.to is not None else [p for p in self.peers if p != src]
            for t in targets:
                self._post(src, t, o.data)

    def _post(self, src: str, dst: str, data: bytes) -> None:
        copies = 1
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        if self.rng.random() < self.duplicate:
            copies = 2
        for _ in range(copies):
            delay = self.rng.randint(0, self.max_delay) * self.tick_s
            self._n += 1
            self._queue.append((self.now + delay, self._n, src, dst, data))

    def step(self) -> None:
        """Advance one tick: deliver due messages (in random order), tick syncers."""
        self.now += self.tick_s
        due = [m for m in self._queue if m[0] <= self.now]
        self._queue = [m for m in self._queue if m[0] > self.now]
        self.rng.shuffle(due)
        for _, _, src, dst, data in due:
            if not self.connected(src, dst):
                self.dropped += 1
                continue
            self.delivered += 1
            self.send(dst, self.peers[dst].syncer.receive_untrusted(src, data, self.now))
        for name, p in self.peers.items():
            self.send(name, p.syncer.tick(self.now))

    def anti_entropy(self) -> None:
        for name, p in self.peers.items():
            self.send(name, [hpcp.Outgoing(None, p.syncer.announce(self.now))])

    def converged(self, names=None) -> bool:
        names = list(names or self.peers)
        first = self.peers[names[0]].replica
        return all(
            self.peers[n].replica.heads == first.heads and self.peers[n].replica.state == first.state
            for n in names[1:]
        )

    def run_until(self, cond, *, max_steps: int = 5000, announce_every: int = 20) -> int:
        """Step until ``cond()``; re-announce periodically (anti-entropy)."""
        for i in range(max_steps):
            if cond():
                return i
            if i % announce_every == 0:
                self.anti_entropy()
            self.step()
        raise AssertionError(f"condition not reached in {max_steps} steps")


def new_genesis(name: str = "sim"):
    return records.make_genesis("queue", name)[0]
