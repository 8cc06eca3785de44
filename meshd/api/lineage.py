"""``GET /v1/explain/{cid}``: where a task, a result or a dataset version came from.

Why it exists: a result is only as good as what made it.  Given a CID, this
answers from what the node already holds (the queue, the results, the
verdicts, the engine registry and the datasets it follows):

* a **task**: its engine with the manifest's name and every signature on it
  (publisher key and peer id, whether the signature verifies and whether
  this node trusts the publisher); its input (an inline value, or a dataset
  path with the dataset's current version and the tasks that write there);
  every attempt with its runner; the result records; the verifier's verdict;
  and what made it: the job and stage whose rule fires it, or nothing (it was
  enqueued directly);
* a **result** (the output CID of result records): each record with its
  task (equal outputs share one CID, so several tasks may have made it);
* a **dataset** (its genesis CID) or **dataset version** (one of its deltas):
  its name, current version, the job it holds if any, the author and paths
  of the version, and the tasks that write into it;
* an **engine**: the manifest and its signatures.

Inputs are explained recursively, up to ``depth`` levels: a task reading
``map/results`` of a job lists the map tasks that write there, and each of
those its own input.  What is *not* known: which version of an input
dataset a runner read (runners record no input version), so the answer gives
the dataset's version now and says so.  Each level lists at most
:data:`MAX_WRITERS` writers (``writers_total`` says how many there were).

Cost: the writers of a dataset come from :class:`WriterIndex`, which reads
each task's record once, as the queue's feed brings it (a task's destination
is content-addressed, so it never changes), instead of every task's record on
every request; a *result* CID is looked up in the results view's index by
output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from fastapi import APIRouter, Query

from conditions import ConditionError, ConditionOptions, parse_untrusted
from engines.manifest import load_manifest, signature_from_untrusted
from lattice import codec, queue, records, task
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.signing import peer_id_of

from ..errors import NotFound
from .models import ErrorOut
from ..node import now_ms, parse_cid
from ..roles import jobs

#: Writers of one input listed at most, per level.
MAX_WRITERS: Final = 20
#: The deepest recursion a request may ask for.
MAX_DEPTH: Final = 5
_DATASET = "dataset"


def _text(value: Any) -> Any:
    return codec.to_json(value)


class WriterIndex:
    """Tasks by the dataset their result goes into, kept up to date from the queue's feed.

    :meth:`writers` first indexes the tasks enqueued (or reopened) since the
    last call, reading each one's record once; a task whose record is not
    here yet is tried again on later calls.  Lives as long as the router.

    Args:
        node: The node (``queue``, ``task_record``, ``task_definition``).
    """

    def __init__(self, node: Any) -> None:
        self.node = node
        self._seen = 0  # how much of queue.tasks_since(0) is indexed
        self._by_dataset: dict[CID, dict[CID, str]] = {}  # genesis -> {task: path}, in enqueue order
        self._indexed: set[CID] = set()
        self._unread: dict[CID, None] = {}  # records not here yet: retried

    def _destination(self, cid: CID) -> tuple[CID, str] | None | bool:
        """``(genesis, path)``, None when the task writes no dataset, False when its record is not here."""
        try:
            rec = self.node.task_record(cid)
            dest = rec.get("result") or self.node.task_definition(rec).get("result")
        except BlockNotFound:
            return False
        except BadInput:
            return None
        return (dest["destination"]["dataset"], dest["destination"]["path"]) if dest else None

    def _index(self, tasks: list[CID]) -> None:
        for t in tasks:
            if t in self._indexed:
                continue  # a retry reopens a task: the feed brings it again
            dest = self._destination(t)
            if dest is False:
                self._unread[t] = None
                continue
            self._unread.pop(t, None)
            self._indexed.add(t)
            if dest is not None:
                self._by_dataset.setdefault(dest[0], {})[t] = dest[1]

    def writers(self, genesis: CID) -> dict[CID, str]:
        """``{task: path}`` of the tasks known to write into ``genesis``, in the order they were enqueued here."""
        new = self.node.queue.tasks_since(self._seen)
        self._seen += len(new)
        self._index(list(self._unread) + list(new))
        return self._by_dataset.get(genesis, {})


class Lineage:
    """Builds explanations from one node's views (no I/O beyond its block store).

    Args:
        node: The :class:`meshd.node.Node` (queue, results, trust, objects, store).
        trusted: ``publisher bytes -> bool``: whether this node trusts a publisher.
        writers: The node's :class:`WriterIndex` (a fresh one when None).
    """

    def __init__(self, node: Any, trusted: Callable[[bytes], bool], writers: WriterIndex | None = None) -> None:
        self.node = node
        self.trusted = trusted
        self.writers = writers if writers is not None else WriterIndex(node)
        self._job_tasks: dict[CID, tuple[str, str, str, str]] | None = None  # task -> job, name, stage, rule

    # -- what a CID is ---------------------------------------------------------

    def explain(self, cid: CID, depth: int) -> dict[str, Any]:
        """The lineage of ``cid``, ``depth`` levels of inputs deep.

        Raises:
            NotFound: The node knows no task, result, dataset, version or engine by that CID.
        """
        node = self.node
        if cid in node.queue:
            return self.task(cid, depth)
        obj = node.objects.get(cid)
        if obj is not None and obj.kind == _DATASET:
            return self.dataset(obj, None, depth)
        if node.engine_known(cid) and self._manifest(cid) is not None:
            return self.engine(cid)
        found = self._results_with_output(cid)
        if found:
            # Content addressing: tasks with equal outputs share the output CID, so there may be several.
            return {"kind": "result", "cid": str(cid), "results": [
                {"runner": r["runner"], "at": r["at"], "duration_s": r.get("duration_s"),
                 "task": self.task(r["task"], depth)} for r in found[:MAX_WRITERS]], "total": len(found)}
        delta = self._delta(cid)
        if delta is not None:
            obj = node.objects.get(delta.genesis)
            if obj is not None and obj.kind == _DATASET:
                return self.dataset(obj, delta, depth)
        raise NotFound(f"{cid} is no task, result, dataset, dataset version or engine this node knows",
                       code="not_found")

    # -- tasks -----------------------------------------------------------------

    def task(self, cid: CID, depth: int) -> dict[str, Any]:
        node = self.node
        st = node.queue.status(cid, now_ms())
        out: dict[str, Any] = {"kind": "task", "cid": str(cid), "name": None, "state": st.state if st else None}
        try:
            rec = node.task_record(cid)
            definition = node.task_definition(rec)
        except (BlockNotFound, BadInput) as exc:
            out["error"] = f"the task's body is not readable here: {exc}"
            return out
        out["name"] = rec.get("name") if isinstance(rec.get("name"), str) else None
        if st is not None and st.state == queue.FAILED:
            final = [f for f in st.failures if f.get("final")]
            out["reason"] = final[0].get("error") if final else None
        engine = task.engine_of(rec, definition)
        out["engine"] = self.engine(engine) if engine is not None else None
        out["input"] = self._input(rec.get("input"), depth)
        dest = rec.get("result") or definition.get("result")
        out["destination"] = None if not dest else {"action": dest["action"],
                                                    "dataset": str(dest["destination"]["dataset"]),
                                                    "path": dest["destination"]["path"]}
        out["attempts"] = [] if st is None else node._status_json(st, with_task=False)["attempts"]
        out["results"] = [{"runner": r["runner"], "output": str(r["output"]), "at": r["at"],
                           "duration_s": r.get("duration_s")} for r in node.results_view.results(cid)]
        verdict = node.trust.verdict(cid)
        out["verdict"] = _text(verdict) if verdict else None
        out["made_by"] = self._made_by(cid)
        return out

    def _input(self, value: Any, depth: int) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        if "value" in value:
            return {"value": _text(value["value"])}
        genesis, path = value["dataset"], value["path"]
        return {**self._dataset_ref(genesis), "path": path, "writers": self._writers(genesis, path, depth)}

    def _dataset_ref(self, genesis: CID) -> dict[str, Any]:
        obj = self.node.objects.get(genesis)
        ref: dict[str, Any] = {"dataset": str(genesis), "dataset_name": None, "version": None}
        if obj is not None:
            ref["dataset_name"] = obj.name
            # Runners record no input version: this is the version now.
            ref["version"] = [str(h) for h in obj.replica.heads]
            ref["version_note"] = "the dataset's version now (the version a runner read is not recorded)"
        return ref

    def _writers(self, genesis: CID, path: str, depth: int) -> dict[str, Any]:
        """Tasks whose result goes into ``genesis`` at ``path`` (or below, or above it)."""
        found = []
        q = path.strip("/")
        for t, dest_path in self.writers.writers(genesis).items():
            p = dest_path.strip("/")
            if p == q or p.startswith(q + "/") or q.startswith(p + "/") or not q:
                found.append(t)
        listed = found[:MAX_WRITERS]
        return {"total": len(found),
                "tasks": [self.task(t, depth - 1) if depth > 0 else {"kind": "task", "cid": str(t)} for t in listed]}

    def _made_by(self, cid: CID) -> dict[str, Any] | None:
        if self._job_tasks is None:
            self._job_tasks = self._index_job_tasks()
        hit = self._job_tasks.get(cid)
        if hit is None:
            return None
        job, name, stage, rule = hit
        return {"job": job, "job_name": name, "stage": stage, "rule": rule}

    def _index_job_tasks(self) -> dict[CID, tuple[str, str, str, str]]:
        # Every stage's tasks as its rule fires them (condition forced true),
        # the way GET /v1/jobs/{job} counts a stage's progress.
        node = self.node
        options = ConditionOptions()
        resolver = jobs.node_resolver(node)
        index: dict[CID, tuple[str, str, str, str]] = {}
        true = parse_untrusted("true", options)
        for obj in list(node.objects.objects.values()):
            if obj.kind != _DATASET:
                continue
            spec = obj.replica.state.register(jobs.SPEC_PATH)
            if type(spec) is not dict or spec.get("t") != jobs.JOB_TYPE or type(spec.get("stages")) is not list:
                continue
            try:
                entries = jobs.rules_from_record_untrusted(obj.replica.state.register(jobs.RULES_PATH), options)[0]
            except BadInput:
                continue
            for stage, entry in zip(spec["stages"], entries):
                always = jobs.RuleEntry(dataclasses.replace(entry.rule, condition="true", expr=true), entry.keyed)
                try:
                    fired = jobs.task_blocks(jobs.fire_entry(always, resolver, options))
                except (ConditionError, BadInput):  # its inputs are not there yet: no task of it exists
                    continue
                for c, _ in fired:
                    index.setdefault(c, (str(obj.genesis), str(spec.get("name")),
                                         str(stage.get("name") if type(stage) is dict else "?"),
                                         entry.rule.condition))
        return index

    # -- results, datasets, engines -------------------------------------------------

    def _results_with_output(self, output: CID) -> list[dict[str, Any]]:
        return self.node.results_view.with_output(output)

    def _delta(self, cid: CID) -> records.Delta | None:
        try:
            return records.delta_from_untrusted(cid, self.node.store.get(cid), verify=False)
        except (BlockNotFound, BadInput):
            return None

    def dataset(self, obj: Any, delta: records.Delta | None, depth: int) -> dict[str, Any]:
        genesis = obj.genesis
        out: dict[str, Any] = {"kind": "dataset" if delta is None else "dataset_version",
                               "cid": str(delta.cid if delta else genesis), "dataset": str(genesis),
                               "name": obj.name, "version": [str(h) for h in obj.replica.heads]}
        spec = obj.replica.state.register(jobs.SPEC_PATH)
        if type(spec) is dict and spec.get("t") == jobs.JOB_TYPE:
            out["job"] = {"job": str(genesis), "name": spec.get("name"),
                          "stages": [s.get("name") for s in spec.get("stages", []) if type(s) is dict]}
        paths: list[str] | None = None
        if delta is not None:
            out["author"] = peer_id_of(delta.author)
            out["height"] = delta.height
            out["parents"] = [str(p) for p in delta.parents]
            paths = sorted({str(op[1]) for op in delta.ops if len(op) > 1})
            out["paths"] = paths
        writers = [self._writers(genesis, p, depth) for p in (paths if paths else [""])]
        seen: dict[str, Any] = {}
        for w in writers:
            for t in w["tasks"]:
                seen.setdefault(t["cid"], t)
        out["writers"] = {"total": max((w["total"] for w in writers), default=0), "tasks": list(seen.values())}
        return out

    def _manifest(self, cid: CID) -> dict[str, Any] | None:
        try:
            return load_manifest(self.node.store, cid).to_record()
        except Exception:  # noqa: BLE001 - not a manifest, or its blocks are elsewhere
            return None

    def engine(self, cid: CID) -> dict[str, Any]:
        manifest = self._manifest(cid)
        sigs = []
        for s in self.node.engine_signatures(cid):
            try:
                sig = signature_from_untrusted(self.node.store.get(s))
            except (BlockNotFound, BadInput) as exc:
                sigs.append({"cid": str(s), "error": str(exc)})
                continue
            sigs.append({"cid": str(s), "publisher": sig.publisher.hex(), "peer_id": peer_id_of(sig.publisher),
                         "valid": sig.engine == cid and sig.verify(), "trusted_here": self.trusted(sig.publisher)})
        out: dict[str, Any] = {"kind": "engine", "cid": str(cid), "signatures": sigs,
                               "available": manifest is not None}
        if manifest is not None:
            out.update(name=manifest.get("name"), type=manifest.get("type"), protocol=manifest.get("protocol"))
        return out


def router(ctx: Any) -> APIRouter:
    """``GET /v1/explain/{cid}`` over ``ctx.node`` and ``ctx.host`` (its live trust policy; may be None)."""
    r = APIRouter(tags=["lineage"])
    writers = WriterIndex(ctx.node)

    def trusted(publisher: bytes) -> bool:
        host = getattr(ctx, "host", None)
        policy = getattr(host, "policy", None)
        return policy is not None and publisher in policy.trusted_publishers

    @r.get("/v1/explain/{cid}", responses={c: {"model": ErrorOut} for c in (400, 404, 422)})
    async def explain(cid: str, depth: int = Query(default=1, ge=0, le=MAX_DEPTH,
                                                   description="levels of inputs to explain")) -> Mapping[str, Any]:
        """The lineage of a task, result, dataset, dataset version or engine."""
        return Lineage(ctx.node, trusted, writers).explain(parse_cid(cid, "CID"), depth)

    return r
