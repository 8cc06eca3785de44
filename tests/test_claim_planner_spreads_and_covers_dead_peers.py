"""The claim planner: every node ranks the same way, exactly ``wanted`` nodes
claim at once, work spreads over the mesh, and dead preferred nodes are
covered after the deferral; it decides as the runner and verifier did."""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec
from lattice.claims import (
    REPLICATED_DEFER_FACTOR,
    TaskFacts,
    claim_at,
    claim_delay,
    constraints_ok,
    effective_capacity,
    rendezvous_rank,
    runner_claim_delay,
    runner_wanted,
    verifier_claim_delay,
    weighted_rank,
)
from lattice.peers import PeerTable, PeerTableOptions
from lattice.signing import Signer, peer_id_of

tasks = st.integers(0, 10**9).map(lambda i: codec.cid_of({"task": i}))
peer_sets = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=12, unique=True)


def _old_rank(task, peers):
    """The formula the old meshd.mesh.rendezvous_rank (now lattice.claims) used (the order must not change)."""
    return sorted(peers, key=lambda p: hashlib.sha256(p.encode() + task.raw).digest(), reverse=True)


# -- laws -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(task=tasks, peers=peer_sets, data=st.data())
def test_every_node_computes_the_same_rank_from_the_same_live_set(task, peers, data) -> None:
    shuffled = data.draw(st.permutations(peers))
    assert rendezvous_rank(task, peers) == rendezvous_rank(task, shuffled) == _old_rank(task, peers)
    assert rendezvous_rank(task, peers + shuffled) == _old_rank(task, peers)  # duplicates count once


@settings(max_examples=200, deadline=None)
@given(task=tasks, peers=peer_sets, wanted=st.integers(1, 5), defer=st.floats(0.01, 10))
def test_exactly_wanted_peers_may_claim_at_once_and_one_more_per_deferral(task, peers, wanted, defer) -> None:
    delays = {p: claim_delay(task, p, peers, wanted=wanted, defer_s=defer) for p in peers}
    n = len(peers)
    if n == 1:
        assert delays == {peers[0]: 0.0}
        return
    for k in range(n + 1):  # after k deferrals, min(n, wanted + k) peers may claim
        assert sum(d <= k * defer + 1e-9 for d in delays.values()) == min(n, wanted + k)
    assert all(claim_at(task, p, peers, wanted=wanted, first_seen=100.0, defer_s=defer) == 100.0 + d
               for p, d in delays.items())


@settings(max_examples=200, deadline=None)
@given(task=tasks, peers=peer_sets, wanted=st.integers(1, 3), dead=st.integers(0, 11), defer=st.floats(0.01, 5))
def test_a_dead_top_ranked_peer_is_covered_after_the_deferral(task, peers, wanted, dead, defer) -> None:
    ranked = rendezvous_rank(task, peers)
    dead_set = set(ranked[:dead])
    alive = [p for p in peers if p not in dead_set]
    if not alive:
        return
    # Survivors have not noticed yet (the dead still look live): the first survivor claims after the deferral.
    first = min(claim_delay(task, p, peers, wanted=wanted, defer_s=defer) for p in alive)
    assert first == max(0, min(dead, len(peers) - 1) - wanted + 1) * defer if len(peers) > 1 else first == 0
    # Once presence ages out they rank only the living, and the top ones claim at once.
    assert min(claim_delay(task, p, alive, wanted=wanted, defer_s=defer) for p in alive) == 0.0


def test_a_node_that_is_not_a_candidate_or_is_alone_claims_at_once() -> None:
    task = codec.cid_of({"task": 1})
    assert claim_delay(task, "me", [], defer_s=1.0) == 0.0
    assert claim_delay(task, "me", ["me"], defer_s=1.0) == 0.0
    assert claim_delay(task, "me", ["a", "b"], defer_s=1.0) == 0.0


def test_work_spreads_evenly_over_the_runners() -> None:
    peers = [f"12D3KooWpeer{i}" for i in range(10)]
    firsts = Counter(rendezvous_rank(codec.cid_of({"task": i}), peers)[0] for i in range(2000))
    assert set(firsts) == set(peers)
    assert all(140 <= c <= 260 for c in firsts.values()), firsts  # 200 each, binomial sd ~13


# -- the runner's and the verifier's rules ----------------------------------------------------


def _old_runner_delay(t, me, live_runners, banned, facts, trusted, defer_s):
    """A transcription of meshd's Runner._preferred (before the planner), as a delay: None = at once.

    Less its "a task submitted here runs here first" rule, which issue 13
    removed on purpose: the submitter runs its share, not everything.
    """
    live = [p for p in live_runners if p not in banned]
    if len(live) <= 1:
        return None
    ranked = _old_rank(t, live)
    if me not in ranked:
        return None
    rank = ranked.index(me)
    wanted = facts.wanted
    if wanted > 1 and facts.replicated and not facts.claimed and trusted(ranked[0]) and not facts.spot_checked:
        wanted = 1
    if rank < wanted:
        return None
    defer = defer_s * (4 if facts.replicated else 1)
    return (rank - wanted + 1) * defer


facts_st = st.builds(TaskFacts, wanted=st.integers(1, 4), replicated=st.booleans(), claimed=st.booleans(),
                     spot_checked=st.booleans())


@settings(max_examples=300, deadline=None)
@given(task=tasks, peers=peer_sets, facts=facts_st, data=st.data())
def test_the_runner_rule_decides_as_the_runner_did(task, peers, facts, data) -> None:
    if facts.wanted > 1 and not facts.replicated:
        facts = TaskFacts(wanted=1, claimed=facts.claimed)
    me = data.draw(st.sampled_from(peers + ["not-a-runner"]))
    banned = set(data.draw(st.lists(st.sampled_from(peers), max_size=3)))
    trusted_set = set(data.draw(st.lists(st.sampled_from(peers), max_size=len(peers))))
    asked: list[str] = []

    def trusted(p: str) -> bool:
        asked.append(p)
        return p in trusted_set

    new = runner_claim_delay(task, me, peers, facts, defer_s=0.5, trusted=trusted, banned=banned)
    old = _old_runner_delay(task, me, peers, banned, facts, trusted_set.__contains__, 0.5)
    assert new == (old or 0.0)
    assert len(asked) <= 1  # trust is looked up for the preferred runner only


def test_adaptive_replication_lets_only_the_preferred_trusted_runner_claim() -> None:
    task = codec.cid_of({"task": "verified"})
    runners = [f"r{i}" for i in range(5)]
    ranked = rendezvous_rank(task, runners)
    fresh = TaskFacts(wanted=3, replicated=True)

    def at_once(facts, trusted=lambda p: False):
        return sorted(p for p in runners if runner_claim_delay(task, p, runners, facts, defer_s=0.5,
                                                                 trusted=trusted) == 0.0)

    assert at_once(fresh) == sorted(ranked[:3])
    assert at_once(fresh, trusted=lambda p: p == ranked[0]) == [ranked[0]]
    assert at_once(fresh, trusted=lambda p: p != ranked[0]) == sorted(ranked[:3])  # only the preferred one counts
    for facts in (TaskFacts(wanted=3, replicated=True, claimed=True),
                  TaskFacts(wanted=3, replicated=True, spot_checked=True)):
        assert at_once(facts, trusted=lambda p: True) == sorted(ranked[:3])
    assert runner_wanted(fresh, True) == 1 and runner_wanted(fresh, False) == 3
    # A backup for verified work waits four times longer than for plain work.
    last = ranked[-1]
    plain = runner_claim_delay(task, last, runners, TaskFacts(), defer_s=0.5)
    verified = runner_claim_delay(task, last, runners, fresh, defer_s=0.5)
    assert plain == 4 * 0.5 and verified == (4 - 3 + 1) * 0.5 * REPLICATED_DEFER_FACTOR


def test_where_a_task_was_submitted_plays_no_part() -> None:
    """The submitter runs its share, not everything (issue 13): the last-ranked
    runner waits its turn even for a task enqueued through its own API."""
    task = codec.cid_of({"task": "local"})
    runners = [f"r{i}" for i in range(5)]
    last = rendezvous_rank(task, runners)[-1]
    assert runner_claim_delay(task, last, runners, TaskFacts(), defer_s=0.5) == 4 * 0.5


@settings(max_examples=200, deadline=None)
@given(task=tasks, peers=peer_sets, w=st.floats(0.5, 64))
def test_equal_weights_rank_exactly_as_plain_rendezvous(task, peers, w) -> None:
    assert weighted_rank(task, dict.fromkeys(peers, w)) == rendezvous_rank(task, peers)


def test_weighted_shares_follow_capacity() -> None:
    """Peers of weight 1, 2 and 4 rank first for about 1/7, 2/7 and 4/7 of all tasks."""
    weights = {"one": 1, "two": 2, "four": 4}
    firsts = Counter(weighted_rank(codec.cid_of({"task": i}), weights)[0] for i in range(7000))
    for p, w in weights.items():
        assert abs(firsts[p] - 1000 * w) <= 120, firsts  # binomial sd <= 41


def test_removing_a_peer_moves_only_its_own_share() -> None:
    weights = {"a": 1, "b": 3, "c": 2, "d": 5}
    without_b = {p: w for p, w in weights.items() if p != "b"}
    for i in range(2000):
        t = codec.cid_of({"task": i})
        top = weighted_rank(t, weights)[0]
        if top != "b":
            assert weighted_rank(t, without_b)[0] == top


def test_weight_zero_or_less_is_no_candidate() -> None:
    t = codec.cid_of({"task": 1})
    assert weighted_rank(t, {"a": 0, "b": -1, "c": 2}) == ["c"]


def test_advertised_capacity_counts_only_up_to_completed_work() -> None:
    assert effective_capacity(10_000, 0) == 1  # a claimed 10,000 slots earns nothing yet
    assert effective_capacity(10_000, 3) == 4
    assert effective_capacity(4, 100) == 4  # never above what it advertises
    assert effective_capacity(0, 100) == 1


def test_a_runner_that_announces_huge_capacity_takes_a_small_share_until_it_proves_it() -> None:
    liar, honest = "liar", ["h1", "h2", "h3"]
    weights = {liar: effective_capacity(10_000, 0), **{h: effective_capacity(2, 50) for h in honest}}
    firsts = Counter(weighted_rank(codec.cid_of({"task": i}), weights)[0] for i in range(3500))
    assert firsts[liar] < 3500 / 7 + 100, firsts  # weight 1 of 7


def test_constraints_are_matched_against_any_inventory() -> None:
    inv = {"os": "linux", "arch": "x86_64", "memory": 8 << 30, "labels": ["ssd"], "gpu": False}
    assert constraints_ok([{"type": "os", "value": "Linux"}, {"type": "arch", "value": "amd64"}], inv)
    assert constraints_ok([{"type": "label", "value": "ssd"}, {"type": "min_memory", "value": 1 << 30}], inv)
    assert not constraints_ok([{"type": "gpu", "value": True}], inv)
    assert not constraints_ok([{"type": "label", "value": "gpu-box"}], inv)
    assert not constraints_ok([{"type": "min_memory", "value": 1 << 30}], {})  # unknown memory is not enough


def test_banned_runners_are_no_candidates() -> None:
    task = codec.cid_of({"task": "b"})
    runners = [f"r{i}" for i in range(4)]
    top, second = rendezvous_rank(task, runners)[:2]
    assert runner_claim_delay(task, second, runners, TaskFacts(), defer_s=0.5) == 0.5
    assert runner_claim_delay(task, second, runners, TaskFacts(), defer_s=0.5, banned={top}) == 0.0


@settings(max_examples=100, deadline=None)
@given(task=tasks, others=peer_sets, me=st.text("xyz", min_size=1, max_size=3))
def test_the_verifier_rule_decides_as_the_verifier_did(task, others, me) -> None:
    ranked = _old_rank(task, others + [me])  # Verifier._my_turn: live verifiers plus itself
    rank = ranked.index(me)
    assert verifier_claim_delay(task, me, others, defer_s=1.0) == rank * 1.0


# -- a mesh of runners in virtual time ----------------------------------------------------------


def _mesh(n: int, seed: int) -> tuple[random.Random, dict[str, Signer], dict[str, PeerTable]]:
    rng = random.Random(seed)
    signers = {}
    for _ in range(n):
        s = Signer.from_seed(rng.randbytes(32))
        signers[peer_id_of(s.public)] = s
    tables = {p: PeerTable(p, roles=["runner"], options=PeerTableOptions(presence_interval_s=1.0)) for p in signers}
    return rng, signers, tables


def _exchange_presence(rng, signers, tables, alive, t, *, drop) -> None:
    for src in alive:
        data = tables[src].encode_presence(signers[src], now=1_700_000_000.0 + t)
        for dst in alive:
            if dst != src and rng.random() >= drop:
                tables[dst].receive_presence_untrusted(src, data, t)


@pytest.mark.parametrize("seed", [1, 2])
def test_runners_claim_each_task_once_and_cover_dead_runners(seed: int) -> None:
    """12 runners learn each other through lossy presence; 3 then die without a
    word.  Tasks arrive while the survivors still think the dead are live: each
    task is claimed once, by the first survivor whose turn comes, no later than
    the deferral of the dead ranked above it."""
    defer = 0.5
    rng, signers, tables = _mesh(12, seed)
    names = sorted(signers)
    t = 0.0
    while not all(tables[p].live(t, "runner") == names for p in names):
        assert t < 20.0
        t += 1.0
        _exchange_presence(rng, signers, tables, names, t, drop=0.2)
    dead = set(rng.sample(names, 3))
    alive = [p for p in names if p not in dead]

    claims: Counter = Counter()
    late = 0
    for i in range(300):
        task = codec.cid_of({"task": f"{seed}-{i}"})
        seen = t + rng.uniform(0, 0.05)  # each survivor sees the task at slightly different times
        events = []
        for p in alive:
            view = tables[p].live(seen, "runner")  # the dead still look live (seen < 3 s ago)
            assert set(view) == set(names)
            first_seen = seen + rng.uniform(0, 0.05)
            heapq.heappush(events, (claim_at(task, p, view, first_seen=first_seen, defer_s=defer), p))
        when, winner = heapq.heappop(events)
        # The winner's claim reaches the others within 0.1 s; only one whose turn came before that also claims.
        claims[task] += 1 + sum(1 for at, _ in events if at < when + 0.1)
        ranked = rendezvous_rank(task, names)
        dead_ahead = ranked.index(winner)
        assert winner == next(p for p in ranked if p not in dead)
        assert when - seen <= dead_ahead * defer + 0.1
        late += dead_ahead > 0
    assert all(c == 1 for c in claims.values())
    assert 300 * 3 / 12 * 0.5 < late < 300 * 3 / 12 * 1.6  # about a quarter waited for a dead runner

    # Once the dead runners' presence ages out, nobody defers to them any more.
    t += 3.5
    _exchange_presence(rng, signers, tables, alive, t, drop=0.0)
    for p in alive:
        assert tables[p].live(t, "runner") == alive
    task = codec.cid_of({"task": "after"})
    assert sorted(p for p in alive if claim_delay(task, p, tables[p].live(t, "runner"), defer_s=defer) == 0) \
        == [rendezvous_rank(task, alive)[0]]
