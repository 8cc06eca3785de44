"""The Verifier role: judge replicated runs, record verdicts, complete tasks.

Whenever results or the queue change, the verifier looks at every
replicated task that is not yet completed.  When at least ``quorum`` of the
(non-banned) runners' outputs agree — exactly, or within the engine's
declared tolerance — it writes a signed verdict (valid and invalid runners)
to the verdicts GOHO, then the canonical completion to the queue, then the
task's destination dataset.  Several verifiers may judge the same task; the
trust computation keeps the earliest verdict per task, so duplicates are
harmless.  When ``replicas + max_extra_replicas`` results exist and still no
quorum, the task fails ("no quorum").

Who judges (the verifier model, :mod:`lattice.trust`): only verdicts by
the mesh's ``[verify] keys`` count, so a node whose key is not one of them
writes no verdicts and completes nothing.  With no keys configured, each
node counts only its own verdicts: every verifier then writes its own
verdict on each replicated task as soon as a quorum agrees (and on tasks
another verifier completed, as their results arrive), while completing the
task is still left to the claim planner's preferred verifier.

Cancellation between the verdict and the completion leaves a verdict
without a completion; the next pass (here or on any other verifier) writes
the completion — the verdict is idempotent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import trio
from fastapi import APIRouter

from engines.manifest import load_manifest
from lattice import codec, queue
from lattice.blockstore import BlockStore
from lattice.cid import CID
from lattice.claims import verifier_claim_delay
from lattice.task import result_of as task_result_of
from lattice.errors import BadInput, BlockNotFound, StoreError
from lattice.trust import verdict_op, verdict_record

from ..node import now_ms
from ..runtime.logs import get_logger
from .ports import (
    Counts,
    Datasets,
    PeerView,
    QueuePort,
    TaskSource,
    TrustPort,
    write_destination,
)
from .verify import group_outputs

if TYPE_CHECKING:
    from lattice.goho import Cursor

    from ..store.objects import Followed
    from . import RoleContext

log = get_logger("meshd.verifier")


class VerifierNode(QueuePort, TaskSource, Datasets, TrustPort, Counts, Protocol):
    """What the verifier uses of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def mesh(self) -> PeerView | None:
        """None on a node without the p2p layer."""
        ...

    @property
    def results_obj(self) -> Followed: ...

    @property
    def verdicts_obj(self) -> Followed: ...

    @property
    def store(self) -> BlockStore:
        """Where engine manifests are read from (their comparators)."""
        ...


class Verifier:
    name = "verifier"

    def __init__(self, node: VerifierNode, *, debounce_s: float = 0.02, defer_s: float = 1.0) -> None:
        self.node = node
        self.debounce_s = debounce_s
        self.defer_s = defer_s
        self._first_ready: dict[CID, float] = {}
        self.stats = {"verdicts": 0, "no_quorum": 0, "passes": 0}
        self._comparators: dict[CID, dict[str, Any] | None] = {}
        self._late: set[CID] = set()  # tasks with new results since the last pass
        self._results: Cursor | None = None  # the results' change feed, while serving
        self._broken: set[CID] = set()  # tasks whose check raised (logged once)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Judge replicated tasks until cancelled.

        New results are read from the results' change feed (a cursor pulled
        each pass, closed on exit); cancellation may leave a verdict
        uncommitted, which the next pass (here or on another verifier) writes.
        """
        node = self.node
        self._results = node.results_obj.replica.cursor()
        task_status.started()
        try:
            while True:
                await self.check()
                with trio.move_on_after(2.0):  # also re-check periodically (lease expiry, late blocks)
                    async with trio.open_nursery() as n:
                        async def wake(obj: Any) -> None:
                            await node.wait_changed(obj, 2.0)
                            n.cancel_scope.cancel()

                        n.start_soon(wake, node.results_obj)
                        n.start_soon(wake, node.queue_obj)
                await trio.sleep(self.debounce_s)
        finally:
            self._results.close()
            self._results = None

    def _my_turn(self, task: CID) -> bool:
        """Whether the claim planner lets this verifier judge ``task`` now
        (:func:`lattice.claims.verifier_claim_delay` over the live verifiers):
        the preferred one judges at once, the k-th only after ``k * defer_s``."""
        mesh = self.node.mesh
        if mesh is None:
            return True
        delay = verifier_claim_delay(task, self.node.peer_id, mesh.live_peers("verifier"), defer_s=self.defer_s)
        if delay == 0:
            return True
        first = self._first_ready.setdefault(task, time.monotonic())
        return time.monotonic() - first >= delay

    def _comparator(self, engine: CID | None) -> dict[str, Any] | None:
        if engine is None:
            return None
        if engine not in self._comparators:
            try:
                self._comparators[engine] = getattr(load_manifest(self.node.store, engine), "comparator", None)
            except Exception:  # noqa: BLE001 - no manifest here: exact comparison
                return None
        return self._comparators[engine]

    def _pull_results(self) -> None:
        """Note the tasks that got results since the last pass (from the results' cursor)."""
        if self._results is None:
            return
        for change in self._results.pull():
            for key, _ in change.adds:
                try:
                    self._late.add(CID.parse_untrusted(key))
                except Exception:  # noqa: BLE001 - not a task key
                    continue

    async def _judge_late(self, me: str, now: int) -> None:
        """Judge results that arrive after a task was verified (a slow or
        dishonest runner's replica) against the canonical output."""
        node = self.node
        self._pull_results()
        late, self._late = self._late, set()
        for task in late:
            verdict = node.trust.verdict(task)
            if verdict is None:
                if self._alone():
                    await self._judge_own(task, me, now)
                continue
            fresh = [r for r in node.policy.results_of(task) if not node.trust.judged(task, r["runner"])]
            if not fresh:
                continue
            engine = node.policy.engine_of(task)
            canon = [r for r in node.policy.results_of(task) if r["output"] == verdict["output"]][:1]
            valid, invalid = [], []
            for r in fresh:
                same = group_outputs(canon + [r], node.output_value,
                                     self._comparator(engine)) if canon else [[r]]
                (valid if canon and len(same) == 1 else invalid).append(r["runner"])
            rec = verdict_record(node.objects.signer, task, engine, verdict["output"], valid, invalid, me, now)
            await node.objects.commit(node.verdicts_obj, [verdict_op(rec)])
            self.stats["verdicts"] += 1
            if invalid:
                log.info("invalid_results", task=str(task), runners=",".join(invalid), late=True)

    def _alone(self) -> bool:
        """No verifier keys configured: this node counts only its own verdicts."""
        return self.node.trust.options.verifiers == frozenset({self.node.peer_id})

    async def _judge_own(self, task: CID, me: str, now: int) -> None:
        """Write this node's verdict on ``task`` (done or not) once a quorum agrees."""
        node = self.node
        info = node.queue.info(task)
        if info is None or info.replication is None:
            return
        recs = node.policy.results_of(task)
        if not recs:
            return
        _, q = node.policy.base(task, info)
        engine = node.policy.engine_of(task)
        groups = group_outputs(recs, node.output_value, self._comparator(engine))
        if len(groups[0]) >= q:
            await self._write_verdict(task, engine, groups[0], [r for g in groups[1:] for r in g], me, now)

    async def check(self) -> None:
        node = self.node
        self.stats["passes"] += 1
        me, now = node.peer_id, now_ms()
        if me not in node.trust.options.verifiers:
            self.stats["not_a_verifier"] = self.stats.get("not_a_verifier", 0) + 1
            return  # our verdicts would count nowhere: [verify] keys names others
        try:
            await self._judge_late(me, now)
        except StoreError as exc:
            log.warning("verify_commit_failed", error=str(exc)[:200])
            return
        for task in node.queue.open_replicated():
            try:
                await self._check_one(task, me, now)
            except StoreError as exc:
                log.warning("verify_commit_failed", task=str(task), error=str(exc)[:200])
                return
            except Exception:  # noqa: BLE001 - one task's defect must not stop the verifier
                node.count("role_item_errors")
                if task not in self._broken:
                    self._broken.add(task)
                    log.exception("verify_task_skipped", task=str(task))

    async def _check_one(self, task: CID, me: str, now: int) -> None:
        node = self.node
        info = node.queue.info(task)
        if info is None or info.replication is None or node.queue.is_done(info):
            return
        recs = node.policy.results_of(task)
        if not recs:
            return
        k, q = node.policy.base(task, info)
        engine = node.policy.engine_of(task)
        if self._alone():
            # Our own verdict is the only one we count: write it now, whoever completes.
            await self._judge_own(task, me, now)
        if not self._my_turn(task):
            return
        groups = group_outputs(recs, node.output_value, self._comparator(engine))
        best = groups[0]
        if len(best) >= q:
            await self._accept(task, engine, best, [r for g in groups[1:] for r in g], me, now)
        elif len(recs) >= k + node.policy.options.max_extra_replicas:
            self.stats["no_quorum"] += 1
            await node.objects.commit(node.queue_obj, [queue.fail_op(
                task, me, now, 0, f"no quorum: {len(recs)} results, largest agreement {len(best)} < {q}", True)])

    async def _accept(self, task: CID, engine: CID | None, valid: list[dict[str, Any]],
                      invalid: list[dict[str, Any]], me: str, now: int) -> None:
        node = self.node
        canonical = await self._write_verdict(task, engine, valid, invalid, me, now)
        rcid = codec.cid_of(canonical)
        try:
            body = node.task_record(task)
        except (BlockNotFound, BadInput):
            body = {}
        try:
            dest = task_result_of(body, node.task_definition(body)) if body else None
        except (BlockNotFound, BadInput):
            dest = task_result_of(body) if body else None
        if dest:
            try:
                output = node.output_value(canonical["output"])
            except BlockNotFound:
                if not await node.fetch_blocks([canonical["output"]], timeout_s=5.0):
                    return
                output = node.output_value(canonical["output"])
            await write_destination(node, dest, output)
        await node.objects.commit(node.queue_obj, [queue.complete_op(task, me, now, rcid)])


    async def _write_verdict(self, task: CID, engine: CID | None, valid: list[dict[str, Any]],
                             invalid: list[dict[str, Any]], me: str, now: int) -> dict[str, Any]:
        """Judge the runners no counted verdict judged yet; return the canonical result."""
        node = self.node
        canonical = min(valid, key=lambda r: (r["at"], r["runner"]))
        unjudged = [r for r in valid + invalid if not node.trust.judged(task, r["runner"])]
        if unjudged:
            valid = [r for r in valid if r in unjudged]
            invalid = [r for r in invalid if r in unjudged]
            rec = verdict_record(node.objects.signer, task, engine, canonical["output"],
                                 [r["runner"] for r in valid], [r["runner"] for r in invalid], me, now)
            await node.objects.commit(node.verdicts_obj, [verdict_op(rec)])
            self.stats["verdicts"] += 1
            if invalid:
                log.info("invalid_results", task=str(task), runners=",".join(r["runner"] for r in invalid))
        return canonical


def create(ctx: RoleContext) -> Verifier:
    return Verifier(ctx.node)


def router(ctx: RoleContext) -> APIRouter:
    r = APIRouter(tags=["verify"])
    node = ctx.node

    @r.get("/v1/trust")
    async def trust() -> dict[str, Any]:
        """Trust scores per (peer, engine) and the banned peers, as every peer computes them."""
        scores = []
        for peer, per in sorted(node.trust.scores().items()):
            for engine, s in per.items():
                scores.append({"peer": peer, "engine": str(engine) if engine else None, "valid": s.valid,
                               "invalid": s.invalid, "streak": s.streak,
                               "trusted": node.trust.trusted(peer, engine)})
        verifier = ctx.roles.get("verifier")
        return {
            "banned": sorted(node.trust.banned_peers()),
            "scores": scores,
            "thresholds": {"trust_after": node.trust.options.trust_after, "ban_after": node.trust.options.ban_after},
            "verifier": dict(verifier.stats) if verifier is not None else None,
        }

    return r
