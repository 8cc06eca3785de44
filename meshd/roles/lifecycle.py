"""Cancel and retry of tasks and jobs, and waiting on many tasks: what the API asks of the node.

Not a role: the helpers the lifecycle routes (:mod:`meshd.api.lifecycle`) call.

The records are :mod:`lattice.lifecycle`'s (and a job's ``_job/cancelled``,
:mod:`meshd.roles.jobs`); this module decides, on the node the API asked,
whether an operation makes sense now (a completed task is not cancelled, a
running one is not retried) and writes the records under the node's key.
What happens next is every node's own reading of the replicated records: the
Runner that runs a cancelled task stops its engine, and every Evaluator
stops firing a cancelled job's rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from conditions import ConditionOptions
from lattice import lifecycle, queue
from lattice.cid import CID

from ..errors import Conflict, NotFound
from ..node import Node, now_ms
from . import jobs

#: States a task leaves only by a retry (or never, for ``completed``).
ENDED = frozenset({queue.COMPLETED, queue.FAILED, queue.CANCELLED})


def _status(node: Node, cid: CID) -> queue.TaskStatus:
    st = node.queue.status(cid, now_ms())
    if st is None:
        raise NotFound(f"task {cid} is not in the queue", code="task_not_found")
    return st


async def cancel_task(node: Node, cid: CID, reason: str = "") -> dict[str, Any]:
    """Cancel ``cid``'s current generation; the task's status after it.

    Idempotent: a task already cancelled is answered as it is.

    Raises:
        NotFound: ``task_not_found``.
        Conflict: ``task_ended`` (it completed or failed: nothing to stop).
    """
    st = _status(node, cid)
    if st.state == queue.CANCELLED:
        return await node.task_status(str(cid))
    if st.state in (queue.COMPLETED, queue.FAILED):
        raise Conflict(f"task {cid} has {st.state}: there is nothing to cancel"
                       + (" (retry it with POST /v1/tasks/{cid}/retry)" if st.state == queue.FAILED else ""),
                       code="task_ended")
    await node.objects.commit(node.queue_obj, [lifecycle.cancel_op(cid, node.peer_id, now_ms(), st.generation,
                                                                   reason)])
    node.count("tasks_cancelled")
    return await node.task_status(str(cid))


async def retry_task(node: Node, cid: CID) -> dict[str, Any]:
    """Start a new generation of a failed or cancelled task, with fresh attempts.

    Raises:
        NotFound: ``task_not_found``.
        Conflict: ``task_not_ended`` (it is available, running or completed),
            or ``task_replicated`` (a replicated task: enqueue it again with
            a ``nonce``).
    """
    st = _status(node, cid)
    if st.state not in (queue.FAILED, queue.CANCELLED):
        hint = " (enqueue it again with a \"nonce\" to run it once more)" if st.state == queue.COMPLETED else ""
        raise Conflict(f"task {cid} is {st.state}: only failed or cancelled tasks are retried{hint}",
                       code="task_not_ended")
    if st.replication is not None:
        raise Conflict(f"task {cid} is replicated: its done replicas stay done, so it is not retried; "
                       "enqueue it again with a \"nonce\"", code="task_replicated")
    base = node.queue.next_attempt(cid) - 1
    await node.objects.commit(node.queue_obj, [lifecycle.retry_op(cid, node.peer_id, now_ms(), st.generation + 1,
                                                                  base)])
    node.count("tasks_retried")
    return await node.task_status(str(cid))


async def cancel_job(node: Node, job: CID, *, options: ConditionOptions, reason: str = "") -> dict[str, Any]:
    """Cancel a job: its rules stop firing everywhere, and its open tasks are cancelled.

    Write order: the job's cancel first, so no evaluator that has it fires
    another task, then the cancels of the tasks made so far.  An evaluator
    that fired a task before the job's cancel reached it may still enqueue
    it; that task then runs (cancel it on its own).

    Raises:
        NotFound: ``job_not_found``.
    """
    tasks = jobs.job_tasks(node, job, options=options)
    obj = node.objects.get(job)
    assert obj is not None  # job_tasks found it
    now = now_ms()
    if not jobs.is_cancelled(obj.replica):
        await node.objects.commit(obj, [jobs.cancel_record(node.peer_id, now)])
    ops = []
    for t in dict.fromkeys(tasks):
        st = node.queue.status(t, now)
        if st is not None and st.state not in ENDED:
            ops.append(lifecycle.cancel_op(t, node.peer_id, now, st.generation, reason or f"job {job} cancelled"))
    if ops:
        await node.objects.commit(node.queue_obj, ops)
        node.count("tasks_cancelled", len(ops))
    return {"job": str(job), "state": "cancelled", "tasks_cancelled": len(ops)}


async def _wait_any(node: Node, since: Sequence[tuple[Any, int]], timeout_s: float) -> None:
    """Return once any object changed after its version, or after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            async def one(obj: Any, version: int) -> None:
                await node.objects.wait_changed(obj, since=version)
                nursery.cancel_scope.cancel()

            for obj, version in since:
                nursery.start_soon(one, obj, version)


async def ended_results(node: Node, cids: Sequence[CID], *, keepalive_s: float = 15.0
                        ) -> AsyncIterator[dict[str, Any] | None]:
    """Yield each task's results answer (``GET /v1/results/{cid}``) as the task ends, in the order they end.

    Yields None every ``keepalive_s`` without news, so a stream can show it
    is alive.  Ends when every task has ended.  A task's answer comes when it
    is completed, failed or cancelled: a retried task that ends again is not
    reported twice.  Cancellation: nothing to undo.
    """
    left = dict.fromkeys(cids)
    while left:
        # The versions are read before the states, so no change between the two is missed.
        since = [(node.results_obj, node.results_obj.version), (node.queue_obj, node.queue_obj.version)]
        now = now_ms()
        done = [c for c in left if (st := node.queue.status(c, now)) is not None and st.state in ENDED]
        for c in done:
            del left[c]
            yield await node.results(str(c))
        if not left:
            return
        if not done:
            before = trio.current_time()
            await _wait_any(node, since, keepalive_s)
            if trio.current_time() - before >= keepalive_s:
                yield None


__all__ = ["ENDED", "cancel_job", "cancel_task", "ended_results", "retry_task"]
