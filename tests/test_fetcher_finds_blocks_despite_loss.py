"""The fetcher gets every wanted block through a lossy many-peer network.

A small seeded driver in virtual time stands in for the daemon: each
:class:`~lattice.fetcher.Ask` becomes a request that may be dropped,
duplicated, delayed (so reordered) or cut off by a partition; peers answer
with the blocks they hold, size-limited, one of them lies, and one provider
is dead.  Nothing sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec
from lattice.fetcher import Fetcher, FetchOptions


def _blocks(n: int, tag: str) -> dict:
    out = {}
    for i in range(n):
        data = codec.encode({tag: i})
        out[codec.cid_of({tag: i})] = data
    return out


@dataclass
class LossyNet:
    """Requests and answers between one fetching node and ``holdings``' peers."""

    seed: int
    blocks: dict
    holdings: dict[str, set]
    drop: float = 0.2
    duplicate: float = 0.1
    max_delay: int = 3  # ticks
    answer_limit: int = 5  # blocks per answer (size limit)
    dead: set[str] = field(default_factory=set)
    liars: set[str] = field(default_factory=set)
    tick_s: float = 0.1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = 0.0
        self.store: dict = {}
        self.fetcher = Fetcher(self.store.__contains__, FetchOptions(
            batch=8, max_inflight=6, want_timeout_s=1.0, backoff_base_s=0.2, backoff_cap_s=2.0))
        self.cut: set[str] = set()  # peers partitioned away from us
        self._queue: list[tuple[float, int, str, tuple]] = []
        self._n = 0
        self.delivered = self.dropped = 0

    def _post(self, kind: str, payload: tuple) -> None:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        for _ in range(2 if self.rng.random() < self.duplicate else 1):
            self._n += 1
            self._queue.append((self.now + self.rng.randint(0, self.max_delay) * self.tick_s, self._n, kind, payload))

    def send(self, asks) -> None:
        for ask in asks:
            if (ask.peer in self.cut or ask.peer in self.dead) and self.rng.random() < 0.5:
                # Sometimes the transport notices at once that it cannot reach the peer.
                self.fetcher.on_failure(ask.id, self.now)
                continue
            self._post("want", (ask.peer, ask.cids))

    def announce(self, peer: str) -> None:
        """``peer`` tells us (over the same lossy net) what it holds."""
        if peer not in self.dead:
            self._post("announce", (peer,))

    def step(self) -> None:
        self.now += self.tick_s
        due = [m for m in self._queue if m[0] <= self.now]
        self._queue = [m for m in self._queue if m[0] > self.now]
        self.rng.shuffle(due)
        for _, _, kind, payload in due:
            peer = payload[0]
            if peer in self.cut or peer in self.dead:
                self.dropped += 1
                continue
            self.delivered += 1
            if kind == "want":
                have = [c for c in payload[1] if c in self.holdings[peer]]
                sent = have[: self.answer_limit]
                blocks = [(c, b"lie" if peer in self.liars else self.blocks[c]) for c in sent]
                missing = [c for c in payload[1] if c not in self.holdings[peer]]
                self._post("answer", (peer, blocks, missing))
            elif kind == "answer":
                _, blocks, missing = payload
                for c, data in blocks:
                    if c.verify(data):  # the driver keeps only blocks that hash right
                        self.store[c] = data
                self.fetcher.on_answer(peer, [c for c, _ in blocks], missing, self.now)
            else:
                for c in self.holdings[peer]:
                    self.fetcher.add_provider(c, peer)
                self.fetcher.add_peers([peer])
        self.send(self.fetcher.tick(self.now))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_wanted_block_arrives_despite_loss_a_partition_a_liar_and_a_dead_provider(seed: int) -> None:
    rng = random.Random(seed)
    blocks = _blocks(300, f"s{seed}")
    cids = list(blocks)
    peers = [f"p{i:02d}" for i in range(20)]
    holdings: dict[str, set] = {p: set() for p in peers}
    for c in cids:
        for p in rng.sample(peers[:15], rng.randint(1, 3)):
            holdings[p].add(c)
    dead, liar = "p15", "p16"
    holdings[dead] = set(cids)  # it held everything, then died
    holdings[liar] = set(cids)  # it claims everything and serves garbage
    net = LossyNet(seed, blocks, holdings, dead={dead}, liars={liar})
    # Half the wants are hinted at the dead peer (it wrote them), a tenth at the liar.
    for i, c in enumerate(cids):
        hint = dead if i % 2 == 0 else (liar if i % 10 == 1 else rng.choice(sorted(p for p in peers if c in holdings[p])))
        net.fetcher.want([c], hint, net.now)
    net.cut = set(peers[:8])  # cut off from a good part of the providers at first
    net.send(net.fetcher.plan(net.now))
    for i in range(6000):
        if net.fetcher.count_wanted() == 0:
            break
        if i == 150:
            net.cut = set()  # heal the partition
        if i % 20 == 0:
            net.announce(rng.choice(peers))
        net.step()
    assert net.fetcher.count_wanted() == 0, net.fetcher.statistics()
    assert set(net.store) == set(cids)
    assert all(c.verify(d) for c, d in net.store.items())
    st_ = net.fetcher.statistics()
    assert st_.done == len(cids) and st_.abandoned == 0 and st_.inflight == 0
    assert st_.timeouts > 0 and st_.bad_blocks > 0 and st_.failures > 0
    assert net.dropped > 0 and net.delivered > 0
    assert set(net.fetcher.take_finished().done) == set(cids)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 25),
    holder_sets=st.lists(st.sets(st.sampled_from("abc"), min_size=1), min_size=25, max_size=25),
    hints=st.lists(st.sampled_from("abc"), min_size=25, max_size=25),
    batch=st.integers(1, 6),
    max_inflight=st.integers(1, 4),
    schedule=st.lists(st.integers(0, 2**16), min_size=1, max_size=100),
)
def test_any_delivery_order_of_answers_ends_with_every_block_fetched(
    n, holder_sets, hints, batch, max_inflight, schedule
) -> None:
    """Answers arrive in any order, duplicated, truncated for size, or lost
    (then the ask times out): every wanted block is fetched in the end.

    ``schedule`` is read cyclically and decides, for each step, which pending
    answer arrives next, whether it is dropped or duplicated, how far it is
    truncated, whether it names its ask or only its peer, and when time passes.
    """
    blocks = _blocks(n, "h")
    holders = dict(zip(blocks, holder_sets))
    store: dict = {}
    f = Fetcher(store.__contains__, FetchOptions(batch=batch, max_inflight=max_inflight, want_timeout_s=1.0))
    now = 0.0
    for c, hint in zip(blocks, hints):
        f.want([c], hint, now)  # the hint may lack the block
        for p in holders[c]:
            f.add_provider(c, p)
    pending: list[tuple] = []
    k = 0

    def choice() -> int:
        nonlocal k
        k += 1
        return schedule[k % len(schedule)]

    def post(asks) -> None:
        for ask in asks:
            have = [c for c in ask.cids if ask.peer in holders[c]]
            sent = have[: choice() % (len(have) + 1)] or have
            missing = [c for c in ask.cids if ask.peer not in holders[c]]
            pending.append((ask.id if choice() % 2 else ask.peer, sent, missing))

    drops = ticks = dups = 10  # budgets, so that every run ends (unbounded duplicates could starve one answer forever)
    post(f.plan(now))
    for _ in range(5000):
        if f.count_wanted() == 0:
            break
        v = choice()
        if not pending or (v % 10 == 9 and ticks > 0):
            ticks -= bool(pending)
            now += 1.1  # past every deadline
            post(f.tick(now))
            continue
        source, got, missing = pending.pop(v % len(pending))
        fate = (v // 10) % 4
        if fate == 0 and drops > 0:
            drops -= 1
            continue
        if fate == 1 and dups > 0:
            dups -= 1
            pending.append((source, got, missing))  # it will arrive again
        for c in got:
            store[c] = blocks[c]
        f.on_answer(source, got, missing, now)
        post(f.plan(now))
    assert f.count_wanted() == 0
    assert set(store) == set(blocks)
