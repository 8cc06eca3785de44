"""A :class:`~lattice.blockstore.BlockStore` kept in an IPFS node, over its RPC API.

Blocks go in with ``block/put`` as CIDv1 sha2-256 under the block's own codec
(dag-cbor, raw, or dag-pb for the UnixFS nodes of large files), so a block meshd stores has the same CID in IPFS as in
meshd and any IPFS tool can fetch it, and a block put by another IPFS client
reads back through this store.  Pins (``pin_add`` … ``pin_update``) keep
blocks safe from the node's garbage collector.

Transport.  Calls go through ``ipfshttpclient`` 0.7.0, built as
``Client(addr, session=True)`` (its ``connect()`` refuses every daemon newer
than 0.7, Kubo included) with one keep-alive session per calling thread.  The
client has no ``block/rm`` and a broken ``swarm.connect``, so
:meth:`IpfsBlockStore.delete` and :meth:`IpfsBlockStore.swarm_connect` fall
back to plain HTTP (``httpx``, one shared keep-alive client).
Sessions, retries and error mapping live in :mod:`meshd.store._ipfs_http`.

Differences between nodes handled here (measured on js-ipfs 0.66.1, whose RPC
reports version 0.18.1, and documented for Kubo):

* ``block/put`` names the codec ``format=`` in js-ipfs and ``cid-codec=`` in
  Kubo; js-ipfs silently ignores ``cid-codec`` and stores a CIDv0 dag-pb key.
  js-ipfs also makes a dag-pb block CIDv0 unless ``version=1`` is sent (its
  other codecs are always CIDv1); Kubo's ``cid-codec`` always gives CIDv1.
  :class:`IpfsOptions.put_codec_param` picks one; ``"auto"`` asks
  ``version`` once in :meth:`IpfsBlockStore.open` (Kubo reports ``Golang``).
  Every put also checks that the CID the node answers equals ours.
* js-ipfs answers CIDs in base58btc unless ``cid-base=base32`` is sent, and
  ``block/get`` of a missing block waits forever unless ``timeout=`` is sent:
  both are always sent.
* js-ipfs has no ``pin/update`` (HTTP 404); the first :meth:`pin_update`
  detects that and from then on pins the new root before unpinning the old.
* IPFS keys blocks by multihash only, so ``refs/local`` lists digests, not
  codecs: see :meth:`IpfsBlockStore.cids`.

Swarm.  :meth:`IpfsBlockStore.swarm_identity`, :meth:`~IpfsBlockStore.swarm_peers`
and :meth:`~IpfsBlockStore.swarm_connect` (``id``, ``swarm/peers``,
``swarm/connect``) let :mod:`meshd.p2p.ipfs_swarm` connect the IPFS nodes of
a mesh to each other, so blocks also move between them by bitswap.

Errors.  A node that answers with an error to a lookup that carried a
deadline (``block/get``, ``block/stat``) is read as "block not held": the RPC
API gives no structured not-found code (both js-ipfs and Kubo answer HTTP 500
with only a message), and we do not match on message text.  A node that cannot
be reached, times out at the HTTP level, answers garbage or answers 404 for a
route raises :class:`~lattice.errors.StoreError`; no ``requests``, ``httpx`` or
``ipfshttpclient`` exception escapes.  Transport failures are retried
``IpfsOptions.retries`` times with exponential backoff; every call is
idempotent (``block/put`` is content-addressed), so a retry after a lost
answer is safe.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Iterable, Iterator, Literal

from lattice.blockstore import BlockStoreStatistics
from lattice.cid import CID, DAG_CBOR, DAG_PB, RAW
from lattice.codec import decode_untrusted
from lattice.unixfs import decode_node_untrusted
from lattice.errors import BadBlock, BadCID, BadInput, BlockNotFound, StoreError

from ._ipfs_http import RpcTransport, _Answered, _api_url

__all__ = ["IpfsBlockStore", "IpfsOptions", "IpfsStatistics"]

_CODEC_NAMES = {DAG_CBOR: "dag-cbor", RAW: "raw", DAG_PB: "dag-pb"}


def _codec_of(data: bytes) -> int:
    """The codec a block of unknown codec most likely has (see :meth:`IpfsBlockStore.cids`)."""
    for decode, codec in ((decode_untrusted, DAG_CBOR), (decode_node_untrusted, DAG_PB)):
        try:
            decode(data)
        except BadInput:
            continue
        return codec
    return RAW


@dataclass(frozen=True, slots=True)
class IpfsOptions:
    """How :class:`IpfsBlockStore` reaches its IPFS node.

    Attributes:
        api: The node's RPC API multiaddr.  Default ``/ip4/127.0.0.1/tcp/5001``.
        timeout_s: Node-side deadline (``timeout=``) for looking a block up
            (``block/get``, ``block/stat``, ``pin/add``).  A missing block costs
            this long on js-ipfs, which waits for the network.  Default 1.0.
        http_timeout_s: Client-side limit on any one HTTP request; must exceed
            ``timeout_s``.  Default 30.0.
        retries: Extra attempts after a transport failure (refused, reset, HTTP
            timeout).  Default 0: fail at once.
        retry_backoff_s: Wait before the first retry; doubles each retry.
            Default 0.1.
        retry_backoff_max_s: Cap on one wait between retries.  Default 2.0.
        put_codec_param: Query parameter naming the codec on ``block/put``:
            ``"format"`` (js-ipfs), ``"cid-codec"`` (Kubo >= 0.13) or ``"auto"``
            (ask the node's version once at open).  Default ``"auto"``.
        pin_update: ``"native"`` (``pin/update``), ``"add-rm"`` (pin new, then
            unpin old) or ``"auto"`` (try native once, fall back on HTTP 404).
            Default ``"auto"``.
        many_budget_s: Longest one :meth:`IpfsBlockStore.get_many` keeps
            looking blocks up; those not reached by then count as not held
            (and the caller asks again later).  Default 3.0.  Without it, a
            peer's want of 1,024 blocks this node lacks held a worker thread
            for 1,024 × ``timeout_s``.
    """

    api: str = "/ip4/127.0.0.1/tcp/5001"
    timeout_s: float = 1.0
    http_timeout_s: float = 30.0
    retries: int = 0
    retry_backoff_s: float = 0.1
    retry_backoff_max_s: float = 2.0
    put_codec_param: Literal["auto", "format", "cid-codec"] = "auto"
    pin_update: Literal["auto", "native", "add-rm"] = "auto"
    many_budget_s: float = 3.0

    def __post_init__(self) -> None:
        _api_url(self.api)  # raises ValueError with the reason
        if not 0 < self.timeout_s <= 3600:
            raise ValueError("timeout_s must be in (0, 3600]")
        if not self.timeout_s < self.http_timeout_s <= 3600:
            raise ValueError("http_timeout_s must exceed timeout_s and be <= 3600")
        if not 0 <= self.retries <= 100:
            raise ValueError("retries must be in [0, 100]")
        if not 0 <= self.retry_backoff_s <= self.retry_backoff_max_s <= 60:
            raise ValueError("need 0 <= retry_backoff_s <= retry_backoff_max_s <= 60")
        if self.put_codec_param not in ("auto", "format", "cid-codec"):
            raise ValueError("put_codec_param must be 'auto', 'format' or 'cid-codec'")
        if self.pin_update not in ("auto", "native", "add-rm"):
            raise ValueError("pin_update must be 'auto', 'native' or 'add-rm'")
        if not 0 < self.many_budget_s <= 3600:
            raise ValueError("many_budget_s must be in (0, 3600]")

    @property
    def api_url(self) -> str:
        """The RPC base URL, ``http://host:port/api/v0/``."""
        return _api_url(self.api)


@dataclass(frozen=True, slots=True)
class IpfsStatistics:
    """Transport counters of an :class:`IpfsBlockStore` since it was opened.

    Attributes:
        requests: RPC requests sent (each retry counts).
        retries: Requests repeated after a transport failure.
        transport_errors: Transport failures seen (refused, reset, timeout).
        http_fallback_requests: Requests sent with plain HTTP because
            ipfshttpclient lacks or breaks the call (``block/rm``, ``swarm/connect``).
        pin_update_native: Whether ``pin/update`` is used (None: not yet known).
        put_codec_param: The ``block/put`` codec parameter in use.
    """

    requests: int = 0
    retries: int = 0
    transport_errors: int = 0
    http_fallback_requests: int = 0
    pin_update_native: bool | None = None
    put_codec_param: str = ""


class IpfsBlockStore:
    """A :class:`~lattice.blockstore.BlockStore` backed by an IPFS node.

    Build it with :meth:`open`; the constructor does no I/O.  Safe to call
    from several threads: each thread gets its own keep-alive client session,
    and the counters sit under one lock.  ``put_many`` is not atomic (the RPC
    API has no transactions): a failure part-way leaves a prefix stored, which
    is harmless because blocks are content-addressed and puts idempotent.
    """

    def __init__(self, options: IpfsOptions) -> None:
        self._options = options
        self._lock = threading.Lock()
        # Sessions, retries, error mapping and the transport counters
        # (requests, retries, transport_errors, http_fallback_requests).
        self._rpc = RpcTransport(options, self._lock)
        self._opened = False
        self._codec_param = "" if options.put_codec_param == "auto" else options.put_codec_param
        self._pin_native: bool | None = {"auto": None, "native": True, "add-rm": False}[options.pin_update]
        # puts, duplicate_puts, rejected_puts, hits, misses, deletes
        self._counts = [0, 0, 0, 0, 0, 0]

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, options: IpfsOptions) -> "IpfsBlockStore":
        """Connect to the node and check it answers; detect its dialect.

        Raises:
            StoreError: the node cannot be reached or is not an IPFS RPC API.
        """
        store = cls(options)
        version = store._rpc.call("version", lambda c: c.version(opts={}))
        if not isinstance(version, Mapping) or not isinstance(version.get("Version"), str):
            raise StoreError(f"{options.api} does not look like an IPFS RPC API (bad version answer)")
        if not store._codec_param:
            # Kubo reports "Golang" and takes cid-codec=; js-ipfs takes format=.
            store._codec_param = "cid-codec" if "Golang" in version else "format"
        store._opened = True
        return store

    def close(self) -> None:
        """Close every session.  Idempotent; later calls raise :class:`StoreError`."""
        self._rpc.close()

    def __enter__(self) -> "IpfsBlockStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_ready(self) -> None:
        if self._rpc.closed:
            raise StoreError("IPFS block store is closed")
        if not self._opened:
            raise StoreError("IpfsBlockStore was not opened; use IpfsBlockStore.open(options)")

    # ------------------------------------------------------------------ blocks

    def put(self, cid: CID, data: bytes) -> None:
        """See :meth:`lattice.blockstore.BlockStore.put`.

        One ``block/put`` (no ``stat`` first: IPFS puts are idempotent, so
        ``duplicate_puts`` stays 0).

        Raises:
            BadBlock: ``data`` does not hash to ``cid``; nothing is sent.
            StoreError: the node failed, or stored the block under another CID.
        """
        self._check_ready()
        if not cid.verify(data):
            with self._lock:
                self._counts[2] += 1
            raise BadBlock(f"block bytes do not hash to {cid}")
        codec = _CODEC_NAMES.get(cid.codec)
        if codec is None:  # pragma: no cover - CID only admits our three codecs
            raise StoreError(f"unsupported codec 0x{cid.codec:x}")
        opts = {
            self._codec_param: codec,
            "mhtype": "sha2-256",
            "cid-version": "1",
            "cid-base": "base32",
        }
        if self._codec_param == "format":
            opts["version"] = "1"  # js-ipfs: dag-pb would be CIDv0 without it
        try:
            answer = self._rpc.call("block/put", lambda c: c.block.put(io.BytesIO(data), opts=opts))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused block/put of {cid}: {exc}") from None
        key = answer.get("Key") if isinstance(answer, Mapping) else None
        try:
            got = CID.parse_untrusted(key)
        except BadInput:
            raise StoreError(f"IPFS node answered block/put of {cid} with unusable key {key!r}") from None
        if got != cid:
            raise StoreError(
                f"IPFS node stored the block as {got}, not {cid} "
                f"(does it take {self._codec_param}= on block/put?)"
            )
        with self._lock:
            self._counts[0] += 1

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """See :meth:`lattice.blockstore.BlockStore.put_many`.

        Every block is verified before the first is sent, so a bad block
        stores nothing; a node failure part-way leaves a prefix stored.
        """
        self._check_ready()
        batch = list(blocks)
        for cid, data in batch:
            if not cid.verify(data):
                with self._lock:
                    self._counts[2] += 1
                raise BadBlock(f"block bytes do not hash to {cid}")
        for cid, data in batch:
            self.put(cid, data)

    def get(self, cid: CID) -> bytes:
        """See :meth:`lattice.blockstore.BlockStore.get`.

        The bytes are re-verified: a node that answers wrong bytes raises
        :class:`StoreError`.

        Raises:
            BlockNotFound: the node does not produce the block within ``timeout_s``.
            StoreError: the node failed or answered bytes that do not match.
        """
        self._check_ready()
        opts = {"timeout": self._rpc.deadline()}
        try:
            data = self._rpc.call("block/get", lambda c: c.block.get(str(cid), opts=opts))
        except _Answered as exc:
            if exc.status == 404:
                raise StoreError(f"IPFS node has no block/get route: {exc}") from None
            with self._lock:
                self._counts[4] += 1
            raise BlockNotFound(cid) from None
        if not isinstance(data, bytes) or not cid.verify(data):
            raise StoreError(f"IPFS node answered block/get of {cid} with bytes that do not match it")
        with self._lock:
            self._counts[3] += 1
        return data

    def get_many(self, cids: Iterable[CID]) -> dict[CID, bytes]:
        """See :meth:`lattice.blockstore.BlockStore.get_many`; one ``block/get`` each.

        Bounded by ``many_budget_s`` (plus the one lookup under way when it
        runs out): blocks not looked up by then are left out, as not held.
        """
        out: dict[CID, bytes] = {}
        deadline = time.monotonic() + self._options.many_budget_s
        for cid in cids:
            if time.monotonic() >= deadline:
                with self._lock:
                    self._counts[4] += 1  # counted as a miss: the caller will ask again
                break
            try:
                out[cid] = self.get(cid)
            except BlockNotFound:
                pass
        return out

    def has(self, cid: CID) -> bool:
        """See :meth:`lattice.blockstore.BlockStore.has`; one ``block/stat``.

        A missing block costs ``timeout_s`` on js-ipfs (it waits for the network).
        """
        self._check_ready()
        opts = {"timeout": self._rpc.deadline(), "cid-base": "base32"}
        try:
            self._rpc.call("block/stat", lambda c: c.block.stat(str(cid), opts=opts))
        except _Answered as exc:
            if exc.status == 404:
                raise StoreError(f"IPFS node has no block/stat route: {exc}") from None
            return False
        return True

    def _local_digests(self) -> list[bytes]:
        """Digests of every sha2-256 block the node holds (``refs/local``)."""
        try:
            refs = self._rpc.call("refs/local", lambda c: c.unstable.refs.local(opts={"cid-base": "base32"}))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused refs/local: {exc}") from None
        digests: list[bytes] = []
        for ref in refs if isinstance(refs, list) else ():
            try:
                digests.append(CID.parse_untrusted(ref.get("Ref")).digest)
            except (BadInput, AttributeError):
                # CIDv0/dag-pb, identity or other hashes: not blocks this store can name.
                continue
        return digests

    def cids(self) -> Iterator[CID]:
        """See :meth:`lattice.blockstore.BlockStore.cids`.

        IPFS keys blocks by multihash, so ``refs/local`` does not say which
        codec a block was put under.  Each block is therefore fetched and
        named dag-cbor if it is strict canonical DAG-CBOR, dag-pb if it is
        canonical dag-pb, raw otherwise: one ``block/get`` per block, and a
        raw block whose bytes happen to be canonical DAG-CBOR or dag-pb is
        listed under that codec's CID (``get`` and ``has`` work under either
        CID, since IPFS ignores the codec there).
        """
        self._check_ready()
        digests = self._local_digests()

        def gen() -> Iterator[CID]:
            for digest in digests:
                try:
                    data = self.get(CID.from_digest(RAW, digest))
                except BlockNotFound:
                    continue  # deleted since the listing
                yield CID.from_digest(_codec_of(data), digest)

        return gen()

    def size(self) -> int:
        """See :meth:`lattice.blockstore.BlockStore.size`; one ``refs/local``."""
        self._check_ready()
        return len(self._local_digests())

    def delete(self, cid: CID) -> None:
        """See :meth:`lattice.blockstore.BlockStore.delete`.

        Plain HTTP ``block/rm`` (ipfshttpclient 0.7.0 has no such call), sent
        without ``force`` so a pinned block is refused.

        Raises:
            StoreError: the node refused (e.g. the block is pinned) or failed.
        """
        self._check_ready()
        params = [("arg", str(cid)), ("cid-base", "base32")]
        try:
            answers = self._rpc.plain("block/rm", "block/rm", params)
        except _Answered as exc:
            raise StoreError(f"IPFS node refused block/rm of {cid}: {exc}") from None
        errors = [a.get("Error") for a in answers if isinstance(a, Mapping) and a.get("Error")]
        if errors:
            # block/rm reports "not found" and "pinned" alike in an Error field;
            # absent is success for us, so ask whether it is still held.
            if self.has(cid):
                raise StoreError(f"IPFS node refused to remove {cid}: {errors[0]}")
            return
        with self._lock:
            self._counts[5] += 1

    def statistics(self) -> BlockStoreStatistics:
        """See :meth:`lattice.blockstore.BlockStore.statistics`; does no I/O.

        ``blocks`` is always 0 here (counting needs a ``refs/local`` round trip;
        call :meth:`size`), and ``duplicate_puts`` is 0 because ``block/put``
        does not say whether the block was new.
        """
        with self._lock:
            c = self._counts
            return BlockStoreStatistics(
                blocks=0, puts=c[0], duplicate_puts=c[1], rejected_puts=c[2],
                hits=c[3], misses=c[4], deletes=c[5],
            )

    def ipfs_statistics(self) -> IpfsStatistics:
        """Transport counters; does no I/O."""
        with self._lock:
            n = self._rpc.net
            return IpfsStatistics(
                requests=n[0], retries=n[1], transport_errors=n[2],
                http_fallback_requests=n[3], pin_update_native=self._pin_native,
                put_codec_param=self._codec_param,
            )

    # ------------------------------------------------------------------- swarm

    def swarm_identity(self) -> tuple[str, list[str]]:
        """The node's IPFS peer id and its swarm multiaddrs, each ending in ``/p2p/<id>`` (``id``).

        Raises:
            StoreError: the node failed or answered something unusable.
        """
        self._check_ready()
        try:
            answer = self._rpc.call("id", lambda c: c.id(opts={}))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused id: {exc}") from None
        ident = answer.get("ID") if isinstance(answer, Mapping) else None
        addrs = answer.get("Addresses") if isinstance(answer, Mapping) else None
        if not isinstance(ident, str) or not ident or not isinstance(addrs, list):
            raise StoreError(f"IPFS node answered id with {str(answer)[:200]!r}")
        suffix = f"/p2p/{ident}"
        return ident, [a for a in addrs if isinstance(a, str) and a.startswith("/") and a.endswith(suffix)]

    def swarm_peers(self) -> set[str]:
        """IPFS peer ids the node is connected to now (``swarm/peers``).

        Raises:
            StoreError: the node failed.
        """
        self._check_ready()
        try:
            answer = self._rpc.call("swarm/peers", lambda c: c.swarm.peers(opts={}))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused swarm/peers: {exc}") from None
        peers = answer.get("Peers") if isinstance(answer, Mapping) else None
        return {p["Peer"] for p in peers or () if isinstance(p, Mapping) and isinstance(p.get("Peer"), str)}

    def swarm_connect(self, addr: str) -> None:
        """Connect the node to the IPFS node at ``addr`` (a multiaddr ending in ``/p2p/<id>``).

        Raises:
            StoreError: the node could not connect (within ``timeout_s`` on
                the node's side, where it honours ``timeout=``) or failed.
        """
        self._check_ready()
        # Plain HTTP: ipfshttpclient 0.7.0's swarm.connect sends every character
        # of the address as one more arg (``*(str(a) for a in address)``), which
        # js-ipfs refuses as "Invalid request query input".
        params = [("arg", addr), ("timeout", self._rpc.deadline())]
        try:
            answers = self._rpc.plain("swarm/connect", "swarm/connect", params)
        except _Answered as exc:
            raise StoreError(f"IPFS node could not swarm connect to {addr}: {exc}") from None
        errors = [a.get("Message") or a.get("Error") for a in answers if isinstance(a, Mapping)
                  and (a.get("Type") == "error" or a.get("Error"))]
        if errors:
            raise StoreError(f"IPFS node could not swarm connect to {addr}: {errors[0]}")

    # -------------------------------------------------------------------- pins

    def pin_add(self, cid: CID, recursive: bool = True) -> None:
        """Pin ``cid`` (and, if ``recursive``, every block it links to).

        Raises:
            BlockNotFound: the node could not find the block (or a linked
                block) within ``timeout_s``.
            StoreError: the node failed.
        """
        self._check_ready()
        opts = {"timeout": self._rpc.deadline(), "cid-base": "base32"}
        try:
            self._rpc.call("pin/add", lambda c: c.pin.add(str(cid), recursive=recursive, opts=opts))
        except _Answered as exc:
            if exc.status == 404:
                raise StoreError(f"IPFS node has no pin/add route: {exc}") from None
            raise BlockNotFound(cid) from None

    def pin_rm(self, cid: CID) -> None:
        """Unpin ``cid`` (pinned directly or recursively).

        Raises:
            StoreError: the node refused (e.g. ``cid`` is not pinned) or failed.
        """
        self._check_ready()
        try:
            self._rpc.call("pin/rm", lambda c: c.pin.rm(str(cid), opts={"cid-base": "base32"}))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused pin/rm of {cid}: {exc}") from None

    def pin_ls(self) -> set[CID]:
        """The directly or recursively pinned CIDs (not indirect ones).

        Pins this store cannot name (CIDv0, dag-pb, other hashes) are left out.
        """
        self._check_ready()
        try:
            answer = self._rpc.call("pin/ls", lambda c: c.pin.ls(type="all", opts={"cid-base": "base32"}))
        except _Answered as exc:
            raise StoreError(f"IPFS node refused pin/ls: {exc}") from None
        keys = answer.get("Keys") if isinstance(answer, Mapping) else None
        out: set[CID] = set()
        for key, info in (keys or {}).items():
            if isinstance(info, Mapping) and info.get("Type") == "indirect":
                continue
            try:
                out.add(CID.parse_untrusted(key))
            except BadCID:
                continue
        return out

    def pin_update(self, old: CID, new: CID) -> None:
        """Move a recursive pin from ``old`` to ``new``.

        Uses ``pin/update`` where the node has it; otherwise pins ``new`` and
        then unpins ``old``, in that order so that a crash in between leaves
        both pinned (safe, redone by the next update) rather than neither.

        Raises:
            BlockNotFound: ``new`` (or a block it links to) was not found.
            StoreError: the node failed, or ``old`` is not pinned.
        """
        self._check_ready()
        if old == new:
            return
        if self._pin_native is not False:
            opts = {"timeout": self._rpc.deadline(), "cid-base": "base32"}
            try:
                self._rpc.call("pin/update", lambda c: c.pin.update(str(old), str(new), opts=opts))
            except _Answered as exc:
                if exc.status != 404 or self._pin_native is True:
                    raise StoreError(f"IPFS node refused pin/update {old} -> {new}: {exc}") from None
                with self._lock:
                    self._pin_native = False  # route missing (js-ipfs): detected once
            else:
                with self._lock:
                    self._pin_native = True
                return
        self.pin_add(new, recursive=True)
        self.pin_rm(old)
