"""Which peers a node keeps connections to: a bounded-degree mesh that stays connected.

A node hears of every member through presence, and dialling all of them is
a full mesh: fine for a few dozen nodes, too many connections (and gossipsub
peers) for hundreds.  Above ``cap`` live peers each node keeps only its
*neighbours* on a ring of the live peers ordered by the SHA-256 of their ids,
at a symmetric set of ring offsets, nearest first, at most ``cap`` of them:

* **Two hops to everyone** while ``cap`` allows it: the offsets ±1 … ±k and
  the multiples of 2k+1 up to half the ring.  Any offset d is a multiple
  q(2k+1) plus a rest |r| <= k, so every live peer is a neighbour or a
  neighbour's neighbour.  That is what lets a node count peers it holds no
  connection to as live runners, on the word of the neighbours that do
  (:mod:`lattice.vouching`).  k is picked for the fewest offsets: about
  2·sqrt(n) neighbours for n live peers, so a cap of 32 covers up to about
  270 peers in two hops.
* **Above that,** Chord's fingers both ways (±1, ±2, ±4, …): paths stay
  O(log n) hops long, but not every peer is two hops away.

Why this rule:

* **Connected, not a star.**  The ±1 links alone form a ring through every
  live peer, so the mesh stays connected when any node dies, the bootstrap
  node included.
* **Both ends agree.**  Ring offsets come in ± pairs, so when two nodes see
  the same live set, each is in the other's neighbour list: neither trims a
  connection the other wants, and no connection is dialled and trimmed in
  turn.  Views that differ for a moment (a presence not yet heard) cost a
  few extra connections, never a partition, because connections younger
  than ``grace`` are not trimmed and the ring links are the first kept.
* **No coordinator, no state.**  Every node computes it from its own peer
  table; the hash spreads ring positions evenly and nobody picks its place.

Pure (no I/O, no clock): :func:`plan` takes the live set, the connections
and which of them are young, and returns what to dial and what to close.
The daemon's pump (:mod:`meshd.p2p.mesh`) and the simulation
(``tests/test_bounded_mesh_stays_connected.py``) run this same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_PEERS", "Plan", "neighbours", "plan"]

#: Connections a node keeps by default (``[p2p] max_peers``).
DEFAULT_MAX_PEERS = 32


def _position(peer: str) -> bytes:
    return hashlib.sha256(peer.encode()).digest()


def _two_hop_offsets(n: int, cap: int) -> list[int] | None:
    """Positive ring offsets that put every peer of an ``n``-ring within two hops, or None if over ``cap``.

    Offsets 1..k and the multiples of 2k+1 that any d <= n//2 needs
    (q = round(d / (2k+1))); k is chosen for the fewest offsets (the larger
    k on a tie: more nearby links).
    """
    half = n // 2
    best: list[int] | None = None
    for k in range(1, half + 1):
        step = 2 * k + 1
        multiples = [m * step for m in range(1, (half + k) // step + 1)]
        offsets = sorted(set(range(1, k + 1)) | set(multiples))
        if best is None or len(offsets) <= len(best):
            best = offsets
        if k > len(best):  # k offsets alone already exceed the best: it only grows from here
            break
    # Each positive offset below half the ring is two neighbours (±d); half the ring is one.
    if best is None or sum(1 if 2 * d == n else 2 for d in best) > cap:
        return None
    return best


def neighbours(me: str, live: Iterable[str], cap: int = DEFAULT_MAX_PEERS) -> list[str]:
    """The peers ``me`` keeps connections to, nearest on the ring first.

    Args:
        me: This node's peer id.
        live: The live peers (``me`` may be among them).
        cap: The most neighbours (>= 2).

    Returns:
        Every other live peer when there are at most ``cap`` (a full mesh);
        else the peers at the two-hop offsets (see the module doc) when
        they fit under ``cap``; else up to ``cap`` peers at ring distances
        ±1, ±2, ±4, …
    """
    if cap < 2:
        raise ValueError("cap must be >= 2 (the ring needs both sides)")
    ring = sorted(set(live) | {me}, key=_position)
    n = len(ring)
    if n - 1 <= cap:
        return [p for p in ring if p != me]
    i = ring.index(me)
    out: dict[str, None] = {}
    offsets = _two_hop_offsets(n, cap)
    if offsets is not None:
        for d in offsets:
            out.setdefault(ring[(i + d) % n])
            out.setdefault(ring[(i - d) % n])
    else:
        d = 1
        while d <= n // 2 and len(out) < cap:
            for step in (d, -d):
                if len(out) < cap:
                    out.setdefault(ring[(i + step) % n])
            d *= 2
    out.pop(me, None)
    return list(out)


@dataclass(frozen=True)
class Plan:
    """What to do with connections: dial ``dial`` (wanted, not connected), close ``close``."""

    dial: tuple[str, ...]
    close: tuple[str, ...]


def plan(me: str, live: Iterable[str], connected: Collection[str], *, cap: int = DEFAULT_MAX_PEERS,
         young: Collection[str] = (), avoid: Collection[str] = ()) -> Plan:
    """Dial the neighbours we lack; when over ``cap``, close connections to non-neighbours.

    Args:
        me: This node's peer id.
        live: The live peers (from presence).
        connected: The peers we hold a connection to.
        cap: The most connections kept (see :func:`neighbours`).
        young: Connected peers too recent to close (a newcomer must stay
            connected long enough to hear of the mesh and find its own
            neighbours).
        avoid: Peers not to dial now: they closed our connection lately
            (their view differs; dialling them again would only be trimmed
            again).

    Returns:
        The peers to dial (missing neighbours, nearest first, as many as
        fit under ``cap``) and to close (to make that room, or when over
        ``cap``: only peers that are not neighbours and not young, those
        not heard of first).  Inbound connections can still take a node
        over ``cap`` for a while; they are closed once no longer young.
    """
    live = set(live)
    want = neighbours(me, live, cap)
    wanted = set(want)
    missing = [p for p in want if p not in connected and p not in avoid]
    # Room for every missing neighbour: a connection to a non-neighbour
    # goes for each (the peers not heard of first), as long as it is not young.
    excess = len(connected) + len(missing) - cap
    close: list[str] = []
    if excess > 0:
        spare = sorted((p for p in connected if p not in wanted and p not in young and p != me),
                       key=lambda p: (p in live, _position(p)))
        close = spare[:excess]
    room = max(0, cap - len(connected) + len(close))
    return Plan(tuple(missing[:room]), tuple(close))
