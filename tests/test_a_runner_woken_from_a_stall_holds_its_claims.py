"""A runner whose own loop stalled holds its claims, even if it hears peers at once on waking.

A process stopped with SIGSTOP (or starved for seconds) wakes with a queue
view that misses what its peers did meanwhile.  The gossip its peers sent
during the stop is buffered in its sockets and is often read before the
first claim round after waking, so the peers already look fresh then.  CI
caught the runner skipping its hold for that reason and re-running a
reservation its peer had completed
(``test_a_stopped_runners_reservations_move_while_it_sleeps``).  Hearing a
peer must only start the settle time, never skip the hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from meshd.roles import claimer as claimer_mod
from meshd.roles.claimer import STALE_HOLD_S, STALE_SETTLE_S, Claimer


@dataclass
class _Syncer:
    syncing: bool = False


@dataclass
class _Obj:
    genesis: str = "queue"


@dataclass
class _Mesh:
    syncers: dict = field(default_factory=lambda: {"queue": _Syncer()})


@dataclass
class _Node:
    """The three things ``Claimer._stale_view`` reads of a runner's node."""

    clock: "_Clock"
    peer_id: str = "me"
    stall: tuple[float, float] | None = None  # (monotonic end, seconds late) of this node's last loop stall
    mesh: _Mesh = field(default_factory=_Mesh)
    queue_obj: _Obj = field(default_factory=_Obj)

    def stalled(self, late_s: float, within_s: float) -> bool:
        """As ``LoopWatch.stalled``: a stall of ``late_s`` or more that ended within ``within_s``."""
        return self.stall is not None and self.stall[1] >= late_s and self.clock.now - self.stall[0] < within_s

    def stop_for(self, seconds: float) -> None:
        self.clock.now += seconds
        self.stall = (self.clock.now, seconds)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _claimer(monkeypatch) -> tuple[Claimer, _Node, _Clock]:
    clock = _Clock()
    monkeypatch.setattr(claimer_mod, "time", clock)
    node = _Node(clock)
    return Claimer(node, defer_s=0.5, recent_s=10.0, fresh_s=3.0), node, clock  # type: ignore[arg-type]


def test_a_runner_that_hears_its_peer_first_on_waking_still_holds_until_the_queue_settles(monkeypatch) -> None:
    c, node, clock = _claimer(monkeypatch)
    peers = {"me": 1, "a": 1}
    node.stop_for(3.9)  # woke from a 3.9 s stop; a's buffered presence was read first
    assert c._stale_view(peers, fresh=peers) is True
    clock.now += STALE_SETTLE_S / 2
    assert c._stale_view(peers, fresh=peers) is True
    node.mesh.syncers["queue"].syncing = True  # a's heads, read on waking, are being fetched
    clock.now += STALE_SETTLE_S
    assert c._stale_view(peers, fresh=peers) is True
    node.mesh.syncers["queue"].syncing = False
    assert c._stale_view(peers, fresh=peers) is False
    # The episode is over: the same stall does not start another hold.
    clock.now += 0.1
    assert c._stale_view(peers, fresh=peers) is False


def test_a_runner_that_hears_nobody_after_a_stall_holds_at_most_the_hold_time(monkeypatch) -> None:
    c, node, clock = _claimer(monkeypatch)
    node.stop_for(6.0)
    recent = {"me": 1, "a": 1}
    assert c._stale_view(recent, fresh={"me": 1}) is True
    clock.now += STALE_HOLD_S - 0.1
    assert c._stale_view(recent, fresh={"me": 1}) is True
    clock.now += 0.2
    assert c._stale_view(recent, fresh={"me": 1}) is False


def test_a_runner_without_a_stall_or_without_peers_never_holds(monkeypatch) -> None:
    c, node, _ = _claimer(monkeypatch)
    assert c._stale_view({"me": 1, "a": 1}, fresh={"me": 1}) is False  # a quiet peer is not this node's stall
    node.stop_for(5.0)
    assert c._stale_view({"me": 1}, fresh={"me": 1}) is False  # alone: nothing to catch up with
