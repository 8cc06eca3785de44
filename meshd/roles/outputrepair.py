"""Lost output writes: a job whose work is done but whose dataset lacks an output gets it written again.

A runner finishing a task makes three commits: the result record, the write
of the output to the task's destination dataset, and the queue's completion
(:meth:`meshd.roles.attempts.Attempts.record`).  Each is announced on its own.
When the runner dies between announcing them and serving their blocks, its
peers may hold the completion and the result record but never the dataset
write: the task is ``completed`` everywhere, nothing will run it again, and
the job's next stage waits for good on an output that exists, signed, in the
results object.  (Seen in the fibsum test that SIGKILLs a runner mid-map.)

The write is recoverable from what did arrive, and re-making it is safe:

* the completion names its result record, which names the output;
* an ``append`` adds to a grow-only set, so adding an element already there
  changes nothing;
* a ``set`` is re-made only when the path holds no value at all, so a later
  write to the same path is never overwritten by an older output.

Who repairs, and when: every Evaluator sweeps the jobs it follows every
``interval_s``.  A job that is unfinished while none of its tasks is
available or running has sat idle; once it has been idle for ``grace_s`` (time
for the runner's own write to arrive by gossip), the sweep re-makes each
completed task's missing write from its result record, one commit per
dataset, and the write wakes the rules as any write does.  Several
evaluators may repair the same job at once; the writes are equal, so the
only cost is a few redundant deltas.

Only jobs are swept (their task lists are known from their rules); a lone
task with a destination that loses its write the same way is not repaired.

Trust: the output written is the one the completion's own result record
names, and only a record that :class:`lattice.results.ResultsView` accepted
(its runner's key authored it) counts.  A completion by a banned peer does
not count (:meth:`lattice.queue.QueueView.status` leaves it out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from conditions import ConditionOptions
from lattice import codec, dataset, queue
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.results import ResultsView
from lattice.task import result_of

from ..errors import NotFound
from ..node import now_ms
from ..runtime.logs import get_logger
from . import jobs

log = get_logger("meshd.outputrepair")


@dataclass(frozen=True)
class RepairOptions:
    """When lost writes are looked for.

    Attributes:
        interval_s: Seconds between sweeps over the followed jobs (default 5).
        grace_s: Seconds a job must have sat unfinished with no task
            available or running before its writes are checked (default 15):
            long enough for a runner's own write to arrive by gossip.
        max_jobs: Jobs looked at per sweep, newest first (default 200).
    """

    interval_s: float = 5.0
    grace_s: float = 15.0
    max_jobs: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= 3600:
            raise ValueError(f"interval_s must be within (0, 3600], got {self.interval_s!r}")
        if not 0 <= self.grace_s <= 86_400:
            raise ValueError(f"grace_s must be within 0..86400, got {self.grace_s!r}")
        if type(self.max_jobs) is not int or self.max_jobs < 1:
            raise ValueError(f"max_jobs must be a positive int, got {self.max_jobs!r}")


class RepairNode(jobs.JobsNode, Protocol):
    """What the repair reads and writes (``meshd.node.Node`` satisfies it)."""

    @property
    def results_view(self) -> ResultsView: ...

    def task_record(self, cid: CID) -> dict[str, Any]: ...

    def task_definition(self, rec: dict[str, Any]) -> dict[str, Any]: ...

    def output_value(self, cid: CID) -> Any: ...

    def dataset_obj(self, genesis: CID, *, create: bool = ...) -> Any: ...


def _output_of_completion(node: RepairNode, task: CID, completion: dict[str, Any]) -> Any:
    """The output a completion's result record names, or raises LookupError when it cannot be trusted or read."""
    want = completion.get("result")
    for rec in node.results_view.results(task):
        if codec.cid_of(rec) == want:
            try:
                return node.output_value(rec["output"])
            except (BlockNotFound, BadInput) as exc:
                raise LookupError(f"output {rec['output']} unreadable: {exc}") from None
    raise LookupError(f"no accepted result record {want}")


def lost_writes(node: RepairNode, tasks: Iterable[CID], now: int) -> dict[CID, list[list[Any]]]:
    """The destination writes of completed ``tasks`` that their datasets lack, by dataset genesis.

    A task counts only when it is completed, has a destination, its
    destination dataset is followed here, and its completion's result record
    and output are here; anything else is skipped (a later sweep looks again).
    """
    out: dict[CID, list[list[Any]]] = {}
    for t in tasks:
        st = node.queue.status(t, now)
        if st is None or st.state != queue.COMPLETED or not st.completions:
            continue
        try:
            rec = node.task_record(t)
            dest = result_of(rec, node.task_definition(rec))
        except (BlockNotFound, BadInput):
            continue
        if not dest:
            continue
        where = dest["destination"]
        ds = node.dataset_obj(where["dataset"])
        if ds is None:
            continue
        try:
            output = _output_of_completion(node, t, st.completions[0])
        except LookupError:
            continue
        path, state = where["path"], ds.replica.state
        op = dataset.write_op(dest["action"], path, output)
        key = op[1]
        if dest["action"] == dataset.SET:
            missing = state.register_entry(key) is None
        else:
            missing = not state.contains(key, output)
        if missing:
            out.setdefault(where["dataset"], []).append(op)
    return out


class OutputRepair:
    """The sweep: see the module doc.  Started by the Evaluator inside its own nursery."""

    def __init__(self, node: RepairNode, options: RepairOptions | None = None, *,
                 conditions: ConditionOptions | None = None) -> None:
        self.node = node
        self.options = options or RepairOptions()
        self.conditions = conditions or ConditionOptions()
        self._idle_since: dict[CID, float] = {}  # job -> when it was first seen idle and unfinished
        self.rewritten = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep every ``interval_s`` until cancelled.

        Cancellation during a sweep may leave some datasets repaired and others
        not; the next start sweeps again (the writes are idempotent).
        """
        task_status.started()
        while True:
            await trio.sleep(self.options.interval_s)
            await self.sweep()

    def _idle_jobs(self, now: int) -> list[CID]:
        """Jobs unfinished with no task available or running, idle for ``grace_s`` or longer."""
        clock = trio.current_time()
        seen: set[CID] = set()
        ripe = []
        for j in jobs.job_ids(self.node, limit=self.options.max_jobs):
            job = CID.parse_untrusted(j["job"])
            status = jobs.job_status(self.node, job, options=self.conditions, now_ms=now)
            if status["state"] not in ("running", "stalled"):
                continue
            if any(s["enqueued"] > s["done"] + s["failed"] for s in status["stages"]):
                continue  # a task is still available or running: its write may be on its way
            seen.add(job)
            since = self._idle_since.setdefault(job, clock)
            if clock - since >= self.options.grace_s:
                ripe.append(job)
        for job in [j for j in self._idle_since if j not in seen]:
            del self._idle_since[job]
        return ripe

    async def sweep(self) -> int:
        """One sweep; returns how many writes it re-made."""
        now = now_ms()
        made = 0
        for job in self._idle_jobs(now):
            try:
                tasks = jobs.job_tasks(self.node, job, options=self.conditions)
            except NotFound:
                continue
            self._idle_since[job] = trio.current_time()  # look again only after another grace period
            for genesis, ops in lost_writes(self.node, tasks, now).items():
                ds = self.node.dataset_obj(genesis)
                if ds is None:
                    continue
                await self.node.objects.commit(ds, ops)
                made += len(ops)
                log.warning("output_rewritten", job=str(job), dataset=str(genesis), writes=len(ops),
                            paths=",".join(sorted({op[1] for op in ops}))[:300])
            await trio.lowlevel.checkpoint()
        self.rewritten += made
        if made:
            self.node.count("outputs_rewritten", made)
        return made


__all__ = ["OutputRepair", "RepairNode", "RepairOptions", "lost_writes"]
