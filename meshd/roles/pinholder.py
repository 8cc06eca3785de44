"""The Archivist's pin holder: keep the pinset pins allocated to this archivist.

The pinset (:mod:`lattice.pinset`) says what the mesh wants kept and how many
times; :func:`lattice.pinset.allocate` says which live archivists keep each
pin.  This service runs inside the Archivist role and, every ``check_s`` or
when the pinset changes:

1. publishes this node's free space (``free_mb`` in its presence inventory),
   the weight the other archivists use to allocate;
2. for every live pin allocated to it, fetches the DAG from the mesh until it
   is whole, pins it in the block store (IPFS: a recursive pin; a dataset:
   the archivist already pins each version of an object it follows) and
   reports ``held`` in a signed ``meshd/pin-held`` record;
3. for a pin it holds but is no longer allocated (an archivist joined, or the
   pin was removed or expired), lets go: at once for a removed pin, and for
   a moved pin only once every archivist now allocated reports it held, so
   a pin is never kept by fewer archivists while it moves.  It then reports
   ``held: false``.

When an archivist dies, the others stop seeing its presence after the
liveness horizon (3 presence periods), recompute the allocation, and the
next archivist in each of its pins' rankings takes the pin over.

Reports are written only when they change, so the pinset grows with pins and
moves, not with time.  Crash safety: the ``held`` row is written after the
pin and before the report, and removed before the ``held: false`` report, so
a restart never reports a pin it does not hold.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from lattice import pinset
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound, LatticeError

from ..errors import MeshdError
from ..runtime.logs import get_logger
from ..store.archive import block_links_untrusted

if TYPE_CHECKING:
    from lattice.signing import Signer

    from ..store.archive import ArchiveIndex, Pinner

log = get_logger("meshd.pinholder")

__all__ = ["PinHolder", "PinHolderOptions", "archivist_weights", "walk"]

#: Most blocks asked of the mesh in one fetch.
_FETCH_BATCH = 256


@dataclass(frozen=True)
class PinHolderOptions:
    """Pin holder tuning.

    Attributes:
        check_s: How often allocations are recomputed and held DAGs
            rechecked when nothing changes (2.0).
        fetch_timeout_s: Deadline of one fetch of missing blocks (10.0).
        fetch_rounds: Fetches per pin per check before it is retried at the
            next check (8).
        max_blocks: Largest DAG one pin may name, in blocks (1,000,000).
    """

    check_s: float = 2.0
    fetch_timeout_s: float = 10.0
    fetch_rounds: int = 8
    max_blocks: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("check_s", "fetch_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise ValueError(f"pin holder {name} must be in (0, 3600], got {v!r}")
        for name in ("fetch_rounds", "max_blocks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"pin holder {name} must be a positive integer, got {v!r}")


def walk(get: Any, roots: list[CID], limit: int) -> tuple[set[CID], set[CID], int]:
    """Every block reachable from ``roots``: ``(found, missing, bytes of found)``.

    Like :func:`meshd.store.archive.dag_blocks`, counting sizes too.
    """
    found: set[CID] = set()
    missing: set[CID] = set()
    size = 0
    stack = list(roots)
    while stack and len(found) < limit:
        cid = stack.pop()
        if cid in found or cid in missing:
            continue
        try:
            data = get(cid)
        except BlockNotFound:
            missing.add(cid)
            continue
        found.add(cid)
        size += len(data)
        try:
            stack.extend(block_links_untrusted(cid, data))
        except BadInput:
            continue
    return found, missing, size


def archivist_weights(node: Any) -> dict[str, int]:
    """Live archivists and their allocation weights (:func:`lattice.pinset.weight` of ``free_mb``).

    Read from the presence inventories, so every node (archivist or not)
    computes the allocation the archivists act on.
    """
    def w(inv: Any) -> int:
        free = inv.get("free_mb", 0)
        return pinset.weight((free if type(free) is int and free > 0 else 0) << 20)

    mesh = node.mesh
    if mesh is None:
        return {node.peer_id: w(node.inventory)} if "archivist" in node.config.node.roles else {}
    return {p: w(inv) for p, inv in mesh.live_inventories("archivist").items()}


@runtime_checkable
class PinHolderNode(Protocol):
    """What the pin holder uses of the node (``meshd.node.Node`` satisfies it;
    the archivist's port includes it, since the archivist runs the holder)."""

    peer_id: str
    inventory: dict[str, Any]
    config: Any  # reads config.node.roles
    mesh: Any  # live_inventories("archivist"), or None without a mesh
    objects: Any  # follow_async, commit
    store: Any  # has, pin

    def dataset_obj(self, genesis: CID, *, create: bool = False) -> Any: ...

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = 10.0) -> bool: ...

    async def wait_changed(self, obj: Any, timeout_s: float) -> None: ...


class PinHolder:
    """Keeps this archivist's share of the pinset.  Construction does no I/O."""

    def __init__(self, node: PinHolderNode, mesh_name: str, signer: Signer, pinner: Pinner, index: ArchiveIndex,
                 home: Path, options: PinHolderOptions = PinHolderOptions()) -> None:
        self.node = node
        self.mesh_name = mesh_name
        self.signer = signer
        self.pinner = pinner
        self.index = index
        self.home = Path(home)
        self.options = options
        self.me = node.peer_id
        self.obj: Any = None
        self._held: dict[CID, tuple[int, int]] = {}
        self._counts = {"held": 0, "released": 0, "reports": 0, "failures": 0}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold pins until cancelled (cancellation leaves the index and reports consistent)."""
        self.obj = await self.node.objects.follow_async(pinset.PINSET, self.mesh_name)
        self._held = await trio.to_thread.run_sync(self.index.held)
        await self._publish_free()
        task_status.started()
        while True:
            try:
                await self._round()
            except (LatticeError, MeshdError) as exc:
                self._counts["failures"] += 1
                log.warning("pin_round_failed", error=repr(exc)[:300])
            await self._publish_free()
            await self.node.wait_changed(self.obj, self.options.check_s)

    # ------------------------------------------------------------------ allocation

    def archivists(self) -> dict[str, int]:
        """Live archivists and their weights, as every archivist computes them."""
        return archivist_weights(self.node)

    def free_bytes(self) -> int:
        """Space this archivist offers: free disk under its home."""
        return shutil.disk_usage(self.home).free

    async def _publish_free(self) -> None:
        free_mb = await trio.to_thread.run_sync(self.free_bytes) >> 20
        old = self.node.inventory.get("free_mb")
        # Re-announce only when the weight bucket changes: allocations follow it.
        if old is None or pinset.weight(old << 20) != pinset.weight(free_mb << 20):
            self.node.inventory["free_mb"] = free_mb
            if self.node.mesh is not None:
                self.node.mesh.presence_soon()

    async def _round(self) -> None:
        state = self.obj.replica.state
        todo = pinset.plan(self.me, state, _now_ms(), self.archivists(), self._held)
        reports = pinset.reports(state)
        for pin in todo.hold:
            got = await self._hold(pin)
            mine = reports.get(pin.cid, {}).get(self.me)
            if got is not None and (mine is None or not mine.held or (mine.blocks, mine.bytes) != got):
                await self._report(pin.cid, True, *got)
        for cid in todo.release:
            await self._release(cid)

    # ------------------------------------------------------------------ holding

    async def _roots(self, pin: pinset.Pin) -> list[CID] | None:
        if not pin.dataset:
            return [pin.cid]
        obj = self.node.dataset_obj(pin.cid, create=True)
        if not obj.replica.heads and self.node.mesh is not None:
            await self.node.mesh.query(obj)
            await self.node.wait_changed(obj, self.options.fetch_timeout_s)
        heads = list(obj.replica.heads)
        return [pin.cid, *heads] if heads else None

    async def _hold(self, pin: pinset.Pin) -> tuple[int, int] | None:
        """Make the pin's DAG whole here and pin it; ``(blocks, bytes)``, or None while incomplete."""
        roots = await self._roots(pin)
        if roots is None:
            return None
        store = self.node.store
        for _ in range(self.options.fetch_rounds):
            found, missing, size = await trio.to_thread.run_sync(walk, store.get, roots, self.options.max_blocks)
            if not missing:
                break
            if not await self.node.fetch_blocks(sorted(missing)[:_FETCH_BATCH],
                                                timeout_s=self.options.fetch_timeout_s):
                return None
        else:
            return None
        got = (len(found), size)
        if self._held.get(pin.cid) != got:
            await trio.to_thread.run_sync(self._pin_sync, pin, got)
            if pin.cid not in self._held:
                self._counts["held"] += 1
                log.info("pin_held", cid=str(pin.cid), blocks=got[0], bytes=got[1])
            self._held[pin.cid] = got
        return got

    def _pin_sync(self, pin: pinset.Pin, got: tuple[int, int]) -> None:
        """Worker thread.  Pin first, then the row: a crash between re-pins at the next check."""
        if not pin.dataset:
            # A dataset is pinned by the archivist's version pins of the object it follows.
            self.pinner.add(pin.cid)
        self.index.hold(pin.cid, got[0], got[1], _now_ms())

    async def _release(self, cid: CID) -> None:
        def go() -> None:
            self.index.release(cid)  # first: a crash after it never reports a pin that is gone
            if not self.index.has_pin(cid):  # the archivist's own purposes keep theirs
                try:
                    self.pinner.rm(cid)
                except (LatticeError, MeshdError) as exc:  # a dataset pin has no pin of its own
                    log.info("unpin_skipped", cid=str(cid), error=repr(exc)[:200])

        await trio.to_thread.run_sync(go)
        self._held.pop(cid, None)
        self._counts["released"] += 1
        log.info("pin_released", cid=str(cid))
        await self._report(cid, False, 0, 0)

    async def _report(self, cid: CID, held: bool, blocks: int, size: int) -> None:
        rec = pinset.held_record(self.signer, cid, held, blocks, size, _now_ms())
        await self.node.objects.commit(self.obj, [pinset.held_op(rec)])
        self._counts["reports"] += 1

    def statistics(self) -> dict[str, int]:
        """Pins held now, and counts since start."""
        return {"holding": len(self._held), **self._counts}


def _now_ms() -> int:
    return int(time.time() * 1000)
