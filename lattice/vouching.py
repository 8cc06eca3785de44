"""Who counts as a live runner: peers we are connected to, and peers our connected peers vouch for.

Keys are free, so a presence proves only that someone holds a key (finding 7
of issue 14: thousands of made-up ids, gossiped through one peer, would each
take a share of the work and never run it).  A connection is worth more:
Noise proved the peer's key to whoever holds it, and it costs the peer a
socket.  So a peer used to count as live only while *this* node held a
connection to it.  Above ``[p2p] max_peers`` that is wrong: each node keeps
only its :mod:`lattice.topology` neighbours, so the peers beyond them, alive
and working, did not count, and every node ranked tasks over a different set.

The rule now: a peer whose own presence is fresh counts when

* this node had a connection to it lately (Noise proved its key to us), or
* a *voucher* says it holds one: a peer this node had a connection to
  lately, whose own presence is fresh, lists it in that presence's signed
  ``links`` (the peers it is connected to, :mod:`lattice.peers`).

What keeps it bounded and unforgeable:

* **Only connected vouchers.**  A made-up id counts only when a member this
  node holds a connection to signs that it is connected to it; nobody can
  sign for another key, so gossip alone adds no one.
* **One hop.**  A vouched peer's own ``links`` count for nothing: chained
  vouches would let one liar vouch for made-up ids that vouch for more,
  without end.  A lying voucher adds at most :data:`lattice.peers.MAX_LINKS`
  (64) ids, one connection's worth of a bounded amount, where an honest
  peer adds its neighbours.
* **Fresh on both ends.**  The voucher's list is its latest presence (2 s
  old at most, or it is not live), and the vouched peer must be heard from
  itself; a peer that left or is suspected vouches for nobody.

One hop is enough because :mod:`lattice.topology` puts every live peer within
two hops (a neighbour's neighbour) up to about 270 peers at the default cap
of 32; beyond that, peers more than two hops away do not count, as before.

Pure: the caller says which peers were connected lately and whose presence
is fresh.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from .peers import MAX_LINKS

__all__ = ["live"]


def live(candidates: Iterable[str], *, me: str, connected: Collection[str],
         fresh: Callable[[str], bool], links: Callable[[str], Collection[str]]) -> list[str]:
    """The ``candidates`` that count as live, in their order.

    Args:
        candidates: Peers heard from lately (fresh presence), e.g. the
            runners of the peer table; ``me`` among them counts always.
        me: This node's peer id.
        connected: Peers this node held a connection to lately.
        fresh: Whether a peer's own presence is fresh (a voucher must be).
        links: A peer's ``links`` from its latest presence.

    Returns:
        The candidates that are ``me``, connected, or listed by a connected
        peer whose presence is fresh.
    """
    vouched: set[str] = set()
    for voucher in connected:
        if voucher != me and fresh(voucher):
            vouched.update(list(links(voucher))[:MAX_LINKS])
    return [p for p in candidates if p == me or p in connected or p in vouched]
