"""The mesh's redial schedule (meshd.p2p.redials): the first redial after a
connection is lost is the probe (refused at once: the peer is suspected dead
at once), whatever dialled the peer before.  A topology dial made shortly
before the loss used to count as the loss's first redial: no probe went out
and the dead peer stayed live until the presence horizon (5.5-6 s in
``meshd bench membership``, against about 0.2 s)."""

from __future__ import annotations

from meshd.p2p.redials import REDIAL_EVERY_S, REDIAL_FOR_S, REDIAL_SOON_FOR_S, REDIAL_SOON_S, Redials

ADDRS = {"p": ("/ip4/10.0.0.2/tcp/4601",), "q": ("/ip4/10.0.0.3/tcp/4601",)}


def _due(r: Redials, now: float, *, connected=(), dialing=(), keep=lambda p: True):
    return r.due(now, connected=set(connected), addrs=lambda p: ADDRS.get(p, ()), keep=keep, dialing=set(dialing))


def test_a_loss_right_after_a_topology_dial_is_probed_at_once() -> None:
    r = Redials()
    assert r.may_plan("p", 100.0)  # the topology plan dials p ...
    r.lose("p", 100.5)  # ... and its connection goes away half a second later
    assert _due(r, 100.5) == [("p", ADDRS["p"], True)]


def test_only_the_first_redial_of_a_loss_is_the_probe_and_the_pace_slows_later() -> None:
    r = Redials()
    r.lose("p", 0.0)
    assert _due(r, 0.0) == [("p", ADDRS["p"], True)]
    assert _due(r, REDIAL_SOON_S / 2) == []
    assert _due(r, REDIAL_SOON_S) == [("p", ADDRS["p"], False)]
    late = REDIAL_SOON_FOR_S + 1.0
    assert _due(r, late) == [("p", ADDRS["p"], False)]
    assert _due(r, late + REDIAL_SOON_S) == []  # after the first seconds, every REDIAL_EVERY_S
    assert _due(r, late + REDIAL_EVERY_S) == [("p", ADDRS["p"], False)]
    r.lose("p", late + 3.0)  # still lost: the same loss, no second probe
    assert _due(r, late + 2 * REDIAL_EVERY_S) == [("p", ADDRS["p"], False)]


def test_a_lost_peer_is_forgotten_when_back_gone_too_long_addressless_or_not_kept() -> None:
    r = Redials()
    for p in ("p", "q", "x"):
        r.lose(p, 0.0)
    assert _due(r, 0.0, connected={"p"}, keep=lambda p: p != "q") == []  # p back, q not kept, x no address
    assert r.lost == {}
    r.lose("p", 0.0)
    assert _due(r, REDIAL_FOR_S + 1) == [] and r.lost == {}


def test_one_dial_at_a_time_and_topology_dials_are_paced() -> None:
    r = Redials()
    r.lose("p", 0.0)
    assert _due(r, 0.0, dialing={"p"}) == []  # a dial under way: wait for it
    assert _due(r, 0.1) == [("p", ADDRS["p"], True)]  # the probe is still the first redial made
    assert r.may_plan("q", 0.0)
    assert not r.may_plan("q", REDIAL_EVERY_S / 2)
    assert r.may_plan("q", REDIAL_EVERY_S)
