"""HPCP, the Hash Pointer Collaboration Protocol, as pure sync logic.

Nothing here does I/O.  :class:`Syncer` takes messages (bytes) and the current
time, and returns the messages to send; the daemon moves those bytes over
libp2p, and the tests move them over a simulated lossy network.  This is the
automerge ``sync`` shape: ``receive`` then ``generate``.

Messages (all DAG-CBOR maps with a type tag and version):

* ``hpcp/announce`` ``{t, v, g, heads, snap, seq, a, s}`` — signed: "object
  ``g`` is at ``heads`` for me".  ``seq`` grows strictly per author (a
  millisecond clock, so it survives restarts); an announcement whose ``seq``
  is not above the last one seen from that author is a replay and refused.
  This is Computes' ``<origin>:<root>``.
* ``hpcp/query`` ``{t, v, g}`` — "what are your heads of ``g``?"; answered by
  an announcement.  This is Computes' ``?<origin>``.
* ``hpcp/want`` ``{t, v, cids}`` — ask one peer for blocks.
* ``hpcp/blocks`` ``{t, v, blocks, missing}`` — the answer: ``[[cid, bytes],
  ...]`` plus the CIDs the peer does not have.

What the transport must provide: best-effort delivery.  Messages may be
dropped, duplicated, delayed or reordered; wants that get no answer time out
(:meth:`Syncer.tick`) and are asked again, from another provider if one is
known, and periodic re-announcement (anti-entropy) repairs lost
announcements.

A two-peer loop, runnable as is::

    from lattice import hpcp, goho, records, blockstore, signing
    g, _ = records.make_genesis("demo", "x")
    a, b = (goho.Replica.empty(g, blockstore.MemoryBlockStore()) for _ in "ab")
    sa, sb = signing.Signer.generate(), signing.Signer.generate()
    a.update([["add", "k", 1]], sa)
    ya, yb = hpcp.Syncer(a, sa), hpcp.Syncer(b, sb)
    inbox = [("a", None, ya.announce(0.0))]
    while inbox:
        src, dst, data = inbox.pop(0)
        for target, peer in (("a", ya), ("b", yb)):
            if target != src and dst in (None, target):
                inbox += [(target, o.to, o.data) for o in peer.receive_untrusted(src, data, 0.0)]
    assert b.state.count("k") == 1
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import codec, records
from .cid import CID
from .errors import BadInput, BadMessage, BadRecord, BlockNotFound
from .goho import BlockSource, Replica
from .signing import Signer, verify_signature

#: Largest HPCP message the decoder accepts (bytes).
MAX_MESSAGE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: ``to`` a peer id, or to every peer when None."""

    to: str | None
    data: bytes


@dataclass(frozen=True)
class SyncOptions:
    """Options of the sync logic.

    Attributes:
        batch: Most CIDs in one want (default 256).
        max_inflight: Most wants outstanding at once, over all peers (8).
        want_timeout_s: Seconds before an unanswered want is retried (5.0).
        max_blocks_bytes: Most block bytes served in one answer (4 MiB).
        max_future_s: An announcement ``seq`` more than this far ahead of our
            clock is refused, so one forged message cannot freeze an author out
            (default 600).
    """

    batch: int = 256
    max_inflight: int = 8
    want_timeout_s: float = 5.0
    max_blocks_bytes: int = 4 * 1024 * 1024
    max_future_s: float = 600.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_inflight < 1:
            raise ValueError("batch and max_inflight must be >= 1")
        if self.want_timeout_s <= 0:
            raise ValueError("want_timeout_s must be > 0")


@dataclass(slots=True)
class SyncStatistics:
    announces_in: int = 0
    announces_out: int = 0
    queries_in: int = 0
    wants_out: int = 0
    wants_in: int = 0
    blocks_in: int = 0
    blocks_out: int = 0
    deltas_applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0


# -- encoding -------------------------------------------------------------------


def encode_announce(signer: Signer, genesis: CID, heads: Iterable[CID], seq: int, snap: CID | None = None) -> bytes:
    body: dict[str, Any] = {
        "t": "hpcp/announce",
        "v": 1,
        "g": genesis,
        "heads": sorted(heads),
        "snap": snap,
        "seq": seq,
        "a": signer.public,
    }
    body["s"] = signer.sign(codec.encode(body))
    return codec.encode(body)


def encode_query(genesis: CID) -> bytes:
    return codec.encode({"t": "hpcp/query", "v": 1, "g": genesis})


def encode_want(cids: Iterable[CID]) -> bytes:
    return codec.encode({"t": "hpcp/want", "v": 1, "cids": list(cids)})


def encode_blocks(blocks: list[tuple[CID, bytes]], missing: list[CID]) -> bytes:
    return codec.encode({"t": "hpcp/blocks", "v": 1, "blocks": [[c, d] for c, d in blocks], "missing": missing})


def decode_message_untrusted(data: bytes, *, verify: bool = True) -> dict[str, Any]:
    """Decode and shape-check any HPCP message; raise BadMessage/BadEncoding.

    With ``verify=False`` an announcement's signature is not checked here; the
    caller must call :func:`verify_announce` before acting on it (the syncer
    does, after the cheap replay and "nothing new" checks).
    """
    obj = codec.decode_untrusted(data, max_size=MAX_MESSAGE)
    if type(obj) is not dict or obj.get("v") != 1:
        raise BadMessage("not an HPCP v1 message")
    t = obj.get("t")
    if t == "hpcp/announce":
        if set(obj) != {"t", "v", "g", "heads", "snap", "seq", "a", "s"}:
            raise BadMessage("announce has wrong fields")
        heads = obj["heads"]
        if (
            type(obj["g"]) is not CID
            or type(heads) is not list
            or len(heads) > records.MAX_PARENTS
            or any(type(h) is not CID for h in heads)
            or (obj["snap"] is not None and type(obj["snap"]) is not CID)
            or type(obj["seq"]) is not int
            or obj["seq"] < 0
            # The author keys the replay table: it must be hashable bytes.
            or type(obj["a"]) is not bytes
            or type(obj["s"]) is not bytes
        ):
            raise BadMessage("announce fields have wrong types")
        if verify:
            verify_announce(obj)
    elif t == "hpcp/query":
        if set(obj) != {"t", "v", "g"} or type(obj["g"]) is not CID:
            raise BadMessage("query has wrong fields")
    elif t == "hpcp/want":
        cids = obj.get("cids")
        if set(obj) != {"t", "v", "cids"} or type(cids) is not list or len(cids) > 4096:
            raise BadMessage("want has wrong fields")
        if any(type(c) is not CID for c in cids):
            raise BadMessage("want must list links")
    elif t == "hpcp/blocks":
        blocks, missing = obj.get("blocks"), obj.get("missing")
        if set(obj) != {"t", "v", "blocks", "missing"} or type(blocks) is not list or type(missing) is not list:
            raise BadMessage("blocks has wrong fields")
        for b in blocks:
            if type(b) is not list or len(b) != 2 or type(b[0]) is not CID or type(b[1]) is not bytes:
                raise BadMessage("blocks entries must be [cid, bytes]")
        if any(type(c) is not CID for c in missing):
            raise BadMessage("missing must list links")
    else:
        raise BadMessage(f"unknown HPCP message type {t!r}")
    return obj


def verify_announce(obj: dict[str, Any]) -> None:
    """Raise BadMessage unless the decoded announcement's signature verifies."""
    unsigned = {k: v for k, v in obj.items() if k != "s"}
    if not verify_signature(obj["a"], obj["s"], codec.encode(unsigned)):
        raise BadMessage("announce signature does not verify")


def peek_genesis_untrusted(data: bytes) -> CID | None:
    """The object an announce/query is about (to route it), else None."""
    obj = decode_message_untrusted(data, verify=False)
    return obj.get("g")


def serve_want(store: BlockSource, cids: Iterable[CID], max_bytes: int, *, ancestors: int = 256) -> bytes:
    """Answer a want from ``store``: the blocks we have (up to ``max_bytes``).

    Besides the CIDs asked for, the answer carries up to ``ancestors`` of
    their ancestor deltas (breadth first), so a peer walking a long history
    down from its heads needs one round trip per batch rather than one per
    delta.  Blocks that did not fit are simply left out: the asker asks again.
    """
    blocks: list[tuple[CID, bytes]] = []
    missing: list[CID] = []
    sent: set[CID] = set()
    total = 0
    queue: list[CID] = []
    for cid in cids:
        if cid in sent:
            continue
        try:
            data = store.get(cid)
        except BlockNotFound:
            missing.append(cid)
            continue
        if blocks and total + len(data) > max_bytes:
            continue
        blocks.append((cid, data))
        sent.add(cid)
        total += len(data)
        queue.append(cid)
    extra = 0
    while queue and extra < ancestors:
        cid = queue.pop(0)
        data = dict(blocks).get(cid) if len(blocks) < 64 else None
        if data is None:
            try:
                data = store.get(cid)
            except BlockNotFound:
                continue
        parents = _delta_parents(data)
        for p in parents:
            if p in sent or extra >= ancestors:
                continue
            try:
                pdata = store.get(p)
            except BlockNotFound:
                continue
            if total + len(pdata) > max_bytes:
                queue = []
                break
            blocks.append((p, pdata))
            sent.add(p)
            total += len(pdata)
            extra += 1
            queue.append(p)
    return encode_blocks(blocks, missing)


def _delta_parents(data: bytes) -> list[CID]:
    """Parent links of a stored delta block (empty for any other block)."""
    try:
        obj = codec.decode_trusted(data)
    except Exception:  # noqa: BLE001 - not a delta: no ancestors to add
        return []
    if type(obj) is dict and obj.get("t") == "goho/delta" and type(obj.get("p")) is list:
        return [c for c in obj["p"] if type(c) is CID]
    return []


class Syncer:
    """The HPCP state of one local replica towards all peers."""

    def __init__(self, replica: Replica, signer: Signer, options: SyncOptions | None = None) -> None:
        self.replica = replica
        self.signer = signer
        self.options = options or SyncOptions()
        self._seq = 0
        self._last_seq: dict[bytes, int] = {}
        self._providers: dict[CID, set[str]] = {}  # wanted CID -> peers that should have it
        self._inflight: dict[CID, tuple[str, float]] = {}
        self._peer_heads: dict[str, tuple[CID, ...]] = {}
        self._snap: CID | None = None  # snapshot being fetched
        self._snap_obj: records.Snapshot | None = None
        self._snap_parts: dict[CID, dict[str, Any] | None] = {}
        self._deferred_heads: dict[CID, set[str]] = {}
        self._backoff: dict[str, float] = {}  # peer -> time before which we do not ask it
        self._failures: dict[str, int] = {}
        self.stats = SyncStatistics()

    # -- generating ------------------------------------------------------------------

    def announce(self, now: float) -> bytes:
        """A signed announcement of our current heads."""
        self._seq = max(self._seq + 1, int(now * 1000))
        self.stats.announces_out += 1
        return encode_announce(self.signer, self.replica.genesis, self.replica.heads, self._seq, self.replica.base)

    def query(self) -> bytes:
        return encode_query(self.replica.genesis)

    @property
    def syncing(self) -> bool:
        """True while blocks are wanted (a fetch is in progress)."""
        return bool(self._providers) or self._snap is not None

    def peer_heads(self) -> dict[str, tuple[CID, ...]]:
        return dict(self._peer_heads)

    def statistics(self) -> SyncStatistics:
        return self.stats

    # -- receiving -----------------------------------------------------------------------

    def _reject(self, why: str) -> None:
        self.stats.rejected[why] = self.stats.rejected.get(why, 0) + 1

    def receive_untrusted(self, peer: str, data: bytes, now: float) -> list[Outgoing]:
        """Handle one message from ``peer``; return what to send next.

        Invalid input is counted in ``statistics().rejected`` and dropped; it
        never raises, so one bad peer cannot stop the loop.
        """
        try:
            msg = decode_message_untrusted(data, verify=False)
        except BadInput as exc:
            self._reject(type(exc).__name__)
            return []
        t = msg["t"]
        if t == "hpcp/announce":
            return self._on_announce(peer, msg, now)
        if t == "hpcp/query":
            if msg["g"] != self.replica.genesis:
                return []
            self.stats.queries_in += 1
            return [Outgoing(peer, self.announce(now))]
        if t == "hpcp/want":
            self.stats.wants_in += 1
            return [Outgoing(peer, serve_want(self.replica.store, msg["cids"][: self.options.batch * 4], self.options.max_blocks_bytes))]
        return self._on_blocks(peer, msg, now)

    def _on_announce(self, peer: str, msg: dict[str, Any], now: float) -> list[Outgoing]:
        if msg["g"] != self.replica.genesis:
            return []
        author, seq = msg["a"], msg["seq"]
        if seq <= self._last_seq.get(author, -1):
            self._reject("replayed")
            return []
        if seq > (now + self.options.max_future_s) * 1000:
            self._reject("future")
            return []
        heads = tuple(msg["heads"])
        unknown = [h for h in heads if not self.replica.is_known(h)]
        if not unknown and self._peer_heads.get(peer) == heads:
            # Nothing new: skip the signature check (the costly part of an
            # announcement) since nothing will change.
            return []
        try:
            verify_announce(msg)
        except BadMessage:
            self._reject("bad_signature")
            return []
        self._last_seq[author] = seq
        self.stats.announces_in += 1
        self._peer_heads[peer] = heads
        if not unknown:
            return []
        snap = msg["snap"]
        if snap is not None and self.replica.version == 0 and self._snap is None and not self.replica.is_known(snap):
            self._snap = snap
            self._providers.setdefault(snap, set()).add(peer)
        for h in unknown:
            if self._snap is not None:
                self._deferred_heads.setdefault(h, set()).add(peer)
            else:
                self._providers.setdefault(h, set()).add(peer)
        # A peer that claims heads we lack holds their whole history: it can
        # also serve the CIDs that are stuck without a provider.
        for cid, provs in self._providers.items():
            if not provs:
                provs.add(peer)
        return self._plan(now)

    def _on_blocks(self, peer: str, msg: dict[str, Any], now: float) -> list[Outgoing]:
        # The want this answers: CIDs it asked for that are neither in the
        # answer nor reported missing were left out for size; release them so
        # the next plan asks again right away instead of after the timeout.
        answered = {c for c, _ in msg["blocks"]} | set(msg["missing"])
        groups = {self._inflight[c] for c in answered if c in self._inflight and self._inflight[c][0] == peer}
        for cid in [c for c, g in self._inflight.items() if g in groups and c not in answered]:
            del self._inflight[cid]
        self._failures.pop(peer, None)
        self._backoff.pop(peer, None)
        for cid in msg["missing"]:
            if self._inflight.get(cid, ("",))[0] == peer:
                del self._inflight[cid]
                provs = self._providers.get(cid)
                if provs is not None:
                    provs.discard(peer)
        for cid, data in msg["blocks"]:
            self.stats.blocks_in += 1
            if cid not in self._providers:
                if not self.replica.is_awaited(cid):
                    continue  # unsolicited or duplicate
                self._providers[cid] = {peer}  # an ancestor sent along: a pending delta waits on it
            self._inflight.pop(cid, None)
            try:
                self._take_block(peer, cid, data)
            except BadInput as exc:
                self._reject(type(exc).__name__)
                provs = self._providers.get(cid)
                if provs is not None:
                    provs.discard(peer)
                continue
            self._providers.pop(cid, None)
        return self._plan(now)

    def _take_block(self, peer: str, cid: CID, data: bytes) -> None:
        if cid == self._snap:
            snap = records.snapshot_from_untrusted(cid, data)
            if snap.genesis != self.replica.genesis:
                raise BadRecord("snapshot of another object")
            self.replica.store.put(cid, data)
            self._snap_obj = snap
            for part in snap.parts:
                self._snap_parts[part] = None
                self._providers.setdefault(part, set()).add(peer)
            self._maybe_install()
            return
        if cid in self._snap_parts:
            self._snap_parts[cid] = records.part_from_untrusted(cid, data)
            self.replica.store.put(cid, data)
            self._providers.pop(cid, None)
            self._maybe_install()
            return
        receipt = self.replica.receive_untrusted(cid, data)
        self.stats.deltas_applied += len(receipt.applied)
        for parent in receipt.missing:
            if not self.replica.is_known(parent):
                self._providers.setdefault(parent, set()).add(peer)

    def _maybe_install(self) -> None:
        snap = self._snap_obj
        if snap is None or any(v is None for v in self._snap_parts.values()):
            return
        parts = [self._snap_parts[c] for c in snap.parts]
        self.replica.install_snapshot(snap, parts)  # type: ignore[arg-type]
        self._snap, self._snap_obj, self._snap_parts = None, None, {}
        for h, provs in self._deferred_heads.items():
            if not self.replica.is_known(h):
                self._providers.setdefault(h, set()).update(provs)
        self._deferred_heads = {}

    # -- planning -------------------------------------------------------------------------

    def request_failed(self, peer: str, now: float) -> list[Outgoing]:
        """The transport could not reach ``peer``: re-plan its wants elsewhere now.

        ``peer`` stays a provider only where it is the only one (it may come
        back); the timeout path would reach the same state, just later.
        """
        for cid in [c for c, (p, _) in self._inflight.items() if p == peer]:
            del self._inflight[cid]
            provs = self._providers.get(cid)
            if provs is not None and len(provs) > 1:
                provs.discard(peer)
        # Back off from that peer (exponentially, up to want_timeout_s): an
        # unreachable sole provider must not be asked again in a tight loop.
        n = self._failures.get(peer, 0) + 1
        self._failures[peer] = n
        self._backoff[peer] = now + min(self.options.want_timeout_s, 0.25 * 2 ** min(n, 8))
        return self._plan(now)

    def tick(self, now: float) -> list[Outgoing]:
        """Expire unanswered wants and plan new ones; call it periodically."""
        expired = [c for c, (_, deadline) in self._inflight.items() if deadline <= now]
        if expired:
            self.stats.timeouts += 1
            for c in expired:
                peer, _ = self._inflight.pop(c)
                provs = self._providers.get(c)
                # Rotate: try another provider first, but keep this one as a
                # fallback (a dropped message is not a dead peer).
                if provs is not None and len(provs) > 1:
                    provs.discard(peer)
        return self._plan(now)

    def _plan(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        # Drop wants we no longer need (applied via another path).
        for cid in [c for c in self._providers if self.replica.is_known(c)]:
            self._providers.pop(cid, None)
            self._inflight.pop(cid, None)
        outstanding = len(set(self._inflight.values()))
        if outstanding >= self.options.max_inflight:
            return out
        by_peer: dict[str, list[CID]] = {}
        for cid, provs in self._providers.items():
            if cid in self._inflight or not provs:
                continue
            ready = [p for p in provs if self._backoff.get(p, 0.0) <= now]
            if not ready:
                continue  # every provider is backing off; tick() plans again later
            peer = min(ready, key=lambda p: (len(by_peer.get(p, ())), p))
            lst = by_peer.setdefault(peer, [])
            if len(lst) < self.options.batch:
                lst.append(cid)
        deadline = now + self.options.want_timeout_s
        for peer in sorted(by_peer, key=lambda p: -len(by_peer[p])):
            if outstanding >= self.options.max_inflight:
                break
            cids = by_peer[peer]
            for c in cids:
                self._inflight[c] = (peer, deadline)
            outstanding += 1
            self.stats.wants_out += 1
            out.append(Outgoing(peer, encode_want(cids)))
        return out
