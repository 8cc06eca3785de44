"""What a new peer may make this node do: a budget for queries and dials.

Anyone can make a key pair, so any number of peer ids can send a validly
signed presence (finding 7 of issue 14: thousands of made-up ids).  Each new
id used to make the node query every object it follows and dial the
addresses the presence named (addresses the attacker chose).  So:

* the queries and the linked-block offer a new peer triggers (*welcoming*
  it) are budgeted: at most ``new_peers_per_s`` per second (bursts of twice
  that), over all peers; a peer not welcomed for want of budget is welcomed
  at one of its later presences, so honest peers are only delayed;
* dials that presence triggers are budgeted the same way
  (``dials_per_s``), and a peer already connected is never dialled;
* with an allow-list, only its members are welcomed or dialled.

Who counts as a live runner is the other half: only peers with a connection
(Noise proves their key), to this node or, vouched for in a signed presence,
to a peer this node is connected to (:mod:`lattice.vouching`).

Pure: the caller passes its clock.
"""

from __future__ import annotations

from collections.abc import Callable

from .admission import TokenBucket

__all__ = ["Newcomers"]

#: Most welcomed peers remembered; past it the memory starts over (a
#: forgotten peer is welcomed once more at its next presence, nothing worse).
MAX_WELCOMED = 20_000


class Newcomers:
    """The welcome and dial budgets of one node.

    Args:
        new_peers_per_s: New peers welcomed per second (bursts of twice that).
        dials_per_s: Dials triggered by presence per second (bursts of twice that).
        reject: Called with the reason of each refusal (``new_peer_limited``,
            ``dial_limited``, ``dial_not_member``).
    """

    def __init__(self, new_peers_per_s: float, dials_per_s: float, reject: Callable[[str], None]) -> None:
        self._welcome = TokenBucket(new_peers_per_s, max_entries=1)
        self._dials = TokenBucket(dials_per_s, max_entries=1)
        self._welcomed: set[str] = set()
        self._reject = reject

    def welcome(self, peer: str, now: float) -> bool:
        """Whether to welcome ``peer`` now (first presence, or a later one after a refusal)."""
        if peer in self._welcomed:
            return False
        if not self._welcome.allow("", now):
            self._reject("new_peer_limited")
            return False
        if len(self._welcomed) >= MAX_WELCOMED:
            self._welcomed.clear()
        self._welcomed.add(peer)
        return True

    def may_dial(self, peer: str, now: float, *, connected: bool, member: bool) -> bool:
        """Whether presence may make this node dial ``peer`` now."""
        if connected:
            return False
        if not member:
            self._reject("dial_not_member")
            return False
        if not self._dials.allow("", now):
            self._reject("dial_limited")
            return False
        return True

    def forget(self, peer: str) -> None:
        """``peer`` left or restarted: welcome it again at its next presence."""
        self._welcomed.discard(peer)
