"""The block fetcher's rules, one at a time, in virtual time (no I/O, no sleeps)."""

from __future__ import annotations

import pytest

from lattice import codec
from lattice.fetcher import Ask, Fetcher, FetchOptions


def _cids(n: int, tag: str = "b") -> list:
    return [codec.cid_of({tag: i}) for i in range(n)]


def _fetcher(**kw) -> tuple[Fetcher, set]:
    store: set = set()
    return Fetcher(store.__contains__, FetchOptions(**kw)), store


def _arrive(f: Fetcher, store: set, ask: Ask, now: float, *, cids=None, missing=()) -> None:
    got = list(ask.cids if cids is None else cids)
    store.update(got)
    f.on_answer(ask.id, got, missing, now)


def test_the_hint_is_asked_first_and_present_blocks_are_not_wanted() -> None:
    f, store = _fetcher()
    a, b, c = _cids(3)
    store.add(c)
    f.want([a, b, c], "runner", 0.0)
    for cid in (a, b):
        f.add_provider(cid, "another")
    asks = f.plan(0.0)
    assert [(x.peer, set(x.cids)) for x in asks] == [("runner", {a, b})]
    assert not f.is_wanted(c)
    _arrive(f, store, asks[0], 0.1)
    assert f.count_wanted() == 0
    assert set(f.take_finished().done) == {a, b}
    assert f.take_finished().done == ()  # drained


def test_a_peer_that_reports_a_cid_missing_stops_being_its_provider() -> None:
    f, store = _fetcher()
    (a,) = _cids(1)
    f.want([a], "p1", 0.0)
    f.add_provider(a, "p2")
    [ask] = f.plan(0.0)
    assert ask.peer == "p1"
    f.on_answer("p1", [], [a], 0.1)
    [again] = f.plan(0.1)  # asked of the other provider at once
    assert again.peer == "p2"
    f.on_answer("p2", [], [a], 0.2)
    assert f.plan(0.2) == [] and f.statistics().stuck == 1
    # A peer that turns out to hold more (it announced heads we lack) unsticks it.
    f.add_peers(["p3"])
    [last] = f.plan(0.3)
    assert last.peer == "p3"
    _arrive(f, store, last, 0.4)
    assert f.statistics().done == 1 and f.statistics().missing == 2


def test_a_timed_out_ask_is_retried_from_another_provider_keeping_the_first_as_fallback() -> None:
    f, store = _fetcher(want_timeout_s=1.0)
    (a,) = _cids(1)
    f.want([a], "slow", 0.0)
    f.add_provider(a, "other")
    [ask] = f.plan(0.0)
    assert ask.peer == "slow" and ask.deadline == 1.0
    assert f.tick(0.9) == []  # not yet due
    [retry] = f.tick(1.0)
    assert retry.peer == "other" and f.statistics().timeouts == 1
    # "other" times out too: the sole remaining provider is kept and asked again.
    [again] = f.tick(2.0)
    assert again.peer == "other"
    # The late answer to the first ask still counts.
    _arrive(f, store, ask, 2.1)
    assert f.count_wanted() == 0 and f.statistics().inflight == 0


def test_backoff_of_an_unreachable_peer_doubles_up_to_the_cap_and_an_answer_resets_it() -> None:
    f, _ = _fetcher(backoff_base_s=1.0, backoff_cap_s=4.0)
    (a,) = _cids(1)
    f.want([a], "p", 0.0)
    now = 0.0
    for expected in (1.0, 2.0, 4.0, 4.0):
        [ask] = f.plan(now)
        f.on_failure(ask.id, now)
        assert f.plan(now + expected - 0.01) == []
        now += expected
    # An answer (even an empty one) resets the backoff.
    [ask] = f.plan(now)
    f.on_failure(ask.id, now)
    f.on_answer("p", [], [], now)
    assert [x.peer for x in f.plan(now)] == ["p"]
    assert f.statistics().failures == 5


def test_cids_are_batched_per_peer_and_asks_are_capped_in_flight() -> None:
    f, store = _fetcher(batch=3, max_inflight=2)
    cids = _cids(10)
    f.want(cids[:5], "a", 0.0)
    f.want(cids[5:], "b", 0.0)
    asks = f.plan(0.0)
    assert len(asks) == 2 and all(len(x.cids) == 3 for x in asks)
    assert {x.peer for x in asks} == {"a", "b"}
    assert f.plan(0.0) == []  # at the in-flight cap
    _arrive(f, store, asks[0], 0.1)
    [more] = f.plan(0.1)
    assert len(more.cids) == 2 and more.peer == asks[0].peer


def test_cids_left_out_of_a_size_limited_answer_are_asked_again_at_once() -> None:
    f, store = _fetcher(want_timeout_s=1000.0)
    cids = _cids(6)
    f.want(cids, "p", 0.0)
    [ask] = f.plan(0.0)
    _arrive(f, store, ask, 0.1, cids=ask.cids[:2])
    [again] = f.plan(0.1)  # no timeout needed
    assert set(again.cids) == set(cids[2:])


def test_a_refused_block_drops_that_provider_and_is_asked_elsewhere() -> None:
    f, _ = _fetcher()
    (a,) = _cids(1)
    f.want([a], "liar", 0.0)
    f.add_provider(a, "honest")
    [ask] = f.plan(0.0)
    f.on_answer(ask.id, [a], [], 0.1)  # arrived, but the driver did not keep it
    assert f.statistics().bad_blocks == 1
    [again] = f.plan(0.1)
    assert again.peer == "honest"


def test_a_block_that_arrives_along_another_path_ends_its_want() -> None:
    f, store = _fetcher()
    a, b = _cids(2)
    f.want([a, b], "p", 0.0)
    assert len(f.plan(0.0)) == 1
    store.add(a)  # e.g. an ancestor sent along with another answer
    f.plan(0.1)
    assert not f.is_wanted(a) and f.is_wanted(b)
    assert f.statistics().inflight == 1


def test_with_a_retry_limit_a_cid_nobody_serves_is_abandoned() -> None:
    f, _ = _fetcher(max_attempts=3, want_timeout_s=1.0)
    (a,) = _cids(1)
    f.want([a], "p", 0.0)
    now = 0.0
    for _ in range(3):
        f.tick(now)
        now += 1.0
    f.tick(now)
    assert not f.is_wanted(a)
    fin = f.take_finished()
    assert fin.abandoned == (a,) and fin.done == ()


def test_a_shared_fetcher_plans_per_owner_but_limits_in_flight_for_all() -> None:
    f, _ = _fetcher(max_inflight=2)
    x, y, z = _cids(3)
    f.want([x], "p1", 0.0, owner="queue")
    f.want([y], "p2", 0.0, owner="results")
    f.want([z], "p3", 0.0, owner="results")
    [ask] = f.plan(0.0, owner="queue")
    assert ask.cids == (x,)
    assert f.count_wanted(owner="results") == 2 and f.is_wanted(y, owner="results")
    assert not f.is_wanted(y, owner="queue")
    assert len(f.plan(0.0, owner="results")) == 1  # the cap counts the queue's ask too


@pytest.mark.parametrize(
    "kw",
    [{"batch": 0}, {"max_inflight": 0}, {"want_timeout_s": 0}, {"backoff_base_s": 0},
     {"backoff_base_s": 2.0, "backoff_cap_s": 1.0}, {"max_attempts": 0}],
)
def test_options_are_validated(kw) -> None:
    with pytest.raises(ValueError):
        FetchOptions(**kw)
