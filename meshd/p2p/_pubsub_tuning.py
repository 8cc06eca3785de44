"""py-libp2p 0.8.1 pubsub settings and patches that meshd's own signing makes safe.

meshd signs what it gossips (HPCP announcements, presence) and checks those
signatures itself, so py-libp2p's per-message signature and its per-RPC
signed peer record only add CPU.  :class:`~meshd.p2p.transport.Transport`
runs pubsub with ``strict_signing=False`` and uses what is here:

* :func:`message_id` — the message id once libp2p no longer signs.  Without
  a signature anyone can put any ``(from, seqno)`` on a message, so the
  default id (``from + seqno``) would let a peer pre-empt a genuine message
  with a forged one carrying the same id.  A hash over origin, seqno *and*
  data cannot be pre-empted, and a restarted node that reuses sequence
  numbers is no longer taken for a message already seen (issue 15).  The
  origin and seqno stay in the hash so identical bytes from two nodes (every
  node's ``hpcp/query`` of an object is the same) are still two messages.
* :func:`use_message_id_in_gossip` — Quirk: gossipsub's message cache keys
  messages by ``from + seqno`` whatever id function pubsub was given, so its
  IHAVE/IWANT gossip would name ids no peer has seen; the cache is replaced
  by one keyed by :func:`message_id`.
* :func:`start_seqno_from_clock` — Quirk: pubsub starts its sequence number
  at ``int(time.time())`` and adds one per message, so a node that published
  more than one message a second reuses numbers after a restart, and its
  peers' gossipsub logs "Equivocation detected" and stops forwarding them.
  Starting at the clock in nanoseconds (as go-libp2p-pubsub does) makes the
  numbers grow across restarts.
* :func:`fill_mesh_now` — Quirk: gossipsub grafts peers into its mesh only
  at its heartbeat, and publishes only to mesh peers, so a message
  published in the first heartbeat after a peer subscribed (a node that
  just started or restarted) reaches nobody through that peer.  Running
  the heartbeat's own "mesh below ``degree_low``: graft" step as soon as a
  peer subscribes lets a restarted node's first presence and announcements
  through at once (issue 15).
* :func:`idontwant_only_for_large` — Quirk: gossipsub v1.2 sends every
  mesh peer an IDONTWANT RPC for every message it receives, however small
  (go-libp2p-pubsub only above 1 KiB), so an idle mesh's presence (~550
  bytes) cost each node more control RPCs than messages (issue 16: idle
  CPU).  Below :data:`IDONTWANT_MIN_BYTES` the duplicate a peer may then
  forward costs less than the IDONTWANT that would have saved it.
* :func:`install_peer_record_caches` — the one patch of py-libp2p globals.
  pubsub attaches our signed peer record to *every* RPC and the receiver
  verifies the record on every RPC (twice for control RPCs).  Building it
  reads ``host.get_addrs()`` each time (~120 µs) and checking it is an Ed25519
  verification (~110 µs), per RPC.  No option turns this off and the field
  cannot be left out without patching every call site, so the two module
  functions pubsub and gossipsub call are wrapped with per-host caches (see
  the function).  The bytes on the wire and what the peerstore learns stay
  the same.  ``tests/test_gossip_is_signed_by_meshd_not_libp2p.py`` fails when the library's shape
  changes under these patches.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

import libp2p.pubsub.gossipsub as _gossipsub
import libp2p.pubsub.pubsub as _pubsub
from libp2p.pubsub.mcache import CacheEntry, MessageCache

__all__ = [
    "PeerRecordCacheStatistics",
    "fill_mesh_now",
    "idontwant_only_for_large",
    "install_peer_record_caches",
    "message_id",
    "peer_record_cache_statistics",
    "start_seqno_from_clock",
    "use_message_id_in_gossip",
]

#: Our own record is re-read from the host at most this often: an address
#: change (a new listener, an observed address) reaches peers within it.
OWN_RECORD_REFRESH_S: Final = 1.0
#: A peer's record, byte-identical to the one verified last from that peer,
#: is verified and stored again only after this long (it refreshes the
#: peerstore's 2-hour address TTL; nothing else changes).
PEER_RECORD_RECHECK_S: Final = 30.0
_MAX_PEERS_REMEMBERED: Final = 4096
#: Messages smaller than this get no IDONTWANT (go-libp2p-pubsub's IDontWantMessageThreshold).
IDONTWANT_MIN_BYTES: Final = 1024
#: The module functions replaced, in the pubsub modules that call them.
PATCHED_MODULES: Final = (_pubsub, _gossipsub)


def message_id(msg: Any) -> bytes:
    """The gossip message id: SHA-256 over length-prefixed origin, seqno and data."""
    h = hashlib.sha256()
    for part in (msg.from_id, msg.seqno):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(msg.data)
    return h.digest()


class _MessageCacheById(MessageCache):
    """gossipsub's message cache, keyed by :func:`message_id` (Quirk: its own ``put`` ignores pubsub's id)."""

    def put(self, msg: Any) -> None:
        mid = message_id(msg)
        if mid in self.msgs:
            return
        self.msgs[mid] = msg
        self.history[0].append(CacheEntry(mid, msg.topicIDs))


def use_message_id_in_gossip(router: Any) -> None:
    """Replace ``router``'s (empty, not yet started) message cache by one keyed by :func:`message_id`."""
    old = router.mcache
    if old.msgs:
        raise RuntimeError("the gossipsub message cache is replaced before the router runs")
    router.mcache = _MessageCacheById(old.window_size, old.history_size)


def idontwant_only_for_large(router: Any, min_bytes: int = IDONTWANT_MIN_BYTES) -> None:
    """Make ``router`` send IDONTWANT only for messages of ``min_bytes`` or more.

    gossipsub emits it from ``publish`` right after caching the message, so
    the message is looked up by id in the cache (:func:`use_message_id_in_gossip`
    first: that cache is keyed by the id the emit names).
    """
    emit = router._emit_idontwant_for_message

    async def emit_for_large(msg_id: bytes, topic_ids: Any) -> None:
        msg = router.mcache.get(msg_id)
        if msg is not None and len(msg.data) < min_bytes:
            return
        await emit(msg_id, topic_ids)

    router._emit_idontwant_for_message = emit_for_large


def start_seqno_from_clock(pubsub: Any) -> None:
    """Make ``pubsub``'s sequence numbers start at the clock in nanoseconds (8 bytes until 2262)."""
    pubsub.counter = time.time_ns()


async def fill_mesh_now(router: Any, topic: str) -> int:
    """Graft subscribed peers into ``router``'s mesh of ``topic`` now if it is below ``degree_low``.

    The same selection and GRAFT as the heartbeat's (peers in back-off are
    left out); returns how many peers were grafted.  Cancellation may leave
    a peer in the mesh whose GRAFT was not sent; the heartbeat then treats
    it as any mesh peer (the remote side grafts back or prunes).
    """
    mesh = router.mesh.get(topic)
    if mesh is None or len(mesh) >= router.degree_low:
        return 0
    chosen = router._get_in_topic_gossipsub_peers_from_minus(topic, router.degree - len(mesh), mesh, True)
    for peer in chosen:
        mesh.add(peer)
        router._notify_mesh_peer_added(peer, topic)
    for peer in chosen:
        await router.emit_graft(topic, peer)
    return len(chosen)


@dataclass(frozen=True, slots=True)
class PeerRecordCacheStatistics:
    """Counters of the peer record caches (process-wide).

    Attributes:
        own_built: Our record read from the host (py-libp2p's code ran).
        own_reused: RPCs that carried the cached bytes instead.
        peer_checked: Peers' records verified and stored (py-libp2p's code ran).
        peer_reused: RPCs whose record was byte-identical to one verified
            from the same peer less than :data:`PEER_RECORD_RECHECK_S` ago.
    """

    own_built: int
    own_reused: int
    peer_checked: int
    peer_reused: int


_counts = {"own_built": 0, "own_reused": 0, "peer_checked": 0, "peer_reused": 0}
_own: weakref.WeakKeyDictionary[Any, tuple[bytes, Any, float]] = weakref.WeakKeyDictionary()
_peers: weakref.WeakKeyDictionary[Any, dict[Any, tuple[bytes, float]]] = weakref.WeakKeyDictionary()
_originals: dict[str, Any] = {}


def peer_record_cache_statistics() -> PeerRecordCacheStatistics:
    """A snapshot of the cache counters."""
    return PeerRecordCacheStatistics(**_counts)


def _env_to_send_in_rpc(host: Any) -> tuple[bytes, bool]:
    # Reuse while the peerstore's local record is the same object (identify
    # reissues it when addresses change) and for at most OWN_RECORD_REFRESH_S
    # (get_addrs() can change without a reissue; the original then reissues).
    now = time.monotonic()
    local = host.get_peerstore().get_local_record()
    hit = _own.get(host)
    if hit is not None and hit[1] is local and now < hit[2]:
        _counts["own_reused"] += 1
        return hit[0], False
    data, new = _originals["env_to_send_in_RPC"](host)
    _own[host] = (data, host.get_peerstore().get_local_record(), now + OWN_RECORD_REFRESH_S)
    _counts["own_built"] += 1
    return data, new


def _maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
    # Skipping is sound: the bytes are exactly those the original accepted
    # from this same (Noise-authenticated) peer moments ago, so it would
    # verify the same signature and store the same record again.  One
    # difference, kept on purpose: after a newer record of the peer arrived
    # (identify), the original refuses the older bytes and drops the whole
    # RPC with its messages; we deliver them.
    if not msg.HasField("senderRecord"):
        return True
    data = msg.senderRecord
    now = time.monotonic()
    seen = _peers.get(host)
    if seen is None:
        seen = _peers[host] = {}
    hit = seen.get(peer_id)
    if hit is not None and hit[0] == data and now < hit[1]:
        _counts["peer_reused"] += 1
        return True
    ok = _originals["maybe_consume_signed_record"](msg, host, peer_id)
    _counts["peer_checked"] += 1
    if ok:
        if len(seen) >= _MAX_PEERS_REMEMBERED:
            seen.clear()
        seen[peer_id] = (data, now + PEER_RECORD_RECHECK_S)
    else:
        seen.pop(peer_id, None)
    return ok


_REPLACEMENTS: Final = {
    "env_to_send_in_RPC": _env_to_send_in_rpc,
    "maybe_consume_signed_record": _maybe_consume_signed_record,
}


def install_peer_record_caches() -> None:
    """Wrap the peer record functions pubsub and gossipsub call (idempotent, process-wide).

    Every py-libp2p host of the process gets the caches; they only skip work
    whose result is already known (see the module doc).

    Raises:
        RuntimeError: py-libp2p's pubsub no longer calls these functions
            (its shape changed: re-check this module against it).
    """
    for module in PATCHED_MODULES:
        for name, replacement in _REPLACEMENTS.items():
            current = getattr(module, name, None)
            if current is replacement:
                continue
            if current is None:
                raise RuntimeError(f"{module.__name__}.{name} is gone: re-check meshd.p2p._pubsub_tuning")
            original = _originals.setdefault(name, current)
            if current is not original:
                raise RuntimeError(f"{module.__name__}.{name} is not the function the other module calls")
            setattr(module, name, replacement)
