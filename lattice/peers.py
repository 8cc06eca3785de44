"""The peer table: signed presence, liveness, roles, inventory and addresses.

Every node broadcasts a signed ``meshd/presence`` v1 record every
``presence_interval_s``.  It names the peer, the roles it runs, its inventory
(what task constraints are matched against), its API URL and its listen
addresses, and a sequence number that only grows.  A :class:`PeerTable` keeps
what it has heard from each peer; a peer is *live* while its last accepted
presence is younger than ``live_periods`` presence intervals.

The wire format (byte for byte what meshd sent before this module existed;
``tests/test_peer_table_liveness_and_presence.py`` pins it)::

    {"t": "meshd/presence", "v": 1, "peer": <peer id>, "roles": [str],
     "inv": {str: str | int | bool | list}, "api": <url or "">,
     "addrs": [<multiaddr>, ... at most 8], "seq": <int>,
     "a": <32-byte Ed25519 key>, "s": <64-byte signature>}

A node whose block store is an IPFS node adds ``"ipfs": [<multiaddr with
/p2p/<IPFS peer id>>, ... at most 8]``: that node's swarm addresses, so peers
can ``swarm connect`` their own IPFS nodes to it and blocks also move by
bitswap (:mod:`meshd.p2p.ipfs_swarm`).  The key is optional and covered by the
signature; without it the record is byte for byte what it was, and older
nodes, which ignore keys they do not know, accept it with it (so the version
stays 1).  Entries are kept only if they are strings that start with ``/``
and are at most :data:`MAX_ADDR_LEN` characters long.

A node that stops sends one last presence with ``"leaving": true`` added
(covered by the signature; older nodes ignore the key): its peers stop
counting it as live at once (:meth:`PeerTable.mark_left`).

A node may also add ``"links": [<peer id>, ... at most 64]``, the peers it
holds a connection to (covered by the signature; older nodes ignore the
key, and a record without it is byte for byte the old one).  Its peers that
are connected to it count those peers as live runners on its word
(:mod:`lattice.vouching`): above ``[p2p] max_peers`` nobody is connected to
everyone.

``s`` signs the canonical DAG-CBOR encoding of the record without ``s``.

Like the rest of ``lattice`` this is pure: no sockets, no clocks.  Two times
are passed in:

* :meth:`PeerTable.encode_presence` takes the *wall clock* (seconds since the
  epoch): the sequence number is derived from it, so it keeps growing across
  restarts and peers do not take a restarted node's presence for a replay;
* everything else (:meth:`~PeerTable.receive_presence_untrusted`,
  :meth:`~PeerTable.live`, :meth:`~PeerTable.peer_list`) takes the table's
  clock, any clock that does not jump back (the daemon uses
  ``time.monotonic()``), as long as it is the same one in every call.

Assumed of the transport: presence is gossip; it may be lost, duplicated,
delayed or reordered.  A lost presence only ages a peer; a duplicate or an
older one arriving late is counted as ``presence_replayed`` and changes
nothing.  Two peers, with nothing but bytes between them::

    from lattice.peers import PeerTable
    from lattice.signing import Signer, peer_id_of

    a, b = Signer.generate(), Signer.generate()
    ta = PeerTable(peer_id_of(a.public), roles=["runner"])
    tb = PeerTable(peer_id_of(b.public), roles=["runner"])
    msg = ta.encode_presence(a, roles=["runner"], inventory={"cpus": 2}, now=1_700_000_000.0)
    tb.receive_presence_untrusted(ta.me, msg, now=0.0)
    assert tb.live(1.0, "runner") == sorted([ta.me, tb.me])
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .errors import BadInput
from .signing import Signer, peer_id_of, verify_signature

#: The record type of a presence message.
PRESENCE_TYPE = "meshd/presence"
#: Its only version.
PRESENCE_VERSION = 1
#: Largest presence message accepted as bytes (the gossip ceiling, ``hpcp.MAX_MESSAGE``).
MAX_PRESENCE = 8 * 1024 * 1024
#: Roles kept per peer; longer lists are cut.
MAX_ROLES = 16
#: Longest role name kept; longer names are dropped.
MAX_ROLE_LEN = 64
#: Listen addresses sent and kept per peer (and IPFS swarm addresses, likewise).
MAX_ADDRS = 8
#: Connected peers (``links``) sent and kept per peer: twice the default ``max_peers``.
MAX_LINKS = 64
#: Longest peer id kept in ``links`` (a base58 Ed25519 id is 52 characters).
MAX_PEER_ID_LEN = 128
#: Longest IPFS swarm address kept (a multiaddr with an IPFS peer id is ~100 characters).
MAX_ADDR_LEN = 256


@dataclass(frozen=True)
class PeerTableOptions:
    """Presence timing and limits.

    Attributes:
        presence_interval_s: How often a node broadcasts its presence
            (default 2 s; the daemon's ``MeshOptions.presence_interval_s``).
        live_periods: A peer is live while its last presence is younger than
            this many intervals (default 3, so one or two lost messages do
            not make a peer dead).
        dial_interval_s: At most one dial per peer in this time (default 10 s).
        max_peers: Peers the table holds (default 10,000).  A new peer beyond
            it takes the place of the one not heard from for longest, if
            that one is not live (never present, or silent past the live
            horizon: counted as ``peer_evicted``); else it is refused and
            counted as ``peer_table_full``.  So forged keys can neither grow
            the table without bound nor lock newcomers out for good.
    """

    presence_interval_s: float = 2.0
    live_periods: int = 3
    dial_interval_s: float = 10.0
    max_peers: int = 10_000

    def __post_init__(self) -> None:
        if not self.presence_interval_s > 0 or not self.dial_interval_s >= 0:
            raise ValueError("presence_interval_s must be > 0 and dial_interval_s >= 0")
        if self.live_periods < 1 or self.max_peers < 1:
            raise ValueError("live_periods and max_peers must be >= 1")

    @property
    def horizon_s(self) -> float:
        """How long after its last presence a peer stays live."""
        return self.live_periods * self.presence_interval_s


@dataclass(frozen=True)
class PeerInfo:
    """What the table knows of one peer (replaced, never mutated, on each presence).

    Attributes:
        peer_id: The peer's libp2p id.
        roles: The roles it announced.
        inventory: Its inventory as JSON (bytes and links in DAG-JSON form).
        api: Its HTTP API URL, or None.
        addrs: Its listen multiaddrs.
        ipfs: Its IPFS node's swarm multiaddrs (each ending in ``/p2p/<IPFS
            peer id>``), when its block store is an IPFS node it offers.
        last_seen: Table-clock time of its last accepted presence; None when
            the peer is known only from other gossip.
        seq: The sequence number of that presence (0: none yet).
        links: The peers it said it holds a connection to (its word only;
            see :mod:`lattice.vouching` for what it counts for).
    """

    peer_id: str
    roles: tuple[str, ...] = ()
    inventory: Mapping[str, Any] = field(default_factory=dict)
    api: str | None = None
    addrs: tuple[str, ...] = ()
    last_seen: float | None = None
    seq: int = 0
    links: tuple[str, ...] = ()
    ipfs: tuple[str, ...] = ()


class Received(enum.Enum):
    """What :meth:`PeerTable.receive_presence_untrusted` did with a message."""

    #: Bad or replayed: counted in ``rejected``, nothing changed.
    REJECTED = "rejected"
    #: Accepted from a peer we had a presence from already.
    ACCEPTED = "accepted"
    #: The first presence accepted from this peer: a new peer to sync with.
    NEW_PEER = "new_peer"

    @property
    def accepted(self) -> bool:
        return self is not Received.REJECTED


def _links_untrusted(links: Any) -> tuple[str, ...]:
    """A presence's ``links``: the first :data:`MAX_LINKS` short strings, anything else dropped."""
    if type(links) is not list:
        return ()
    return tuple(dict.fromkeys(p for p in links[:MAX_LINKS] if type(p) is str and 0 < len(p) <= MAX_PEER_ID_LEN))


def _inventory_wire(inventory: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inventory.items() if isinstance(v, (str, int, bool, list))}


class PeerTable:
    """The peers this node has heard of, and which of them are live.

    Args:
        me: This node's peer id.
        roles: This node's roles: :meth:`live` counts this node for a role
            it runs.
        options: Timing and limits (defaults: :class:`PeerTableOptions`).

    Attributes:
        rejected: Counts of refused presence by reason: ``bad_presence``
            (malformed, wrong version, not signed by the peer it names, bad
            signature), ``presence_replayed`` (a sequence number not above
            the last accepted one), ``peer_table_full`` and ``peer_evicted``.
    """

    def __init__(self, me: str, *, roles: Iterable[str] = (), options: PeerTableOptions | None = None) -> None:
        self.me = me
        self.roles: tuple[str, ...] = tuple(roles)
        self.options = options or PeerTableOptions()
        self.rejected: dict[str, int] = {}
        self._peers: dict[str, PeerInfo] = {}
        self._seq = 0
        self._dialed: dict[str, float] = {}
        self._newest: float | None = None  # the latest accepted presence time (the table's clock)
        self._suspected: set[str] = set()
        #: Peers counted dead (silent past the horizon, or suspected) that were heard from again:
        #: restarts, and false suspicions (a live peer whose presence came late).
        self.revived = 0

    # -- our presence -----------------------------------------------------------------

    def encode_presence(self, signer: Signer, *, roles: Iterable[str] | None = None,
                        inventory: Mapping[str, Any] | None = None, api: str | None = None,
                        addrs: Iterable[str] = (), now: float, leaving: bool = False,
                        links: Iterable[str] = (),
                        ipfs: Iterable[str] = ()) -> bytes:
        """Sign and encode this node's next presence message.

        Args:
            signer: This node's key (its peer id must be ``me``).
            roles: Roles to announce (default: the table's ``roles``).
            inventory: Inventory to announce; values other than str, int,
                bool and list are left out.
            api: This node's API URL, if it serves one.
            addrs: Listen multiaddrs; the first 8 are sent.
            now: Wall-clock seconds since the epoch (the sequence number is
                ``max(last + 1, now in ms)``).
            leaving: This node is stopping: the record carries
                ``"leaving": true`` and peers stop counting it as live at
                once (see :meth:`mark_left`) instead of after the horizon.
            links: The peers this node holds a connection to; the first 64
                are sent (none: no ``links`` key, the record of old).
            ipfs: This node's IPFS swarm multiaddrs to offer; the first 8
                are sent, under the optional ``"ipfs"`` key (absent when
                empty).

        Returns:
            The DAG-CBOR bytes to broadcast.

        Raises:
            ValueError: ``signer`` is not the key of ``me``.
        """
        if peer_id_of(signer.public) != self.me:
            raise ValueError("the signer's peer id is not this table's peer id")
        self._seq = max(self._seq + 1, int(now * 1000))
        body = {"t": PRESENCE_TYPE, "v": PRESENCE_VERSION, "peer": self.me,
                "roles": list(self.roles if roles is None else roles),
                "inv": _inventory_wire(inventory or {}), "api": api or "",
                "addrs": list(addrs)[:MAX_ADDRS], "seq": self._seq, "a": signer.public}
        offered = [a for a in ipfs if len(a) <= MAX_ADDR_LEN][:MAX_ADDRS]
        if offered:
            body["ipfs"] = offered  # optional: absent, the record is what it was before the key existed
        if leaving:
            body["leaving"] = True  # signed with the rest: nobody else can say we left
        links = list(links)[:MAX_LINKS]
        if links:
            body["links"] = links  # signed with the rest: only we vouch for our connections
        body["s"] = signer.sign(codec.encode(body))
        return codec.encode(body)

    # -- their presence ---------------------------------------------------------------

    def _reject(self, why: str) -> Received:
        self.rejected[why] = self.rejected.get(why, 0) + 1
        return Received.REJECTED

    def note_peer(self, peer: str) -> bool:
        """Remember a peer heard through other gossip (not live until its presence).

        Returns:
            True when the peer was not known before.
        """
        if peer in self._peers or peer == self.me:
            return False
        if len(self._peers) >= self.options.max_peers and not self._evict_one():
            self._reject("peer_table_full")
            return False
        self._peers[peer] = PeerInfo(peer)
        return True

    def _evict_one(self) -> bool:
        """Drop the peer not heard from for longest, unless it is still live."""
        # Peers never present first, then the longest silent; a scan, but
        # only when the table is full.
        victim = min(self._peers.values(), key=lambda p: -1.0 if p.last_seen is None else p.last_seen)
        if victim.last_seen is not None and self._newest is not None and \
                self._newest - victim.last_seen < self.options.horizon_s:
            return False
        self.forget(victim.peer_id)
        self.rejected["peer_evicted"] = self.rejected.get("peer_evicted", 0) + 1
        return True

    def receive_presence_untrusted(self, peer: str, message: bytes | Mapping[str, Any], now: float) -> Received:
        """Take a presence message that ``peer`` sent.

        Never raises: a message that is malformed, not signed by ``peer``,
        or not newer than the last one accepted changes nothing and is
        counted in :attr:`rejected`.  This node's own presence, echoed
        back, is ignored (and not counted).

        Args:
            peer: The transport's id of the sender.
            message: The message bytes, or the map they decoded to.
            now: Table-clock time of arrival.

        Returns:
            What was done with it.
        """
        obj: Any = message
        if isinstance(message, (bytes, bytearray, memoryview)):
            try:
                obj = codec.decode_untrusted(bytes(message), max_size=MAX_PRESENCE)
            except BadInput:
                return self._reject("bad_presence")
        if not isinstance(obj, Mapping):
            return self._reject("bad_presence")
        try:
            pk, sig, seq = obj["a"], obj["s"], obj.get("seq")
            if obj.get("t") != PRESENCE_TYPE or obj.get("v") != PRESENCE_VERSION:
                return self._reject("bad_presence")
            if type(peer) is not str or obj.get("peer") != peer or peer_id_of(pk) != peer:
                return self._reject("bad_presence")  # not from its signer (peer_id_of: None for a bad key)
            unsigned = codec.encode({k: v for k, v in obj.items() if k != "s"})
            if not verify_signature(pk, sig, unsigned):
                return self._reject("bad_presence")
            roles = obj.get("roles", [])
            inv = obj.get("inv")
            api = obj.get("api")
            addrs = obj.get("addrs")
            ipfs = obj.get("ipfs", [])
            info = PeerInfo(
                peer,
                roles=tuple(r for r in roles if type(r) is str and len(r) <= MAX_ROLE_LEN)[:MAX_ROLES]
                if type(roles) is list else (),
                # Served as JSON by GET /v1/peers: a peer's bytes or links must not break it.
                inventory=codec.to_json(dict(inv)) if type(inv) is dict else {},
                api=api if type(api) is str and api else None,
                addrs=tuple(a for a in addrs if type(a) is str and a.startswith("/"))[:MAX_ADDRS]
                if type(addrs) is list else (),
                last_seen=now,
                seq=seq if type(seq) is int else 0,
                links=_links_untrusted(obj.get("links")),
                ipfs=tuple(a for a in ipfs if type(a) is str and a.startswith("/") and len(a) <= MAX_ADDR_LEN)
                [:MAX_ADDRS] if type(ipfs) is list else (),
            )
        except (KeyError, TypeError, ValueError, BadInput):
            return self._reject("bad_presence")
        old = self._peers.get(peer)
        if old is None:
            # A verified signer is remembered even when its seq is bad (as gossip would).
            if not self.note_peer(peer):
                return Received.REJECTED  # table full (counted) or our own id
            old = self._peers[peer]
        if type(seq) is not int or seq <= old.seq:
            return self._reject("presence_replayed")
        if peer in self._suspected or (old.last_seen is not None and now - old.last_seen > self.options.horizon_s):
            self.revived += 1
        self._suspected.discard(peer)
        self._peers[peer] = info
        self._newest = now if self._newest is None else max(self._newest, now)
        return Received.NEW_PEER if old.last_seen is None else Received.ACCEPTED

    # -- views ------------------------------------------------------------------------

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._peers))

    def peer(self, peer: str) -> PeerInfo | None:
        """What the table knows of ``peer``, or None."""
        return self._peers.get(peer)

    def any_presence(self) -> bool:
        """Whether a presence from any peer was ever accepted."""
        return any(p.last_seen is not None for p in list(self._peers.values()))

    def is_live(self, peer: str, now: float) -> bool:
        """Whether ``peer``'s last presence is younger than the horizon (this node: always)."""
        if peer == self.me:
            return True
        p = self._peers.get(peer)
        return p is not None and p.last_seen is not None and p.last_seen >= now - self.options.horizon_s

    def live(self, now: float, role: str | None = None, *, within_s: float | None = None) -> list[str]:
        """Live peers, sorted, that run ``role`` (any role when None).

        This node counts when it runs ``role`` (always when ``role`` is None).
        ``within_s`` replaces the liveness horizon (e.g. a longer one for
        peers that are silent but were live lately).
        """
        horizon = now - (self.options.horizon_s if within_s is None else within_s)
        # list(): a C-level copy, so a reader on another thread never sees the dict change size.
        out = {p.peer_id for p in list(self._peers.values())
               if p.last_seen is not None and p.last_seen >= horizon and (role is None or role in p.roles)}
        if role is None or role in self.roles:
            out.add(self.me)
        return sorted(out)

    def inventory(self, peer: str) -> Mapping[str, Any]:
        """``peer``'s announced inventory ({} when unknown)."""
        p = self._peers.get(peer)
        return p.inventory if p is not None else {}

    def capacity(self, peer: str) -> int:
        """Tasks ``peer`` can run at once: its announced ``slots``, else its ``cpus``, else 1."""
        inv = self.inventory(peer)
        for key in ("slots", "cpus"):
            v = inv.get(key)
            if type(v) is int and v > 0:
                return v
        return 1

    def api(self, peer: str) -> str | None:
        """``peer``'s API URL, or None."""
        p = self._peers.get(peer)
        return p.api if p is not None else None

    def links(self, peer: str) -> tuple[str, ...]:
        """The peers ``peer`` said, in its last presence, it holds a connection to."""
        p = self._peers.get(peer)
        return p.links if p is not None else ()

    def addrs(self, peer: str) -> list[str]:
        """``peer``'s announced listen multiaddrs."""
        p = self._peers.get(peer)
        return list(p.addrs) if p is not None else []

    def ipfs_addrs(self, peer: str) -> list[str]:
        """``peer``'s announced IPFS swarm multiaddrs ([] when none or unknown)."""
        p = self._peers.get(peer)
        return list(p.ipfs) if p is not None else []

    def dial_addrs(self, peer: str, now: float, *, connected: bool) -> list[str]:
        """Full multiaddrs to dial ``peer`` at, or [] when not to dial now.

        Gossip reaches a node through relays, but block requests need a
        direct stream, so a peer we hear of but are not connected to is
        dialled, at most once per ``dial_interval_s``.  Calling this with a
        non-empty result records the dial.
        """
        addrs = self.addrs(peer)
        if connected or not addrs or peer == self.me:
            return []
        if now - self._dialed.get(peer, float("-inf")) < self.options.dial_interval_s:
            return []
        self._dialed[peer] = now
        return [a if "/p2p/" in a else f"{a}/p2p/{peer}" for a in addrs]

    def peer_list(self, now: float, *, connected: Mapping[str, Iterable[str]] | None = None,
                  heads: Mapping[str, Mapping[str, list[str]]] | None = None) -> list[dict[str, Any]]:
        """The peers as ``GET /v1/peers`` serves them, sorted by peer id.

        Args:
            now: Table-clock time (for ``last_seen_s``).
            connected: Connected peer ids with their connection addresses
                (from the transport); such peers are listed even if unknown.
            heads: Per peer, the heads it announced per object (from HPCP).
        """
        conn = connected or {}
        heads = heads or {}
        out = []
        for pid in sorted(set(conn) | set(self._peers)):
            p = self._peers.get(pid)
            out.append({
                "peer_id": pid,
                "connected": pid in conn,
                "addresses": list(conn.get(pid, ())),
                "roles": list(p.roles) if p else [],
                "inventory": dict(p.inventory) if p else {},
                "api": p.api if p else None,
                "last_seen_s": round(now - p.last_seen, 1) if p and p.last_seen is not None else None,
                "heads": dict(heads.get(pid, {})),
            })
        return out

    def mark_left(self, peer: str) -> None:
        """``peer`` said it is leaving (a signed presence with ``"leaving": true``, already accepted).

        It stops being live at once; its sequence number is kept, so a
        replay of an older presence cannot revive it, and its next presence
        (it restarted) makes it a new peer again.
        """
        p = self._peers.get(peer)
        if p is not None:
            self._peers[peer] = PeerInfo(peer, roles=p.roles, inventory=p.inventory, api=p.api, addrs=p.addrs,
                                         last_seen=None, seq=p.seq, ipfs=p.ipfs)  # and no links: it vouches for nobody

    def suspect(self, peer: str) -> None:
        """``peer`` seems dead (the transport lost it and could not reach it again): not live from now on.

        Like :meth:`mark_left`, but nobody said so: its next presence makes
        it live again (and counts in :attr:`revived`).
        """
        if peer in self._peers and self._peers[peer].last_seen is not None:
            self._suspected.add(peer)
            self.mark_left(peer)

    def forget(self, peer: str) -> None:
        """Drop ``peer`` (e.g. removed from the allow-list)."""
        self._peers.pop(peer, None)
        self._dialed.pop(peer, None)
        self._suspected.discard(peer)


__all__ = ["MAX_ADDRS", "MAX_LINKS", "MAX_PRESENCE", "MAX_ROLES", "PRESENCE_TYPE", "PRESENCE_VERSION", "PeerInfo",
           "PeerTable", "PeerTableOptions", "Received"]
