"""One attempt of a task on this runner: run it on its engine, record how it ended.

:class:`Attempts` holds what :class:`meshd.roles.runner.Runner` does once it
holds a claim and an engine slot: read the task (fetching a linked
definition, engine blocks and signatures that are not here yet, reading a
dataset input), look it up in the result cache, run it on the engine host
(resuming from a checkpoint when the task takes them), and record the
outcome (a result record, then the completion or a replica's ``done``, or a
failed attempt).  Kept apart from the runner, which decides what to claim
and when to run it: this is what a run is.

Durability: the result record is committed before the completion, so a
crash between the two re-runs the task (a duplicate result, never a lost
one).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import trio

from engines.errors import EngineMissing
from engines.outcome import Outcome
from lattice import codec, dataset, queue, results, unixfs
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.task import engine_of, image_of, metadata_of, result_of

from ..node import now_ms
from ..runtime.logs import get_logger
from .ports import write_destination

if TYPE_CHECKING:
    from .checkpointing import Checkpointing
    from .leases import Leases
    from .replica_cap import ReplicaCap
    from .resultcache import ResultCache
    from .runner import EngineRunner, RunnerNode
    from .runner_options import RunnerOptions

log = get_logger("meshd.runner")


class Attempts:
    """Runs and records the attempts of one runner.

    Args:
        node: The runner's node port.
        host: The engine host.
        options: The runner's options (``warm``, ``max_attempts``).
        leases: The runner's leases (a checkpointed run reads its attempt).
        checkpointing: Runs a task that takes checkpoints.
        cache: The result cache (lookups before a run, pairs on results).
        replica_cap: Told when a replica of a verified task is recorded.
        stats: The runner's counters (``runs``, ``ok``, ``failed``), updated in place.
    """

    def __init__(self, node: RunnerNode, host: EngineRunner, options: RunnerOptions, *, leases: Leases,
                 checkpointing: Checkpointing, cache: ResultCache, replica_cap: ReplicaCap,
                 stats: dict[str, int]) -> None:
        self.node = node
        self.host = host
        self.options = options
        self.leases = leases
        self.checkpointing = checkpointing
        self.cache = cache
        self.replica_cap = replica_cap
        self.stats = stats
        self._invalid: set[CID] = set()  # tasks whose definition failed validation (fail at once)
        self._sig_retry: dict[CID, float] = {}  # signature CIDs not fetchable: when to try again

    async def execute(self, t: CID) -> tuple[Outcome, dict[str, Any] | None]:
        """Run task ``t`` once (or take its result from the cache): its outcome and, when it was read, its body."""
        try:
            rec = self.node.task_record(t)
        except BlockNotFound:
            return Outcome(ok=False, error=f"task body {t} is not available"), None
        except BadInput as exc:
            return Outcome(ok=False, error=f"invalid task: {exc}"[:500]), None
        try:
            try:
                td = self.node.task_definition(rec)
            except BlockNotFound:
                # Linked definitions are not prefetched with the queue: fetch it now.
                await self.node.fetch_blocks([rec["taskDefinition"]], timeout_s=15.0)
                td = self.node.task_definition(rec)
        except BlockNotFound:
            return Outcome(ok=False, error=f"task definition {rec['taskDefinition']} is not available"), rec
        except BadInput as exc:
            # Content-addressed, so invalid for good: fail the task at once.
            self._invalid.add(t)
            return Outcome(ok=False, error=f"invalid task definition: {exc}"[:500]), rec
        engine = engine_of(rec, td)
        if engine is None and image_of(rec, td) is not None:
            engine = await self.node.engine_for(rec, td)
            if engine is None:
                return Outcome(ok=False, error=f"no published engine matches metadata.image {image_of(rec, td)!r}"), rec
        if engine is None:
            return Outcome(ok=False, error="task names no engine (runner.engine)"), rec
        metadata = metadata_of(rec, td)
        signatures = self.node.engine_signatures(engine)
        await self._fetch_signatures(engine, signatures)
        # Authorization before the input is read: a dataset input may be
        # large, and an engine this node refuses must cost no read of it.
        authorized = getattr(self.host, "authorized", None)
        inp = rec["input"]
        if "value" in inp:
            value = inp["value"]
        elif authorized is not None and not authorized(engine, signatures):
            value = None  # the host refuses the engine below, before looking at the input
        else:
            try:
                value = await self._dataset_value(inp["dataset"], inp["path"])
            except ValueError as exc:  # over the read budget (lattice.dataset.DatasetTooLarge)
                return Outcome(ok=False, error=f"input {inp['dataset']}/{inp['path']}: {exc}"[:500]), rec
            if value is None:
                return Outcome(ok=False, error=f"input {inp['dataset']}/{inp['path']} is empty or unknown"), rec
        if authorized is None or authorized(engine, signatures):
            # Not for an engine this node refuses: it would vouch for its result.
            await self._manifest_here(engine)
            pair = self.cache.note(t, engine, value, metadata)
            if pair is not None and (hit := await self.cache.lookup(t, rec, pair)) is not None:
                return Outcome(ok=True, output=codec.to_json(hit.output), runner="cache"), rec
        payload = codec.to_json(value)
        # An engine published elsewhere arrives block by block (manifest, file
        # node, chunks): fetch what is missing and try again.
        for _ in range(6):
            try:
                run = functools.partial(self.host.run, engine, payload, warm=None if self.options.warm else False,
                                        signatures=signatures, **({"metadata": metadata} if metadata else {}))
                every = rec.get("checkpoint_s")
                held = self.leases.held.get(t)
                if every and held is not None:  # resumes from the task's latest checkpoint, records new ones
                    outcome = await self.checkpointing.run(t, held.n, every, lambda d: run(checkpoint=d))
                else:
                    outcome = await run()
                break
            except EngineMissing as exc:
                missing = [c for c in exc.missing if type(c) is CID]
                if not missing or not await self.node.fetch_blocks(missing, timeout_s=15.0):
                    outcome = Outcome(ok=False, error=f"engine blocks missing: {exc} ({len(exc.missing)} block(s))")
                    break
        else:
            outcome = Outcome(ok=False, error="engine blocks missing after repeated fetches")
        return outcome, rec

    async def _fetch_signatures(self, engine: CID, signatures: list[CID]) -> None:
        """Fetch ``engine``'s signature blocks that are not here, briefly, before the host decides.

        The host decides on the blocks in the store and never waits for one
        (a bogus CID in the engines registry must not stall attempts), but a
        real signature published on another node may not have arrived yet.
        So, only for an engine not authorized on what is here, the runner
        fetches the absent blocks for at most 3 s, and skips a CID that could
        not be fetched for 5 minutes.  Cancellation leaves what was fetched.
        """
        authorized = getattr(self.host, "authorized", None)
        if authorized is None or authorized(engine, signatures):
            return
        now = time.monotonic()
        has = self.node.store.has
        absent = [c for c in signatures if self._sig_retry.get(c, 0.0) <= now and not has(c)]
        if absent and not await self.node.fetch_blocks(absent, timeout_s=3.0):
            if len(self._sig_retry) > 10_000:
                self._sig_retry.clear()
            for c in absent:
                if not has(c):
                    self._sig_retry[c] = now + 300.0

    async def _dataset_value(self, genesis: CID, path: str, timeout_s: float = 10.0) -> Any:
        """The value at ``genesis/path``, waiting briefly for the mesh to deliver it."""
        obj = self.node.dataset_obj(genesis, create=True)
        assert obj is not None
        value = dataset.get(obj.replica, path)
        if value is not None or self.node.mesh is None:
            return value
        await self.node.mesh.query(obj)
        with trio.move_on_after(timeout_s):
            while value is None:
                await self.node.wait_changed(obj, timeout_s)
                value = dataset.get(obj.replica, path)
        return value

    def destination(self, rec: dict[str, Any] | None) -> dict[str, Any] | None:
        """The task's result destination, its own or its definition's (:func:`lattice.task.result_of`)."""
        if not rec:
            return None
        try:
            return result_of(rec, self.node.task_definition(rec))
        except (BlockNotFound, BadInput):
            return result_of(rec)

    async def _manifest_here(self, engine: CID) -> None:
        """Fetch ``engine``'s manifest when it is not here yet (the run needs it anyway).

        Whether the engine is deterministic is in its manifest, and only a
        result recorded with its (engine, input) pair can serve later tasks
        from the result cache: a runner that ran a task before the
        manifest's prefetch finished left a result no twin could find
        (measured: a twin enqueued right after such a run was a cache miss).
        A fetch that fails is left to the engine host, which fetches again.
        """
        if not self.cache.manifest_here(engine):
            await self.node.fetch_blocks([engine], timeout_s=15.0)

    async def record(self, t: CID, attempt: int, outcome: Outcome, rec: dict[str, Any] | None, seconds: float) -> None:
        """Commit how attempt ``attempt`` of ``t`` ended: a result and its completion, or a failure."""
        node, me, now = self.node, self.node.peer_id, now_ms()
        self.stats["runs"] += 1
        output = None
        cache_fields, hit = self.cache.take(t)
        if outcome.ok:
            try:
                output = codec.from_json(outcome.output)
                out_cid, out_data = codec.encode_block(output)
            except BadInput as exc:
                outcome = Outcome(ok=False, error=f"output is not DAG-CBOR encodable: {exc}", stderr=outcome.stderr)
            else:
                if len(out_data) > results.MAX_OUTPUT_BYTES:
                    outcome = Outcome(ok=False, error=f"output is {len(out_data)} bytes encoded; peers can fetch "
                                      f"at most {results.MAX_OUTPUT_BYTES} (write large data to a dataset in parts)",
                                      stderr=outcome.stderr)
        if outcome.ok:
            blocks = [(out_cid, out_data)]
            if len(out_data) > results.OUTPUT_FILE_BYTES:
                # Also as a UnixFS file of its JSON text, so `ipfs cat` prints it.
                file, file_blocks = await trio.to_thread.run_sync(
                    lambda: unixfs.encode_file(results.output_json_bytes(output)))
                cache_fields = {**cache_fields, "file": file}
                blocks += file_blocks
            rrec = results.result_record(node.objects.signer, t, out_cid, me, now,
                                         duration_s=round(seconds, 4), stderr=outcome.stderr[-2000:], **cache_fields)
            rcid, rdata = codec.encode_block(rrec)
            await node.objects.commit(node.results_obj, [results.result_op(rrec)], blocks + [(rcid, rdata)])
            if (rec or {}).get("verify") and hit is None:
                # One replica of a verified task: the Verifier completes the
                # task (and writes its destination) once a quorum agrees.
                await node.objects.commit(node.queue_obj, [queue.replica_done_op(t, me, now, rcid)])
                self.replica_cap.recorded(t)
                self.stats["ok"] += 1
                node.count("replicas_completed")
                return
            dest = self.destination(rec)
            if dest:
                await write_destination(node, dest, output)
            done = queue.complete_op(t, me, now, rcid)
            if hit is not None:
                done[2]["cached"] = hit.record_cid  # completed from the result cache, from this result
                node.count("cache_hits")
            await node.objects.commit(node.queue_obj, [done])
            self.stats["ok"] += 1
            node.count("tasks_completed")
            log.info("task_completed", task=str(t), attempt=attempt, seconds=round(seconds, 4))
            return
        limit = (rec or {}).get("max_attempts") or self.options.max_attempts
        failures = node.queue.failures(t) + 1
        final = failures >= limit or t in self._invalid
        self._invalid.discard(t)
        op = queue.fail_op(t, me, now, attempt, outcome.error or "failed", final)
        op[2]["stderr"] = (outcome.stderr or "")[-2000:]
        await node.objects.commit(node.queue_obj, [op])
        self.stats["failed"] += 1
        node.count("attempts_failed")
        log.info("task_attempt_failed", task=str(t), attempt=attempt, final=final, error=(outcome.error or "")[:200])

