"""Task records: the unit of work in the queue, content-addressed.

A task is the whitepaper's Listing 2 JSON, normalized to a DAG-CBOR record
``{"t": "meshd/task", "v": 1, ...}`` whose CID names it.  The same JSON always
gives the same CID, so enqueueing is idempotent and several evaluators that
generate the same task dedupe for free.

Accepted fields (JSON form, links as ``{"/": "bafy…"}``):

* ``input``: ``{"dataset": link, "path": str}`` or ``{"value": any}``
  (optionally with ``"index"`` and ``"key"``, which ``map`` adds).
* ``taskDefinition``: a link to a task-definition block, or inline
  ``{"runner": {"type": "bin-json-runner"|"docker-json-runner", "engine": link,
  "metadata": {...}}, "result"?, "conditions"?, "constraints"?}``.  A
  ``docker-json-runner`` may name its engine by ``metadata.image`` alone (an
  image name or digest); the node resolves it to a published engine when the
  task is enqueued (:func:`image_of` gives the name).  ``metadata`` is passed
  to the engine.
* ``result``: ``{"action": "set"|"append", "destination": {"dataset": link,
  "path": str}}``, or Listing 3's ``{"dataset": link, "path": str}`` (no
  action), which is stored as ``{"action": "set", "destination": {...}}``.
  A ``result`` in the task definition applies when the task has none
  (:func:`result_of`).
* ``status``: a link, or ``{"dataset": link, "path": str}``: where the
  whitepaper's client keeps a task's status.  It is kept in the record (so
  whitepaper tasks are accepted as written); meshd itself reports a task's
  state from the queue, never from this field.
* ``constraints``: ``[{"type": "os"|"arch"|"label"|"min_memory"|"gpu",
  "value": ...}]``; ``verify``: ``{"replicas": k, "quorum": q}``;
  ``max_attempts``: int; ``name``: str; ``nonce``: str (to enqueue the same
  work twice on purpose); ``checkpoint_s``: int 1..86400, the task runs with
  checkpoints, its engine saving its state about this often
  (:mod:`lattice.checkpoints`); ``cache``: ``false`` makes the task run even
  when an earlier result of its deterministic engine on the same input could
  complete it (:mod:`lattice.resultcache`).  ``true`` is the default and is not
  kept, so it names the same task as no field.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .cid import CID
from .errors import BadEncoding, BadInput, BadRecord

RUNNER_TYPES = frozenset({"bin-json-runner", "docker-json-runner"})
CONSTRAINT_TYPES = frozenset({"os", "arch", "label", "min_memory", "gpu"})
_TOP = frozenset({"input", "taskDefinition", "result", "status", "constraints", "verify", "max_attempts", "name",
                  "nonce", "checkpoint_s", "cache", "t", "v"})
#: Largest encoded task (bytes).
MAX_TASK_BYTES = 1024 * 1024


def _bad(msg: str) -> BadRecord:
    return BadRecord(msg)


def _link(value: Any, what: str) -> CID:
    if type(value) is not CID:
        raise _bad(f"{what} must be a link {{\"/\": \"<cid>\"}}")
    return value


def _path(value: Any, what: str) -> str:
    if type(value) is not str or not value or len(value) > 1024 or value.startswith("/"):
        raise _bad(f"{what} must be a relative path string")
    return value


def _location(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict or set(value) != {"dataset", "path"}:
        raise _bad(f"{what} must be {{dataset, path}}")
    return {"dataset": _link(value["dataset"], f"{what}.dataset"), "path": _path(value["path"], f"{what}.path")}


def _result(value: Any) -> dict[str, Any]:
    if type(value) is dict and set(value) == {"dataset", "path"}:
        # Listing 3's form: a location with no action means "set it there".
        return {"action": "set", "destination": _location(value, "result")}
    if type(value) is not dict or set(value) - {"action", "destination"}:
        raise _bad("result must be {action, destination} or {dataset, path}")
    action = value.get("action", "set")
    if action not in ("set", "append"):
        raise _bad("result.action must be 'set' or 'append'")
    dest = value.get("destination")
    if type(dest) is not dict or set(dest) != {"dataset", "path"}:
        raise _bad("result.destination must be {dataset, path}")
    return {"action": action, "destination": {"dataset": _link(dest["dataset"], "destination.dataset"), "path": _path(dest["path"], "destination.path")}}


def _runner(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _bad("taskDefinition.runner must be an object")
    rtype = value.get("type")
    if type(rtype) is not str or rtype not in RUNNER_TYPES:  # a dict/list type would raise TypeError in the set test
        raise _bad(f"runner.type must be one of {sorted(RUNNER_TYPES)}")
    if set(value) - {"type", "engine", "metadata", "manifest"}:
        raise _bad("runner has unknown fields")
    out: dict[str, Any] = {"type": rtype}
    if "engine" in value:
        out["engine"] = _link(value["engine"], "runner.engine")
    if "manifest" in value:
        out["engine"] = _link(value["manifest"], "runner.manifest")
    if "metadata" in value:
        if type(value["metadata"]) is not dict:
            raise _bad("runner.metadata must be an object")
        out["metadata"] = value["metadata"]
    return out


def _constraints(value: Any) -> list[dict[str, Any]]:
    if type(value) is not list or len(value) > 32:
        raise _bad("constraints must be a list of at most 32 items")
    out = []
    for c in value:
        if type(c) is not dict or type(c.get("type")) is not str or c.get("type") not in CONSTRAINT_TYPES \
                or set(c) - {"type", "value"}:
            raise _bad(f"each constraint must be {{type: {'|'.join(sorted(CONSTRAINT_TYPES))}, value}}")
        out.append(c)
    return out


def _definition(value: Any) -> Any:
    if type(value) is CID:
        return value
    if type(value) is not dict:
        raise _bad("taskDefinition must be a link or an object")
    if set(value) - {"runner", "result", "conditions", "constraints"}:
        raise _bad("taskDefinition has unknown fields")
    out: dict[str, Any] = {}
    if "runner" not in value:
        raise _bad("taskDefinition.runner is required")
    out["runner"] = _runner(value["runner"])
    if "result" in value:
        out["result"] = _result(value["result"])
    if "conditions" in value:
        if type(value["conditions"]) is not list:
            raise _bad("conditions must be a list")
        out["conditions"] = value["conditions"]
    if "constraints" in value:
        out["constraints"] = _constraints(value["constraints"])
    return out


def normalize_task_untrusted(obj: Any) -> dict[str, Any]:
    """Validate a task (JSON already converted by :func:`codec.from_json`).

    Returns the canonical task record.  Raises BadInput subclasses.
    """
    if type(obj) is not dict:
        raise _bad("a task must be an object")
    unknown = set(obj) - _TOP
    if unknown:
        raise _bad(f"unknown task fields: {sorted(unknown)}")
    if obj.get("t", "meshd/task") != "meshd/task" or obj.get("v", 1) != 1:
        raise _bad("task type/version must be meshd/task v1")
    task: dict[str, Any] = {"t": "meshd/task", "v": 1}
    inp = obj.get("input")
    if type(inp) is not dict:
        raise _bad("task.input is required: {dataset, path} or {value}")
    if "value" in inp:
        if set(inp) - {"value", "index", "key"}:
            raise _bad("inline input must be {value[, index][, key]}")
        task["input"] = dict(inp)
    elif set(inp) == {"dataset", "path"}:
        task["input"] = {"dataset": _link(inp["dataset"], "input.dataset"), "path": _path(inp["path"], "input.path")}
    else:
        raise _bad("task.input must be {dataset, path} or {value}")
    if "taskDefinition" not in obj:
        raise _bad("task.taskDefinition is required")
    task["taskDefinition"] = _definition(obj["taskDefinition"])
    if "result" in obj:
        task["result"] = _result(obj["result"])
    if "status" in obj:
        st = obj["status"]
        task["status"] = st if type(st) is CID else _location(st, "status")
    if "constraints" in obj:
        task["constraints"] = _constraints(obj["constraints"])
    if "verify" in obj:
        v = obj["verify"]
        if type(v) is not dict or set(v) - {"replicas", "quorum"} or any(type(x) is not int or not 1 <= x <= 16 for x in v.values()):
            raise _bad("verify must be {replicas: 1..16, quorum: 1..16}")
        task["verify"] = v
    if "max_attempts" in obj:
        if type(obj["max_attempts"]) is not int or not 1 <= obj["max_attempts"] <= 100:
            raise _bad("max_attempts must be an integer 1..100")
        task["max_attempts"] = obj["max_attempts"]
    if "checkpoint_s" in obj:
        if type(obj["checkpoint_s"]) is not int or not 1 <= obj["checkpoint_s"] <= 86400:
            raise _bad("checkpoint_s must be an integer 1..86400")
        task["checkpoint_s"] = obj["checkpoint_s"]
    if "cache" in obj:
        if type(obj["cache"]) is not bool:
            raise _bad("cache must be true or false")
        if obj["cache"] is False:
            task["cache"] = False
    for k in ("name", "nonce"):
        if k in obj:
            if type(obj[k]) is not str or len(obj[k]) > 256:
                raise _bad(f"{k} must be a string of at most 256 chars")
            task[k] = obj[k]
    return task


def task_from_json_untrusted(obj: Any) -> tuple[CID, bytes, dict[str, Any]]:
    """Normalize user JSON into a task block: ``(cid, bytes, record)``."""
    try:
        record = normalize_task_untrusted(codec.from_json(obj))
        cid, data = codec.encode_block(record)
    except BadInput:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadEncoding(f"task is not encodable: {exc}") from None
    if len(data) > MAX_TASK_BYTES:
        raise _bad(f"task is {len(data)} bytes, more than {MAX_TASK_BYTES}")
    return cid, data, record


def task_from_block_untrusted(data: bytes) -> dict[str, Any]:
    """Decode and validate a task block that came from a peer.

    A task body in the shared queue may have been written by any member, so
    its bytes are checked as strictly as a task submitted through the API:
    canonical DAG-CBOR, then the same schema.  The block's CID was checked
    when it entered the store, so only its meaning is checked here.

    Returns:
        The canonical task record (what :func:`normalize_task_untrusted` gives).

    Raises:
        BadInput: The bytes are not DAG-CBOR, or not a valid task.
    """
    if len(data) > MAX_TASK_BYTES:
        raise _bad(f"task block is {len(data)} bytes, more than {MAX_TASK_BYTES}")
    return normalize_task_untrusted(codec.decode_untrusted(data, max_size=MAX_TASK_BYTES))


def definition_from_block_untrusted(data: bytes) -> dict[str, Any]:
    """Decode and validate a linked task-definition block from a peer.

    Raises:
        BadInput: The bytes are not DAG-CBOR, or not a task definition.
    """
    value = _definition(codec.decode_untrusted(data, max_size=MAX_TASK_BYTES))
    if type(value) is not dict:
        raise _bad("a linked taskDefinition must be an object, not another link")
    return value


def engine_of(task: dict[str, Any], definition: dict[str, Any] | None = None) -> CID | None:
    """The engine CID a task names (its definition's ``runner.engine``).

    The one home of this rule: the API's submit check, the runner and the
    replication policy (through ``Node.task_engine``) all ask here.

    Args:
        task: A validated task record (:func:`task_from_block_untrusted`).
        definition: Its linked definition, validated
            (:func:`definition_from_block_untrusted`), when the caller has
            resolved the link; ignored when the definition is inline.

    Returns:
        The engine, or None when the definition is linked and not given, or
        names no engine.
    """
    td = task.get("taskDefinition")
    if type(td) is not dict:
        td = definition
    engine = td.get("runner", {}).get("engine") if type(td) is dict else None
    return engine if type(engine) is CID else None


def result_of(task: dict[str, Any], definition: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Where a task's output goes: its own ``result``, else its definition's.

    Listing 2 puts ``result`` on the task, while a definition shared by many
    tasks may carry it too; the task's own wins.

    Args:
        task: A validated task record.
        definition: Its linked definition, validated, when the caller has
            resolved the link; ignored when the definition is inline.

    Returns:
        The normalized ``{"action", "destination"}``, or None (output is kept
        in the results object only).
    """
    if task.get("result") is not None:
        return task["result"]
    td = task.get("taskDefinition")
    if type(td) is not dict:
        td = definition
    res = td.get("result") if type(td) is dict else None
    return res if type(res) is dict else None


def image_of(task: dict[str, Any], definition: dict[str, Any] | None = None) -> str | None:
    """The ``metadata.image`` a ``docker-json-runner`` task names, when it names no engine CID.

    Returns:
        The image name or digest as written, or None when the task names an
        engine, is not a Docker task, or names no image.
    """
    td = task.get("taskDefinition")
    if type(td) is not dict:
        td = definition
    runner = td.get("runner") if type(td) is dict else None
    if type(runner) is not dict or runner.get("type") != "docker-json-runner" or "engine" in runner:
        return None
    image = (runner.get("metadata") or {}).get("image")
    return image if type(image) is str and image else None


def metadata_of(task: dict[str, Any], definition: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The runner's ``metadata`` (passed to the engine), or None."""
    td = task.get("taskDefinition")
    if type(td) is not dict:
        td = definition
    runner = td.get("runner") if type(td) is dict else None
    meta = runner.get("metadata") if type(runner) is dict else None
    return meta if type(meta) is dict and meta else None


def with_engine(task: dict[str, Any], engine: CID) -> dict[str, Any]:
    """A copy of a task with an inline definition whose runner names ``engine``.

    The node fixes the engine that ``metadata.image`` resolved to when the
    task is enqueued, so every runner and verifier runs the same engine
    whatever the engines registry says later.
    """
    td = dict(task["taskDefinition"])
    td["runner"] = {**td["runner"], "engine": engine}
    return {**task, "taskDefinition": td}


def constraints_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Constraints of a validated task record, top-level and inline-definition ones."""
    td = task.get("taskDefinition")
    extra = td.get("constraints", []) if type(td) is dict else []
    return list(task.get("constraints", [])) + list(extra)
