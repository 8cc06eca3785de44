"""A seeded simulated network of :class:`lattice.meshcore.MeshCore` nodes.

The same core class the daemon's pump drives, here driven by a loop in
virtual time: gossip (``Broadcast``) and requests/responses (``Request``)
travel as messages that :class:`CoreNet` may drop, duplicate, delay (and so
reorder) and partition, all from one seeded RNG.  A request that is lost, or
whose answer is lost, is answered ``None`` after ``request_timeout_s``, as
the daemon's pump does.  Nothing sleeps.

Each node has one block store shared by its replicas, like the daemon's
``ObjectHost``; an object a peer announces and the node does not follow is
followed on ``Follow``, as the daemon does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from lattice import goho, records
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.meshcore import Broadcast, Changed, Dial, Fetched, Follow, MeshCore, MeshCoreOptions, Output, Request
from lattice.signing import Signer, peer_id_of

#: Virtual wall clock at the start (HPCP and presence sequence numbers derive from it).
T0 = 1_700_000_000.0


@dataclass
class SimNode:
    name: str
    signer: Signer
    store: MemoryBlockStore
    core: MeshCore
    replicas: dict[CID, goho.Replica] = field(default_factory=dict)
    fetched: set[CID] = field(default_factory=set)
    abandoned: set[CID] = field(default_factory=set)
    changed: int = 0
    dials: int = 0

    @property
    def peer_id(self) -> str:
        return self.core.me

    def follow(self, genesis: CID, now: float) -> list[Output]:
        rep = self.replicas.get(genesis)
        if rep is None:
            rep = self.replicas[genesis] = goho.Replica.empty(genesis, self.store)
        return self.core.follow(rep, now)

    def write(self, genesis: CID, ops: list[list[Any]], now: float) -> list[Output]:
        """A local commit: update the replica, tell the core."""
        self.replicas[genesis].update(ops, self.signer)
        return self.core.local_change(genesis, now)


@dataclass
class CoreNet:
    seed: int
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.0  # seconds; > 0 reorders
    tick_s: float = 0.05
    options: MeshCoreOptions = field(default_factory=lambda: MeshCoreOptions(
        announce_interval_s=1.0, presence_interval_s=0.5, tick_s=0.1, request_timeout_s=1.0, want_timeout_s=0.5,
        backoff_cap_s=2.0))
    now: float = T0
    nodes: dict[str, SimNode] = field(default_factory=dict)
    delivered: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._n = 0
        self._answered: set[tuple[str, int]] = set()
        self.groups: list[set[str]] | None = None

    # -- building ----------------------------------------------------------------------

    def add_nodes(self, n: int, *, roles: tuple[str, ...] = ("runner",), follow: list[CID] = ()) -> list[SimNode]:
        out = []
        for _ in range(n):
            signer = Signer.from_seed(self.rng.randbytes(32))
            store = MemoryBlockStore()
            pid = peer_id_of(signer.public)
            core = MeshCore(pid, signer, store, roles=roles, inventory={"cpus": 1}, options=self.options,
                            addrs=lambda pid=pid: [f"/sim/{pid}"])
            node = SimNode(pid, signer, store, core)
            self.nodes[pid] = node
            for g in follow:
                self._carry(node, node.follow(g, self.now))
            out.append(node)
        return out

    def start(self) -> None:
        for node in self.nodes.values():
            self._carry(node, node.core.start(self.now))

    # -- faults ------------------------------------------------------------------------

    def partition(self, *groups: set[str]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def connected(self, a: str, b: str) -> bool:
        return self.groups is None or any(a in g and b in g for g in self.groups)

    # -- moving messages ------------------------------------------------------------------

    def _at(self, when: float, kind: str, *args: Any) -> None:
        self._n += 1
        heapq.heappush(self._events, (when, self._n, kind, args))

    def _post(self, kind: str, src: str, dst: str, *args: Any) -> None:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._at(self.now + self.rng.uniform(0, self.max_delay), kind, src, dst, *args)

    def carry(self, node: SimNode, outs: list[Output]) -> None:
        """Carry out what ``node``'s core returned (as the daemon's pump does)."""
        self._carry(node, outs)

    def _carry(self, node: SimNode, outs: list[Output]) -> None:
        src = node.name
        for o in outs:
            if isinstance(o, Broadcast):
                for dst in self.nodes:
                    if dst != src:
                        self._post("gossip", src, dst, o.data)
            elif isinstance(o, Request):
                self._post("request", src, o.peer, o.ask_id, o.data)
                self._at(self.now + self.options.request_timeout_s, "timeout", src, o.ask_id)
            elif isinstance(o, Follow):
                self._carry(node, node.follow(o.genesis, self.now))
            elif isinstance(o, Fetched):
                node.fetched.update(o.done)
                node.abandoned.update(o.abandoned)
            elif isinstance(o, Changed):
                node.changed += 1
            elif isinstance(o, Dial):
                node.dials += 1

    def _deliver(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "timeout":
            src, ask_id = args
            if (src, ask_id) not in self._answered:
                self._answered.add((src, ask_id))
                self._carry(self.nodes[src], self.nodes[src].core.on_response(ask_id, None, self.now))
            return
        src, dst = args[0], args[1]
        if not self.connected(src, dst):
            self.dropped += 1
            return
        self.delivered += 1
        node = self.nodes[dst]
        if kind == "gossip":
            self._carry(node, node.core.receive(src, args[2], self.now))
        elif kind == "request":
            ask_id, data = args[2], args[3]
            self._post("response", dst, src, ask_id, node.core.serve(src, data, self.now))
        elif kind == "response":
            ask_id, data = args[2], args[3]
            if (dst, ask_id) in self._answered:
                return  # a duplicate, or an answer after the timeout
            self._answered.add((dst, ask_id))
            self._carry(node, node.core.on_response(ask_id, data, self.now))

    def step(self) -> None:
        """Advance one tick: deliver due messages (in random order), then tick every core."""
        self.now += self.tick_s
        due = []
        while self._events and self._events[0][0] <= self.now:
            due.append(heapq.heappop(self._events))
        self.rng.shuffle(due)
        for _, _, kind, args in due:
            self._deliver(kind, args)
        for node in self.nodes.values():
            deadline = node.core.deadline()
            if deadline is not None and deadline <= self.now:
                self._carry(node, node.core.tick(self.now))

    def run_until(self, cond, *, max_s: float = 120.0) -> float:
        """Step until ``cond()``; the virtual seconds it took."""
        start = self.now
        while not cond():
            if self.now - start > max_s:
                raise AssertionError(f"condition not reached in {max_s} virtual seconds")
            self.step()
        return self.now - start

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step()

    # -- checks ------------------------------------------------------------------------

    def converged(self, genesis: CID, names=None) -> bool:
        reps = [self.nodes[n].replicas.get(genesis) for n in (names or self.nodes)]
        if any(r is None for r in reps):
            return False
        return all(r.heads == reps[0].heads and r.state == reps[0].state for r in reps[1:])


def genesis(kind: str, name: str) -> CID:
    return records.make_genesis(kind, name)[0]
