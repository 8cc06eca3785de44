"""How a task's status reads in the API: ``GET /v1/tasks/{cid}``, ``/v1/tasks`` and ``/v1/results``.

:func:`status_json` builds a task's status document from the queue's
:class:`lattice.queue.TaskStatus` and what the node knows besides: its
attempts (each assignment with its failure or completion), checkpoints, the
result cache's source, the reason it ended (:func:`ended_reason`) and, for a
replicated task, how far verification got.  Kept apart from
:mod:`meshd.node`, whose :class:`~meshd.node.Node` reads it for the API: it
is the documents' shape (docs/api.md), not the node's state.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from lattice import codec, queue
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound

from ..roles.verify import group_outputs

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["ended_reason", "read_outputs", "result_json", "status_json"]

_ABSENT = object()  # an output whose block is not in the store (``read_outputs``)


def ended_reason(st: queue.TaskStatus) -> dict[str, Any]:
    """Why a task failed (its latest final failure) or who cancelled it and why; empty otherwise."""
    if st.state == queue.FAILED:
        final = [f for f in st.failures if f.get("final")]
        return {"reason": max(final, key=lambda f: (f["n"], f["at"])).get("error") if final else None}
    if st.state == queue.CANCELLED and st.cancels:
        first = min(st.cancels, key=lambda c: (c["at"], c["by"]))
        return {"reason": "cancelled" + (f": {first['reason']}" if first.get("reason") else ""),
                "cancelled": {"by": first["by"], "at": first["at"], "reason": first.get("reason", "")}}
    return {}


def status_json(node: Node, st: queue.TaskStatus, *, with_task: bool = True) -> dict[str, Any]:
    """Task ``st`` as ``GET /v1/tasks/{cid}`` shows it; ``with_task``: with its body (``/v1/tasks`` lists none)."""
    failures = {(f["by"], f["n"]): f for f in st.failures}
    completions = {c["by"]: c for c in st.completions}
    attempts = []
    for a in st.assignments:
        f = failures.pop((a.by, a.n), None)
        c = completions.get(a.by) if f is None else None
        attempts.append({
            "runner": a.by, "attempt": a.n, "started": a.at, "lease_until": a.until,
            "finished": (f or c or {}).get("at"), "ok": True if c else (False if f else None),
            "error": f.get("error") if f else None, "stderr": f.get("stderr", "") if f else "",
            "stolen": a.settle > 0,
        })
    for (by, n), f in failures.items():  # failures without a visible assignment
        attempts.append({"runner": by, "attempt": n, "started": None, "lease_until": None, "finished": f["at"],
                         "ok": False, "error": f.get("error"), "stderr": f.get("stderr", "")})
    out: dict[str, Any] = {"cid": str(st.task), "state": st.state, "name": _task_name(node, st.task),
                           "attempts": attempts, "result": None}
    cks = node.checkpoints.of(st.task)
    if cks:
        out["checkpoints"] = [{"runner": c.by, "attempt": c.n, "at": c.at, "state": {"/": str(c.state)},
                               "size": c.size} for c in cks]
    if st.completions:
        first = min(st.completions, key=lambda c: (c["at"], c["by"]))
        out["result"] = {"/": str(first["result"])}
        if type(first.get("cached")) is CID:
            out["cache"] = _cache_source(node.store, first["cached"])
    out.update(ended_reason(st))
    if st.generation:
        out["generation"] = st.generation  # retries so far (docs/protocol.md, *Cancel and retry*)
    if st.replication is not None:
        recs = node.policy.results_of(st.task)
        groups = [len(g) for g in (group_outputs(recs, node.output_value, None) if recs else [])]
        k, q = st.replication
        out["verification"] = {
            "replicas": k, "quorum": q, "replicas_wanted": st.replicas_wanted,
            "results": len(recs), "largest_agreement": groups[0] if groups else 0,
            "state": "verified" if st.state == queue.COMPLETED else "awaiting quorum",
            "verdict": codec.to_json(node.trust.verdict(st.task)) if node.trust.verdict(st.task) else None,
        }
        live = node.live_runner_count()
        if st.state != queue.COMPLETED and live < k:
            # Otherwise silent: the task would sit at "awaiting quorum" for ever.
            out["verification"]["warning"] = (f"needs {k} distinct runners, and {live} live runner(s) "
                                              f"are in the mesh: it cannot reach its quorum until more join")
    if with_task:
        try:
            out["task"] = codec.to_json(node.task_record(st.task))
        except BlockNotFound:
            out["task"] = None
        except BadInput as exc:
            out["task"] = None
            out["rejected"] = str(exc)
    return out


def _cache_source(store: Any, record: CID) -> dict[str, Any]:
    """The source of a completion from the result cache: its result record, and that record's task
    and runner when the record block is here (docs/protocol.md, *Result cache*)."""
    out: dict[str, Any] = {"hit": True, "result": {"/": str(record)}}
    try:
        src = codec.decode_untrusted(store.get(record))
    except (BlockNotFound, BadInput):
        return out
    if type(src) is dict and type(src.get("task")) is CID:
        out["task"] = {"/": str(src["task"])}
        out["runner"] = src.get("runner")
    return out


def _task_name(node: Node, cid: CID) -> str | None:
    try:
        name = node.task_record(cid).get("name")
    except (BlockNotFound, BadInput):
        return None
    return name if isinstance(name, str) else None


def result_json(rec: dict[str, Any], output: Any) -> dict[str, Any]:
    """One result record as ``GET /v1/results/{cid}`` lists it, with its output's JSON value."""
    return {"runner": rec["runner"], "output": output, "output_cid": str(rec["output"]),
            # Only v1 records carry a signature; the delta that carries a v2 record authenticates it.
            "signature": base64.b64encode(rec["s"]).decode() if "s" in rec else None, "at": rec["at"],
            "duration_s": rec.get("duration_s"), "stderr": rec.get("stderr", ""),
            # An output over 256 KiB is also a UnixFS file of its JSON text (`ipfs cat`).
            **({"file": str(rec["file"])} if type(rec.get("file")) is CID else {})}


async def read_outputs(node: Node, recs: list[dict[str, Any]]) -> list[Any]:
    """The JSON values of the records' outputs (None for one that cannot be read).

    One thread hop when every output is here (the usual case: outputs ride
    inline in the result's delta), since on a busy loop each hop costs a
    long poll's answer a millisecond or more; outputs not here are fetched
    from the peers (their runners first, 5 s at most) and read in a second.
    """
    def here(cid: CID) -> Any:
        return _output_or_none(node, cid) if node.store.has(cid) else _ABSENT

    values = await node.objects.run_io(lambda: [here(r["output"]) for r in recs])
    missing = [i for i, v in enumerate(values) if v is _ABSENT]
    if missing and node.mesh is not None:
        await node.mesh.fetch_blocks([recs[i]["output"] for i in missing], timeout_s=5.0,
                                     prefer=[recs[i]["runner"] for i in missing])
        again = await node.objects.run_io(lambda: [_output_or_none(node, recs[i]["output"]) for i in missing])
        for i, v in zip(missing, again):
            values[i] = v
    return [None if v is _ABSENT else v for v in values]


def _output_or_none(node: Node, cid: CID) -> Any:
    try:
        return codec.to_json(node.output_value(cid))
    except (BlockNotFound, BadInput):
        return None
