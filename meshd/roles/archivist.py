"""The Archivist role: pin every object's newest version, keep its history.

Whitepaper §4.1 ``Pin(hash, [genesis])``.  The role watches every GOHO the
node follows (:meth:`ObjectHost.subscribe` listeners fire for local commits and merges
from peers alike).  When an object changes it captures a *version root* (see
:mod:`meshd.store.archive`), pins it recursively and unpins the object's previous
root (``pin/update`` where the store has it, else pin-new-then-unpin-old).
Bursts are coalesced: at most one pin per object per ``interval_s``, and the
newest state is always captured at the trailing edge of a burst.

It also pins result outputs (the ``output`` of every authentic result record)
and engine blobs (the file CIDs of every manifest in the engines registry),
so a storage node keeps them even if an object's DAG cannot be pinned whole.

Pins live in the IPFS node when ``[ipfs] api`` is set; with the embedded
store the ``pins`` table of ``<home>/archive.db`` is the pin set.  Each
placed version is also announced, signed, in the mesh's ``pins`` GOHO (at
most once per object per ``announce_interval_s``): it is what lets nodes
under a storage budget drop their copies (:mod:`meshd.store.collector`), so
with the embedded store a version is announced only once its whole DAG is in
the store (missing blocks are fetched first).

Failure handling: a store that fails (IPFS down) or a DAG with a missing
block leaves the previous pin in place; the object is retried with
exponential backoff and the pin set is reconciled against the index first,
so a crash or failure between "pin new" and "unpin old" never leaks a pin.

Routes (mounted even when the role is off, then answering 404
``archivist_disabled``): ``GET /v1/archive``, ``GET /v1/archive/{genesis}``,
``GET /v1/archive/{genesis}/{version}``, ``GET /v1/pins``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio
from engines.errors import EngineError
from engines.manifest import load_manifest
from lattice import codec, goho, results
from lattice.cid import CID
from lattice.errors import BadCID, BlockNotFound, LatticeError
from lattice.state import decode_value

from ..store.archive import (
    PINS, ArchiveIndex, IpfsPinner, LocalPinner, Pinner, PinsView, dag_blocks, pin_op, pin_record,
    version_from_untrusted, version_record,
)
from ..api.archive import ArchiveUnavailable, router
from ..errors import MeshdError, NotFound
from ..runtime.logs import get_logger
from .archivist_options import ArchivistOptions
from .pinholder import PinHolder, PinHolderNode

if TYPE_CHECKING:
    from lattice.blockstore import BlockStore
    from lattice.signing import Signer

    from ..home import Home
    from ..store.objects import Followed
    from . import RoleContext

log = get_logger("meshd.archivist")

#: Most missing blocks asked of the mesh per announcement turn.
_WHOLE_FETCH = 256

__all__ = ["ArchiveObjects", "ArchiveUnavailable", "Archivist", "ArchivistNode", "ArchivistOptions", "ArchivistStatistics", "create", "router"]


@runtime_checkable
class ArchiveObjects(Protocol):
    """The object host as the archivist uses it (``meshd.store.objects.ObjectHost``)."""

    @property
    def signer(self) -> Signer:
        """Signs the pins announcements."""
        ...

    @property
    def objects(self) -> Mapping[CID, Followed]:
        """Every followed object by genesis (each one is archived)."""
        ...

    def get(self, genesis: CID) -> Followed | None: ...

    def subscribe(self, listener: Callable[[Followed], None]) -> Callable[[], None]:
        """Call ``listener(obj)`` after every change; returns the unsubscribe function."""
        ...

    async def follow_async(self, kind: str, name: str, nonce: bytes = ..., *,
                           genesis: CID | None = ...) -> Followed: ...

    async def commit(self, obj: Followed, ops: list[list[Any]], blocks: list[tuple[CID, bytes]] = ...) -> None: ...


@runtime_checkable
class ArchivistNode(PinHolderNode, Protocol):
    """What the archivist uses of the node (``meshd.node.Node`` satisfies it),
    its pin holder's needs included."""

    @property
    def store(self) -> BlockStore:
        """Where versions are written and pinned (the embedded store's pins live in the index)."""
        ...

    @property
    def objects(self) -> ArchiveObjects: ...

    @property
    def results_obj(self) -> Followed:
        """The results object: every result's output is pinned."""
        ...

    @property
    def results_view(self) -> results.ResultsView: ...

    @property
    def engines_obj(self) -> Followed:
        """The engine registry: every manifest's files are pinned."""
        ...


@dataclass(frozen=True)
class ArchivistStatistics:
    """What the archivist has done since it started.

    Attributes:
        store: ``"ipfs"`` or ``"embedded"``.
        objects: Objects with a pinned version.
        versions: Versions pinned since start.
        pins: Pins held (versions, outputs, engine files).
        failures: Failed pin attempts since start.
        pending_objects: Objects changed and not yet captured.
        pending_blobs: Output/engine blobs waiting to be pinned.
        announced: Pin records added to the pins GOHO since start.
        last_error: The most recent failure, or "".
    """

    store: str
    objects: int
    versions: int
    pins: int
    failures: int
    pending_objects: int
    pending_blobs: int
    announced: int
    last_error: str


def _now_ms() -> int:
    return int(time.time() * 1000)


class Archivist:
    """The archivist role.  Construction does no I/O; :meth:`serve` opens the index."""

    name = "archivist"

    def __init__(self, node: ArchivistNode, home: Home, config: Any, options: ArchivistOptions) -> None:
        self.node = node
        self.home = home
        self.config = config
        self.options = options
        self.index: ArchiveIndex | None = None
        self.pinner: Pinner | None = None
        self.pins_view: PinsView | None = None
        self.holder: PinHolder | None = None
        self._pins_obj: Any = None
        self._serving = False
        self._wake = trio.Event()
        self._dirty: dict[CID, None] = {}
        self._next_ok: dict[CID, float] = {}
        self._last_heads: dict[CID, tuple[CID, ...]] = {}
        self._fails: dict[CID, int] = {}
        self._announce: dict[CID, CID] = {}
        self._announced_at: dict[CID, float] = {}
        self._announce_retry_at = -math.inf
        self._whole_dag: dict[CID, set[CID]] = {}  # genesis -> blocks of its last announced version's whole DAG
        self._outputs: set[CID] = set()
        self._results_cursor: Any = None  # lattice.goho.Cursor over the results, while serving
        self._engines_dirty = False
        self._blobs_retry_at = -math.inf
        self._blob_fails = 0
        self._reconcile = True
        self._reconcile_at = -math.inf
        self._reconcile_fails = 0
        self._counts = {"versions": 0, "failures": 0, "announced": 0}
        self._last_error = ""

    @property
    def store_kind(self) -> str:
        return "ipfs" if self.config.ipfs.api else "embedded"

    # ------------------------------------------------------------------ service

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Archive until cancelled.

        Cancellation waits for a pin call already running in a worker thread
        (it cannot be interrupted) and leaves the index consistent: a version
        whose pin was not committed stays ``pinning`` and is reconciled on the
        next start.
        """
        node = self.node
        self.index = await trio.to_thread.run_sync(ArchiveIndex.open, self.home.path / "archive.db")
        unsubscribe: Any = None
        try:
            if self.config.ipfs.api:
                self.pinner = IpfsPinner(self.config.ipfs.api, self.options.pin_timeout_s)
            else:
                self.pinner = LocalPinner(node.store, self.index)
            self._pins_obj = await node.objects.follow_async(PINS, self.config.node.mesh)
            self.pins_view = PinsView(self._pins_obj.replica)
            for g in list(node.objects.objects):
                cur = self.index.current(g)
                if cur is not None:
                    self._last_heads[g] = cur.heads
                self._dirty[g] = None
            if self.options.pin_results:
                self._results_cursor = node.results_obj.replica.cursor()
                for key in node.results_obj.replica.state.set_keys():
                    try:
                        task = CID.parse_untrusted(key)
                    except BadCID:
                        continue
                    self._outputs.update(r["output"] for r in node.results_view.results(task))
            self._engines_dirty = self.options.pin_engines
            unsubscribe = node.objects.subscribe(self._on_change)
            self._serving = True
            async with trio.open_nursery() as nursery:
                # The pinset's share of this archivist (meshd.roles.pinholder); the
                # version pins below stay, as the automatic policy.
                self.holder = PinHolder(node, self.config.node.mesh, node.objects.signer, self.pinner, self.index,
                                        self.home.path)
                await nursery.start(self.holder.serve)
                task_status.started()
                await self._loop()
        finally:
            self._serving = False
            if unsubscribe is not None:
                unsubscribe()
            if self._results_cursor is not None:
                self._results_cursor.close()
                self._results_cursor = None
            if self.pinner is not None:
                self.pinner.close()
            self.index.close()

    def _on_change(self, obj: Any) -> None:
        # Called synchronously by ObjectHost after a change: record, never block.
        if not self._serving:
            return
        if obj is self.node.results_obj and self._results_cursor is not None:
            for change in self._results_cursor.pull():
                self._on_results(change)
        self._dirty[obj.genesis] = None
        if obj.genesis == self.node.engines_obj.genesis and self.options.pin_engines:
            self._engines_dirty = True
        self._wake.set()

    def _on_results(self, change: Any) -> None:
        if not self._serving:
            return
        author = change.delta.author  # a v2 record is authentic only in its runner's delta
        for _key, enc in change.adds:
            rec = decode_value(enc)
            if results.verify_result_record(rec, author):
                self._outputs.add(rec["output"])

    async def _loop(self) -> None:
        while True:
            now = trio.current_time()
            if self._reconcile and now >= self._reconcile_at:
                await self._reconcile_pins()
            if not self._reconcile:
                for g in [g for g in self._dirty if now >= self._next_ok.get(g, -math.inf)]:
                    await self._capture(g)
                if (self._outputs or self._engines_dirty) and now >= self._blobs_retry_at:
                    await self._pin_blobs()
            if self._announce and trio.current_time() >= self._announce_retry_at:
                await self._announce_due()
            self._wake = trio.Event()  # reset before computing: a change after this wakes the wait
            wake_at = self._next_wake()
            if wake_at > trio.current_time():
                with trio.move_on_at(wake_at):
                    await self._wake.wait()

    def _next_wake(self) -> float:
        times = [math.inf]
        if self._reconcile:
            times.append(self._reconcile_at)
        else:
            times += [self._next_ok.get(g, -math.inf) for g in self._dirty]
            if self._outputs or self._engines_dirty:
                times.append(self._blobs_retry_at)
        if self._announce:
            times += [max(self._announce_retry_at, self._announced_at.get(g, -math.inf)
                          + self.options.announce_interval_s) for g in self._announce]
        return min(times)

    def _backoff(self, fails: int) -> float:
        return min(self.options.retry_max_s, self.options.retry_s * 2 ** max(0, fails - 1))

    def _failed(self, what: str, exc: BaseException) -> None:
        self._counts["failures"] += 1
        self._last_error = f"{what}: {exc}"[:500]
        log.warning("archive_failed", what=what, error=repr(exc)[:300])

    # ------------------------------------------------------------------ versions

    async def _capture(self, g: CID) -> None:
        obj = self.node.objects.get(g)
        self._dirty.pop(g, None)
        if obj is None:
            return
        rep = obj.replica
        heads = tuple(rep.heads)
        if not heads or heads == self._last_heads.get(g):
            return
        height, base = rep.height, rep.base
        try:
            root = await trio.to_thread.run_sync(self._pin_version, obj.genesis, obj.kind, obj.name, heads,
                                                 height, base)
        except (LatticeError, MeshdError) as exc:
            # The previous pin stays.  Retry later; reconcile first in case the
            # failure fell between pinning the new root and unpinning the old.
            fails = self._fails[g] = self._fails.get(g, 0) + 1
            self._failed(f"pin {obj.kind}/{obj.name}", exc)
            self._dirty[g] = None
            self._next_ok[g] = trio.current_time() + self._backoff(fails)
            self._reconcile = True
            return
        self._fails.pop(g, None)
        self._next_ok[g] = trio.current_time() + self.options.interval_s
        self._last_heads[g] = heads
        self._counts["versions"] += 1
        if g != self._pins_obj.genesis:  # announcing the pins object would never settle
            self._announce[g] = root

    def _pin_version(self, g: CID, kind: str, name: str, heads: tuple[CID, ...], height: int,
                     base: CID | None) -> CID:
        """Worker thread.  Order: root block, intent row, pin, then the index commit."""
        assert self.index is not None and self.pinner is not None
        cur = self.index.current(g)
        at = _now_ms()
        root, data = codec.encode_block(version_record(g, heads, height, at, prev=cur.root if cur else None,
                                                       base=base))
        self.node.store.put(root, data)
        # The intent row is written before the pin so that reconciliation can
        # find (and unpin) a root whose pin was placed but never committed.
        self.index.record_intent(g, kind, name, root, heads, height, at)
        if cur is None:
            self.pinner.add(root)
        else:
            self.pinner.move(cur.root, root)
        self.index.commit_version(g, root, at)
        return root

    async def _reconcile_pins(self) -> None:
        try:
            await trio.to_thread.run_sync(self._reconcile_sync)
        except (LatticeError, MeshdError) as exc:
            self._reconcile_fails += 1
            self._failed("reconcile pins", exc)
            self._reconcile_at = trio.current_time() + self._backoff(self._reconcile_fails)
            return
        self._reconcile = False
        self._reconcile_fails = 0

    def _reconcile_sync(self) -> None:
        """Worker thread: make the pin set equal the index's (re-pin missing, unpin stale)."""
        assert self.index is not None and self.pinner is not None
        pinned = self.pinner.ls()
        for row in self.index.pins():
            if row.cid not in pinned:
                try:
                    self.pinner.add(row.cid)
                except BlockNotFound:
                    log.warning("repin_missing_block", cid=str(row.cid), purpose=row.purpose)
        for root in self.index.stale_roots() & pinned:
            self.pinner.rm(root)
        self.index.forget_intents()

    # ------------------------------------------------------------------ blobs

    async def _pin_blobs(self) -> None:
        batch = set(sorted(self._outputs)[: self.options.blob_batch]) if self.options.pin_results else set()
        manifests: list[CID] = []
        engines_dirty = self._engines_dirty
        if engines_dirty:
            for key in self.node.engines_obj.replica.state.set_keys():
                try:
                    manifests.append(CID.parse_untrusted(key))
                except BadCID:
                    continue
        self._engines_dirty = False
        try:
            done, incomplete = await trio.to_thread.run_sync(self._pin_blobs_sync, batch, manifests)
        except (LatticeError, MeshdError) as exc:
            self._engines_dirty = self._engines_dirty or engines_dirty
            self._blob_fails += 1
            self._failed("pin blobs", exc)
            self._blobs_retry_at = trio.current_time() + self._backoff(self._blob_fails)
            return
        self._outputs -= done
        self._blob_fails = 0 if not incomplete else self._blob_fails + 1
        if incomplete:
            # Blocks not here yet (they come with the mesh): try again later.
            self._engines_dirty = self._engines_dirty or engines_dirty
            self._blobs_retry_at = trio.current_time() + self._backoff(self._blob_fails)

    def _pin_blobs_sync(self, outputs: set[CID], manifests: list[CID]) -> tuple[set[CID], bool]:
        """Worker thread: pin outputs and engine files; ``(pinned outputs, anything missing)``."""
        assert self.index is not None and self.pinner is not None
        done: set[CID] = set()
        incomplete = False
        node = self.node
        for cid in sorted(outputs):
            if not self.index.has_pin(cid):
                try:
                    self.pinner.add(cid)
                except BlockNotFound:
                    incomplete = True
                    continue
                self.index.add_pin(cid, "result", node.results_obj.genesis, _now_ms())
            done.add(cid)
        for m in manifests:
            try:
                files = load_manifest(node.store, m).links()
            except (EngineError, BlockNotFound):
                incomplete = True
                continue
            for f in files:
                if self.index.has_pin(f):
                    continue
                try:
                    self.pinner.add(f)
                except BlockNotFound:
                    incomplete = True
                    continue
                self.index.add_pin(f, "engine", node.engines_obj.genesis, _now_ms())
        return done, incomplete

    # ------------------------------------------------------------------ announcing

    async def _announce_due(self) -> None:
        now = trio.current_time()
        due = [(g, r) for g, r in self._announce.items()
               if now >= self._announced_at.get(g, -math.inf) + self.options.announce_interval_s]
        if due and self.store_kind == "embedded":
            due = await self._whole(due)
        if not due:
            return
        signer = self.node.objects.signer
        ops = [pin_op(pin_record(signer, g, root, _now_ms())) for g, root in due]
        try:
            await self.node.objects.commit(self._pins_obj, ops)
        except (LatticeError, MeshdError) as exc:
            self._failed("announce pins", exc)
            self._announce_retry_at = trio.current_time() + self.options.retry_max_s / 4
            return
        for g, root in due:
            if self._announce.get(g) == root:
                del self._announce[g]
            self._announced_at[g] = now
        self._counts["announced"] += len(ops)

    async def _whole(self, due: list[tuple[CID, CID]]) -> list[tuple[CID, CID]]:
        """The versions among ``due`` whose whole DAG is in the store; fetches what the others lack.

        An announcement is what lets other nodes drop their copies
        (:mod:`meshd.store.collector`), so the embedded store, whose pins are
        only rows in the index, announces a version only once every block
        under it is here, as an IPFS recursive pin would guarantee.  Each
        object's walk stops at blocks an earlier complete walk found.
        """
        def check() -> list[tuple[CID, CID, set[CID], set[CID]]]:
            out = []
            for g, root in due:
                known = self._whole_dag.get(g, set())
                found, missing = dag_blocks(self.node.store.get, root, known=known)
                out.append((g, root, found, missing))
            return out

        ready: list[tuple[CID, CID]] = []
        lacking: list[CID] = []
        for g, root, found, missing in await trio.to_thread.run_sync(check):
            if missing:
                lacking += sorted(missing)
            else:
                self._whole_dag.setdefault(g, set()).update(found)
                ready.append((g, root))
        if lacking:
            # Linked blocks the mesh has not brought yet: ask for them, announce next turn.
            self._announce_retry_at = trio.current_time() + self.options.retry_s
            await self.node.fetch_blocks(lacking[:_WHOLE_FETCH], timeout_s=2.0)
        return ready

    # ------------------------------------------------------------------ queries

    def statistics(self) -> ArchivistStatistics:
        """Counters; reads the index (a few ms)."""
        assert self.index is not None
        return ArchivistStatistics(
            store=self.store_kind, objects=len(self.index.objects()), versions=self._counts["versions"],
            pins=len(self.index.pins()), failures=self._counts["failures"], pending_objects=len(self._dirty),
            pending_blobs=len(self._outputs), announced=self._counts["announced"], last_error=self._last_error,
        )

    def objects_json(self) -> dict[str, Any]:
        assert self.index is not None
        st = self.statistics()
        return {
            "objects": [{"genesis": str(row.genesis), "kind": row.kind, "name": row.name, "version": str(row.root),
                         "at": row.at, "height": row.height, "versions": count}
                        for row, count in self.index.objects()],
            "statistics": {f.name: getattr(st, f.name) for f in fields(st)},
        }

    def versions_json(self, genesis: CID, limit: int) -> dict[str, Any]:
        assert self.index is not None and self.pins_view is not None
        rows = self.index.versions(genesis, limit=limit)
        obj = self.node.objects.get(genesis)
        if not rows and obj is None:
            raise NotFound(f"object {genesis} is not known to this archivist", code="object_not_archived")
        cur = self.index.current(genesis)
        holders = self.pins_view.archivists(genesis)
        return {
            "genesis": str(genesis),
            "kind": rows[-1].kind if rows else obj.kind,
            "name": rows[-1].name if rows else obj.name,
            "pinned": str(cur.root) if cur else None,
            "versions": [{"version": str(r.root), "at": r.at, "height": r.height, "heads": [str(h) for h in r.heads],
                          "pinned": r.state == "pinned"} for r in rows],
            "archivists": [{"archivist": p.archivist, "version": str(p.version), "at": p.at}
                           for p in holders.values()],
            "min_archivists": self.options.min_archivists,
            "droppable": len(holders) >= self.options.min_archivists,
        }

    def version_json_sync(self, genesis: CID, version: CID) -> dict[str, Any]:
        """Worker thread: read a version back from the block store and summarise it."""
        store = self.node.store
        v = version_from_untrusted(version, store.get(version))
        if v.genesis != genesis:
            raise NotFound(f"version {version} belongs to {v.genesis}, not {genesis}", code="version_not_found")
        rep = goho.Replica.open(genesis, store, v.heads, base=v.base)
        st = rep.statistics()
        sets = {k: rep.state.count(k) for k in rep.state.set_keys()[:100]}
        return {
            "genesis": str(genesis), "version": str(version), "at": v.at, "height": v.height,
            "heads": [str(h) for h in v.heads], "prev": str(v.prev) if v.prev else None,
            "base": str(v.base) if v.base else None,
            "summary": {"deltas": st.applied, "elements": st.elements, "missing": len(rep.missing()),
                        "sets": sets, "registers": len(rep.state.register_keys())},
        }

    def pins_json(self) -> dict[str, Any]:
        assert self.index is not None
        return {"store": self.store_kind,
                "pins": [{"cid": str(p.cid), "purpose": p.purpose, "genesis": str(p.genesis) if p.genesis else None,
                          "at": p.at} for p in self.index.pins()]}


def create(ctx: RoleContext) -> Archivist:
    """The role plug-in entry point (no I/O)."""
    try:
        options = ArchivistOptions.from_config(ctx.config)
    except ValueError as exc:
        from ..errors import ConfigError

        raise ConfigError(str(exc)) from None
    return Archivist(ctx.node, ctx.home, ctx.config, options)
