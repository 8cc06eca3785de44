"""The storage budget: drop what archivists hold once the block store is over ``[store] max_bytes``.

Every ``check_s`` the collector reads the store's byte total (one counter,
:meth:`lattice.diskstore.DiskBlockStore.used_bytes`).  Over the budget, it
gathers the facts of every block (size, last use, protections, holders) and
hands them to the pure policy, :func:`lattice.storebudget.choose`, which
names the blocks to drop, least recently used first, down to ``low_water`` of
the budget.  It then deletes them in one transaction.

Where the facts come from:

* **Last use**: :class:`meshd.store.usage.UsageTracking`, in memory; blocks
  not used since the start are older than any used since, in write order.
* **Holders**: the archivists' signed reports, counted only for archivists
  live now (presence) and other than this node:

  - the ``pins`` object (:mod:`meshd.store.archive`): archivist A pinned
    version V of object G, so A holds every block reachable from V (V's
    heads, their history, and whatever their ops link); an archivist
    announces a version only once that whole DAG is in its store
    (:meth:`meshd.roles.archivist.Archivist`), or under a recursive IPFS pin;
  - the ``pinset`` object (:mod:`lattice.pinset`): A's newest ``held: true``
    report on a CID pin covers the DAG under that CID; a ``held: false``
    report withdraws it.

  Reachability is walked here, in the local store, from each root once: a
  walk stops at blocks it already credited to that archivist (a newer
  version contains the older one), so each round reads only the new blocks.
  A block the walk cannot read (absent here) credits nothing below it: a
  miss only ever keeps blocks.
* **Pinned**: with the archivist role, every block reachable from its pins
  (its version roots, result outputs, engine files and pinset pins), walked
  whole each round.
* **In use**: the delta history of every followed object (a restart
  replays it from the stored heads, and the daemon makes no snapshots yet),
  the blocks the newest heads link to, the bodies of open tasks and what they
  link (definitions, engine manifests and files: what a runner is running or
  is about to), and every block used in the last ``min_idle_s`` (being
  served, fetched or just written).

A dropped block is fetched back from the mesh when something asks for it
(the result route does, from the runner and then any peer).

Deletion re-checks each chosen block's last use first, so a block read
between the decision and the delete is kept.  Cancellation during a delete
lets the transaction finish in its thread (whole or not at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from lattice import codec, pinset, storebudget
from lattice.cid import CID, DAG_CBOR, DAG_PB
from lattice.errors import BadInput, BlockNotFound, LatticeError

from ..errors import ConfigError, MeshdError
from ..runtime.logs import get_logger
from .archive import PINS, PinsView, _links, block_links_untrusted

log = get_logger("meshd.collector")

__all__ = ["Collector", "CollectorNode", "StoreBudgetStatistics", "reachable"]

#: Most blocks fetched for missing version roots per round.
_FETCH_ROOTS = 64


@dataclass(frozen=True)
class StoreBudgetStatistics:
    """The budget's state, for ``GET /v1/store`` and ``/metrics``.

    Attributes:
        enabled: A budget is set and enforced.
        store: ``"embedded"`` or ``"ipfs"``.
        budget_bytes: ``[store] max_bytes`` (0: none).
        target_bytes: Where a round stops collecting.
        used_bytes: Block data held at the last check (None: the store cannot say).
        blocks: Blocks held at the last check (None: not known).
        min_holders: Archivists that must hold a block before it is dropped.
        rounds: Collection rounds run (checks that found the store over budget).
        collected_blocks: Blocks dropped since start.
        collected_bytes: Their bytes.
        refused: Blocks kept in rounds since start, by reason (``pinned``,
            ``in_use``, ``few_holders``).
        last_refused: The same, for the last round only.
        over_budget: The last round could not get under the budget (the
            protections outweigh it).
        archivists: Live archivists whose reports were counted last round.
        tracked: Blocks whose last use is noted in memory.
        last_round_s: How long the last round took.
        failures: Rounds that failed (logged).
    """

    enabled: bool
    store: str
    budget_bytes: int
    target_bytes: int
    used_bytes: int | None
    blocks: int | None
    min_holders: int
    rounds: int = 0
    collected_blocks: int = 0
    collected_bytes: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    last_refused: dict[str, int] = field(default_factory=dict)
    over_budget: bool = False
    archivists: int = 0
    tracked: int = 0
    last_round_s: float = 0.0
    failures: int = 0


class CollectorNode(Protocol):
    """What the collector reads of the node (``meshd.node.Node`` satisfies it)."""

    peer_id: str
    objects: Any  # objects (genesis -> Followed), follow_async
    queue: Any  # tasks(), info(), is_done()
    mesh: Any  # live_inventories("archivist"), or None without a mesh

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = 10.0) -> bool: ...


def reachable(get: Callable[[CID], bytes], roots: Iterable[CID], *, stop: Callable[[bytes], bool] = lambda _r: False,
              limit: int = 10_000_000) -> set[bytes]:
    """The raw CIDs reachable from ``roots`` through CID links, as far as this store can read.

    Only DAG-CBOR and dag-pb (UnixFS) blocks are read, for their links; a
    raw block is counted without reading it.  A block ``stop`` accepts is counted and not
    descended into; an absent block is not counted and hides what is below it.
    """
    out: set[bytes] = set()
    stack = list(roots)
    while stack and len(out) < limit:
        cid = stack.pop()
        raw = cid.raw
        if raw in out:
            continue
        if stop(raw):
            out.add(raw)
            continue
        if cid.codec not in (DAG_CBOR, DAG_PB):
            out.add(raw)
            continue
        try:
            data = get(cid)
        except BlockNotFound:
            continue
        out.add(raw)
        try:
            stack.extend(block_links_untrusted(cid, data))
        except BadInput:
            continue
    return out


class Collector:
    """Keeps the block store within ``[store] max_bytes``.  Construction does no I/O.

    Args:
        node: The node (its objects, queue and mesh).
        store: The node's block store, wrapped in
            :class:`~meshd.store.usage.UsageTracking` when a budget is set.
        config: The whole config (``store``, ``node.mesh``, ``ipfs.api``).
        roles: The running roles by name (read each round: the archivist's
            pins, when it runs).
    """

    def __init__(self, node: CollectorNode, store: Any, config: Any, roles: Mapping[str, Any]) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.options = config.store
        self.roles = roles
        self.kind = "ipfs" if config.ipfs.api else "embedded"
        self.target = storebudget.target_bytes(self.options.max_bytes, self.options.low_water)
        self._used: int | None = None
        self._blocks: int | None = None
        self._counts = {"rounds": 0, "blocks": 0, "bytes": 0, "failures": 0}
        self._refused = dict.fromkeys(storebudget.REASONS, 0)
        self._last_refused = dict.fromkeys(storebudget.REASONS, 0)
        self._over = False
        self._archivists = 0
        self._last_round_s = 0.0
        # archivist -> raw CIDs its reports cover (grow-only for version pins:
        # a newer version of an object contains the older one).
        self._covered: dict[str, set[bytes]] = {}
        self._walked: dict[str, set[bytes]] = {}  # archivist -> version roots already walked
        # (archivist, pin CID) -> (report time, raw CIDs under the pin)
        self._pin_cover: dict[tuple[str, CID], tuple[int, set[bytes]]] = {}
        self._pins_view: PinsView | None = None
        self._pinset_obj: Any = None

    @property
    def enabled(self) -> bool:
        return self.options.max_bytes > 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the budget every ``check_s`` until cancelled.

        Raises:
            ConfigError: a budget is set on an IPFS store (see ``[store] max_bytes``).
        """
        if self.enabled and self.kind == "ipfs":
            raise ConfigError("[store] max_bytes is not enforced with [ipfs] api: set the IPFS node's"
                              " Datastore.StorageMax instead (docs/operations.md, \"Running a storage node\")")
        if self.enabled:
            mesh_name = self.config.node.mesh
            pins_obj = await self.node.objects.follow_async(PINS, mesh_name)
            self._pins_view = PinsView(pins_obj.replica)
            self._pinset_obj = await self.node.objects.follow_async(pinset.PINSET, mesh_name)
        task_status.started()
        try:
            while True:
                await self._check()
                await trio.sleep(self.options.check_s)
        finally:
            if self._pins_view is not None:
                self._pins_view.close()

    async def _check(self) -> None:
        used_bytes = getattr(self.store, "used_bytes", None)
        if used_bytes is None:
            return  # the IPFS store: its node's own StorageMax applies
        try:
            self._used, self._blocks = await trio.to_thread.run_sync(lambda: (used_bytes(), self.store.size()))
            if self.enabled and self._used > self.options.max_bytes:
                await self.collect()
        except (LatticeError, MeshdError) as exc:
            self._counts["failures"] += 1
            log.warning("store_budget_round_failed", error=repr(exc)[:300])

    # ------------------------------------------------------------------ a round

    async def collect(self) -> storebudget.Collection:
        """Run one round now: gather the facts, choose, delete.  Returns the decision."""
        t0 = time.perf_counter()
        self._counts["rounds"] += 1
        live = self._live_archivists()
        await self._credit_versions(live)
        await self._credit_pinset(live)
        pinned = await trio.to_thread.run_sync(self._pinned)
        in_use = await self._in_use()
        store = self.store
        idle_since = store.now() - self.options.min_idle_s
        per_archivist = [(self._covered.get(a, set()),
                          [cover for (who, _cid), (_at, cover) in self._pin_cover.items() if who == a])
                         for a in live]
        replicas = [obj.replica for obj in list(self.node.objects.objects.values())]

        def facts() -> tuple[int, list[storebudget.BlockUse], dict[bytes, float]]:
            used = store.used_bytes()
            rows = list(store.usage())
            # Blocks not used since the start are older than any used since, in write order.
            untouched = sorted((order, cid.raw) for cid, _size, order in rows if store.last_use(cid) is None)
            rank = {raw: float(i - len(untouched)) for i, (_o, raw) in enumerate(untouched)}
            seen: dict[bytes, float] = {}
            out = []
            for cid, size, _order in rows:
                raw = cid.raw
                last = store.last_use(cid)
                seen[raw] = last if last is not None else rank.get(raw, -1.0 - len(untouched))
                holders = sum(1 for cover, pins in per_archivist if raw in cover or any(raw in p for p in pins))
                busy = (raw in in_use or (last is not None and last > idle_since)
                        or any(rep.is_known(cid) for rep in replicas))
                out.append(storebudget.BlockUse(cid, size, seen[raw], pinned=raw in pinned, in_use=busy,
                                                holders=holders))
            return used, out, seen

        used, blocks, seen = await trio.to_thread.run_sync(facts)
        decision = storebudget.choose(blocks, used, self.options.max_bytes, self.target, self.options.min_holders)
        sizes = {b.cid: b.size for b in blocks}

        def drop() -> tuple[int, int]:
            # A block used since the facts were read is kept (it is being read or served).
            go = [c for c in decision.drop if (store.last_use(c) or seen[c.raw]) == seen[c.raw]]
            store.delete_many(go)
            return len(go), sum(sizes[c] for c in go)

        n, freed = await trio.to_thread.run_sync(drop) if decision.drop else (0, 0)
        self._counts["blocks"] += n
        self._counts["bytes"] += freed
        for reason, k in decision.refused.items():
            self._refused[reason] += k
        self._last_refused = dict(decision.refused)
        self._over = decision.still_over
        self._archivists = len(live)
        self._used = used - freed
        self._last_round_s = time.perf_counter() - t0
        log.info("store_collected", blocks=n, bytes=freed, used=self._used, budget=self.options.max_bytes,
                 still_over=decision.still_over, **{f"refused_{k}": v for k, v in decision.refused.items()})
        return decision

    # ------------------------------------------------------------------ holders

    def _live_archivists(self) -> list[str]:
        mesh = self.node.mesh
        if mesh is None:
            return []
        return sorted(p for p in mesh.live_inventories("archivist") if p != self.node.peer_id)

    async def _credit_versions(self, live: list[str]) -> None:
        """Credit each live archivist with the DAGs of the versions it announced."""
        assert self._pins_view is not None
        todo: list[tuple[str, CID]] = []
        for rec in self._pins_view.records():
            if rec.archivist in live and rec.version.raw not in self._walked.get(rec.archivist, ()):
                todo.append((rec.archivist, rec.version))
        if not todo:
            return
        absent = await trio.to_thread.run_sync(lambda: [v for _a, v in todo if not self.store.has(v)])
        if absent:
            # Version roots are prefetched with the pins records; ask again for any that is not here.
            await self.node.fetch_blocks(absent[:_FETCH_ROOTS], timeout_s=2.0)

        def walk() -> None:
            for archivist, version in todo:
                if not self.store.has(version):
                    continue
                cover = self._covered.setdefault(archivist, set())
                cover |= reachable(self.store.inner.get, [version], stop=cover.__contains__)
                self._walked.setdefault(archivist, set()).add(version.raw)

        await trio.to_thread.run_sync(walk)

    async def _credit_pinset(self, live: list[str]) -> None:
        """Credit live archivists with the DAGs under the CID pins they report held."""
        state = self._pinset_obj.replica.state  # read here, on the trio thread that changes it
        active = pinset.pins(state, int(time.time() * 1000))
        keep: dict[tuple[str, CID], int] = {}
        for cid, by in pinset.reports(state).items():
            pin = active.get(cid)
            if pin is None or pin.dataset:
                continue  # a dataset's DAG is credited through the versions its archivists pin
            for archivist, held in by.items():
                if archivist in live and held.held:
                    keep[(archivist, cid)] = held.at
        for key in [k for k in self._pin_cover if keep.get(k) != self._pin_cover[k][0]]:
            del self._pin_cover[key]  # withdrawn (held: false, unpinned, archivist gone) or re-reported
        todo = [k for k in keep if k not in self._pin_cover]

        def walk() -> dict[tuple[str, CID], tuple[int, set[bytes]]]:
            return {k: (keep[k], reachable(self.store.inner.get, [k[1]])) for k in todo}

        if todo:
            self._pin_cover.update(await trio.to_thread.run_sync(walk))

    # ------------------------------------------------------------------ protections

    def _pinned(self) -> set[bytes]:
        """Worker thread: everything this node's archivist pins (nothing without the role)."""
        archivist = self.roles.get("archivist")
        index = getattr(archivist, "index", None)
        if index is None:
            return set()
        roots = [row.cid for row in index.pins()] + list(index.held())
        return reachable(self.store.inner.get, roots)

    async def _in_use(self) -> set[bytes]:
        """What the newest heads link to, and open tasks with what they link."""
        objs = list(self.node.objects.objects.values())
        replicas = [obj.replica for obj in objs]
        geneses = {obj.genesis.raw for obj in objs}
        heads = [h for rep in replicas for h in rep.heads]
        q = self.node.queue
        tasks = [t for t in q.tasks() if (info := q.info(t)) is not None and not q.is_done(info)]

        def history(raw: bytes) -> bool:
            # Deltas and geneses are kept whole anyway: stop there rather than walk the whole history.
            return raw in geneses or any(rep.is_known(CID(raw)) for rep in replicas)

        def walk() -> set[bytes]:
            roots: list[CID] = list(tasks)
            for head in heads:
                try:
                    data = self.store.inner.get(head)
                except BlockNotFound:
                    continue
                links: list[CID] = []
                try:
                    _links(codec.decode_untrusted(data), links)
                except BadInput:
                    continue
                roots += [c for c in links if not history(c.raw)]
            return reachable(self.store.inner.get, roots, stop=history) | geneses

        return await trio.to_thread.run_sync(walk)

    # ------------------------------------------------------------------ reading

    def statistics(self) -> StoreBudgetStatistics:
        """The budget's state now (no I/O: the figures of the last check)."""
        tracked = getattr(self.store, "tracked", None)
        return StoreBudgetStatistics(
            enabled=self.enabled and self.kind == "embedded", store=self.kind,
            budget_bytes=self.options.max_bytes, target_bytes=self.target, used_bytes=self._used,
            blocks=self._blocks, min_holders=self.options.min_holders, rounds=self._counts["rounds"],
            collected_blocks=self._counts["blocks"], collected_bytes=self._counts["bytes"],
            refused=dict(self._refused), last_refused=dict(self._last_refused), over_budget=self._over,
            archivists=self._archivists, tracked=tracked() if tracked is not None else 0,
            last_round_s=round(self._last_round_s, 4), failures=self._counts["failures"])
