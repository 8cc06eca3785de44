"""Which lost peers the mesh redials now, and which redial is the probe.

Sans-I/O, for :meth:`meshd.p2p.watch.ConnectionWatch._watch_loop`: the loop tells it
which connections went away and which dials the topology plan wants, with
the time; it answers whom to dial and whether that dial is a *probe*.  The
first redial after a connection is lost is the probe: refused at every
address within ``PROBE_S`` (nothing listens there, the process is gone), the
peer is suspected dead at once instead of after the presence horizon.

A peer whose probe was refused, and which counts as live again while still
lost (heard from since, with no connection back), is probed again by its
next redial, at once.  Both ways a dead peer stayed live past the probe
(``meshd bench membership`` under CPU load, before this):

* a presence the dead process sent before it died reached an observer after
  that observer's probe had counted it dead (sent 0.3 s before, applied 7 ms
  after the suspicion) and made it live for a whole presence horizon: detect
  6.2 s;
* an observer heard the restarted peer's presence through others before it
  reconnected to it; when the peer died again, that observer lost no
  connection, so it probed nothing, and counted it live on its connection to
  the previous process (6 s) and its peers' word: detect 3.9 s.

Only within ``REDIAL_SOON_FOR_S`` of the loss, so that a live peer whose
addresses refuse us (and that others vouch for) is suspected a few times,
not at each of its presences for ``REDIAL_FOR_S``.

Kept apart from the loop so that the schedule is tested without sockets.
A topology dial made shortly before a loss once counted as that loss's first
redial, so no probe went out and the loss waited out the presence horizon
(5.5-6 s in ``meshd bench membership`` rounds, against about 0.2 s).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Final

__all__ = ["PROBE_S", "REDIAL_EVERY_S", "REDIAL_FOR_S", "REDIAL_SOON_FOR_S", "REDIAL_SOON_S", "Redials"]

#: A lost peer is redialled at once, then this often for REDIAL_SOON_FOR_S ...
REDIAL_SOON_S: Final = 0.5
REDIAL_SOON_FOR_S: Final = 10.0
#: ... then this often (also the least time between two topology dials of a peer) ...
REDIAL_EVERY_S: Final = 2.0
#: ... for this long after its connection went away.
REDIAL_FOR_S: Final = 600.0
#: A first redial that fails faster than this was refused, not lost: the peer is suspected dead.
PROBE_S: Final = 1.0


class Redials:
    """The lost peers (peer -> when its connection went away) and when each was last dialled."""

    def __init__(self) -> None:
        self.lost: dict[str, float] = {}
        self._last_dial: dict[str, float] = {}
        self._refused: set[str] = set()  # lost peers whose latest probe was refused (suspected dead)

    def lose(self, peer: str, now: float) -> None:
        """``peer``'s connection went away at ``now``.  A peer already lost keeps its first loss
        time; a newly lost one is probed at its next :meth:`due`, whatever dialled it before."""
        if peer not in self.lost:
            self.lost[peer] = now
            self._last_dial.pop(peer, None)
            self._refused.discard(peer)

    def refused(self, peer: str) -> None:
        """The probe of lost ``peer`` was refused (the loop suspected it dead).  Should it count as
        live again while still lost, :meth:`due` probes it again."""
        if peer in self.lost:
            self._refused.add(peer)

    def due(self, now: float, *, connected: Container[str], addrs: Callable[[str], Sequence[str]],
            keep: Callable[[str], bool], dialing: Container[str],
            live: Callable[[str], bool] = lambda peer: False) -> list[tuple[str, tuple[str, ...], bool]]:
        """The redials to start now, as ``(peer, addresses, probe)``; each is recorded as made.

        A lost peer is forgotten once it is connected again, after ``REDIAL_FOR_S``, when it has no
        address, or when ``keep(peer)`` says no (the loop leaves non-neighbours to the horizon once
        it holds enough connections).  ``dialing``: peers with a dial under way (one at a time).
        ``live``: whether a peer counts as live now; one that does after its probe was
        :meth:`refused` is probed again at once (within ``REDIAL_SOON_FOR_S`` of the loss).
        """
        out: list[tuple[str, tuple[str, ...], bool]] = []
        for peer, since in list(self.lost.items()):
            where = tuple(addrs(peer))
            if peer in connected or now - since > REDIAL_FOR_S or not where or not keep(peer):
                del self.lost[peer]
                self._last_dial.pop(peer, None)
                self._refused.discard(peer)
                continue
            # Heard from again since its probe was refused: a late presence of the dead process, or a
            # restart we are not connected to yet.  Probe it again rather than trust the presence.
            again = peer in self._refused and now - since < REDIAL_SOON_FOR_S and live(peer)
            first = peer not in self._last_dial or again
            # Soon after the loss more often: a restarted node is back within seconds.
            every = REDIAL_SOON_S if now - since < REDIAL_SOON_FOR_S else REDIAL_EVERY_S
            if peer not in dialing and (first or now - self._last_dial[peer] >= every):
                self._last_dial[peer] = now
                if first:
                    self._refused.discard(peer)  # until this probe too is refused
                out.append((peer, where, first))
        return out

    def may_plan(self, peer: str, now: float) -> bool:
        """Whether the topology plan may dial ``peer`` now (at most once per ``REDIAL_EVERY_S``
        after any dial of it); a dial it allows is recorded."""
        if now - self._last_dial.get(peer, float("-inf")) < REDIAL_EVERY_S:
            return False
        self._last_dial[peer] = now
        return True
