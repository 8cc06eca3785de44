"""The state of work as conditions read it: :class:`conditions.WorkState` over the node's queue.

Rules may react to the state of work, not only to datasets: ``task_state(cid)``
and ``failures(job)`` (docs/conditions.md).  The Evaluator hands this to the
resolver it evaluates with (``ReplicaResolver.work``), and re-evaluates the
rules that call those functions whenever the queue changes
(:func:`conditions.reads_work`).

A job's failures are the tasks failed for good among those that read or write
its dataset (a job's stages read their inputs from it and write their results
to it).  Which tasks touch which dataset is indexed as the Evaluator inspects
each new task body (:meth:`QueueWork.index`), so ``failures()`` reads the
tasks of one dataset, never the whole queue; its answer is kept until the
queue changes, so many rules of one job share one reading per pass.
"""

from __future__ import annotations

from typing import Any, Protocol

from lattice import queue
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.queue import QueueView

from ..node import now_ms

#: Most datasets and tasks per dataset indexed (a hostile peer may enqueue
#: tasks naming many datasets; past this the oldest dataset is dropped).
MAX_DATASETS = 100_000


class WorkNode(Protocol):
    """What :class:`QueueWork` reads of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def queue(self) -> QueueView: ...

    def task_record(self, cid: CID) -> dict[str, Any]: ...


def datasets_of(rec: dict[str, Any]) -> list[CID]:
    """The datasets a task record reads (``input.dataset``) or writes (``result.destination.dataset``)."""
    out = []
    inp = rec.get("input")
    if type(inp) is dict and type(inp.get("dataset")) is CID:
        out.append(inp["dataset"])
    res = rec.get("result")
    dest = res.get("destination") if type(res) is dict else None
    if type(dest) is dict and type(dest.get("dataset")) is CID:
        out.append(dest["dataset"])
    return out


class QueueWork:
    """:class:`conditions.WorkState` over a node's queue view.

    Args:
        node: The node (its queue view and task bodies).
    """

    def __init__(self, node: WorkNode) -> None:
        self.node = node
        self._by_dataset: dict[CID, dict[CID, None]] = {}
        self._failures: dict[CID, list[dict[str, Any]]] = {}
        self._version = -1  # the queue version self._failures was read at

    def index(self, task: CID, rec: dict[str, Any]) -> None:
        """Note which datasets ``task`` (its validated body ``rec``) reads or writes."""
        for g in datasets_of(rec):
            tasks = self._by_dataset.get(g)
            if tasks is None:
                if len(self._by_dataset) >= MAX_DATASETS:
                    del self._by_dataset[next(iter(self._by_dataset))]
                tasks = self._by_dataset[g] = {}
            tasks[task] = None

    def task_state(self, task: CID) -> str | None:
        st = self.node.queue.status(task, now_ms())
        return None if st is None else st.state

    def job_failures(self, dataset: CID) -> list[dict[str, Any]]:
        version = self.node.queue.replica.version
        if version != self._version:
            self._failures.clear()
            self._version = version
        found = self._failures.get(dataset)
        if found is None:
            found = self._failures[dataset] = self._read_failures(dataset)
        return list(found)

    def _read_failures(self, dataset: CID) -> list[dict[str, Any]]:
        now = now_ms()
        out = []
        for t in self._by_dataset.get(dataset, ()):
            st = self.node.queue.status(t, now)
            if st is None or st.state != queue.FAILED:
                continue
            final = [f for f in st.failures if f.get("final")]
            error = max(final, key=lambda f: (f["n"], f["at"])).get("error") if final else None
            try:
                name = self.node.task_record(t).get("name")
            except (BlockNotFound, BadInput):
                name = None
            out.append({"task": t, "error": error if type(error) is str else None,
                        "name": name if type(name) is str else None})
        return sorted(out, key=lambda f: f["task"].raw)
