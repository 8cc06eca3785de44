"""Pipeline files: decoding and validating the JSON a client submits as a job.

A pipeline (``POST /v1/jobs``) is untrusted client JSON; :meth:`Pipeline.from_json_untrusted`
turns it into a validated :class:`Pipeline` of :class:`Stage` values, or raises
:class:`~meshd.errors.BadRequest` (``bad_pipeline`` / ``bad_cid``) naming the field.
The format is documented in the :mod:`meshd.roles.jobs` module docstring.

This is separate from :mod:`meshd.roles.jobs` because it is pure input validation: it
needs no node, rules or datasets, and is what the ``pipeline`` fuzz target
exercises.  Planning and running a job from a validated pipeline stays in
:mod:`meshd.roles.jobs`, which re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lattice import codec, task
from lattice.cid import CID
from lattice.errors import BadInput, LatticeError

from ..errors import BadRequest

__all__ = ["JOB_PLACEHOLDER", "MAX_STAGES", "Pipeline", "Stage", "submitted_column"]

#: What a stage's condition writes for the job's own dataset (its genesis CID, once created).
JOB_PLACEHOLDER = "$JOB"

MAX_STAGES = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STAGE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_STAGE_FIELDS = frozenset({"name", "engine", "engine_name", "action", "source", "split", "condition",
                           "constraints"})
_PIPELINE_FIELDS = frozenset({"name", "input", "stages"})


@dataclass(frozen=True, slots=True)
class Stage:
    """One validated pipeline stage (paths are relative to the job dataset)."""

    name: str
    action: str
    engine: CID | None
    engine_name: str | None
    source: str
    split: str | None
    condition: str | None
    constraints: tuple[dict[str, Any], ...]

    @property
    def results(self) -> str:
        return f"{self.name}/results"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A validated pipeline file: build it with :meth:`from_json_untrusted`."""

    name: str
    input: Any
    stages: tuple[Stage, ...]

    @classmethod
    def from_json_untrusted(cls, obj: object) -> "Pipeline":
        """Decode a pipeline from client JSON.

        Raises:
            BadRequest: code ``bad_pipeline``, the message naming the field.
        """
        if type(obj) is not dict:
            raise _bad("the pipeline must be a JSON object")
        unknown = sorted(set(obj) - _PIPELINE_FIELDS)
        if unknown:
            raise _bad(f"unknown field(s) {unknown[:5]}; allowed: {sorted(_PIPELINE_FIELDS)}")
        name = obj.get("name", "job")
        if type(name) is not str or not _NAME.fullmatch(name):
            raise _bad("name: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        if obj.get("input") is None:
            raise _bad("input: required (any JSON value but null)")
        try:
            value = codec.from_json(obj["input"])
            codec.encode(value)
        except (LatticeError, ValueError, TypeError, RecursionError) as exc:
            raise _bad(f"input: not encodable as DAG-CBOR: {exc}") from None
        raw = obj.get("stages")
        if type(raw) is not list or not 1 <= len(raw) <= MAX_STAGES:
            raise _bad(f"stages: must be a list of 1 to {MAX_STAGES} stages")
        stages: list[Stage] = []
        for i, item in enumerate(raw):
            stages.append(_stage(i, item, stages))
        if len({s.name for s in stages}) != len(stages):
            raise _bad("stages: stage names must be unique")
        return cls(name, value, tuple(stages))


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_pipeline")


def _path(value: object, field: str) -> str:
    if type(value) is not str or not value or len(value) > 256:
        raise _bad(f"{field}: must be a dataset path of at most 256 characters")
    parts = value.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == "_job":
        raise _bad(f"{field}: {value!r} is not a valid path inside the job (no empty, '.', '..' "
                   "segments; _job is reserved)")
    return "/".join(parts)


def _stage(i: int, item: object, before: list[Stage]) -> Stage:
    where = f"stages[{i}]"
    if type(item) is not dict:
        raise _bad(f"{where}: must be an object")
    unknown = sorted(set(item) - _STAGE_FIELDS)
    if unknown:
        raise _bad(f"{where}: unknown field(s) {unknown[:5]}; allowed: {sorted(_STAGE_FIELDS)}")
    name = item.get("name")
    if type(name) is not str or not _STAGE.fullmatch(name):
        raise _bad(f"{where}.name: required, must match [a-z0-9][a-z0-9_-]{{0,31}}")
    where = f"stage {name!r}"
    action = item.get("action", "enqueue")
    if action not in ("enqueue", "map", "reduce"):
        raise _bad(f"{where}: action must be 'enqueue', 'map' or 'reduce'")
    if not before and action == "reduce":
        raise _bad(f"{where}: the first stage cannot be a reduce")
    if ("engine" in item) == ("engine_name" in item):
        raise _bad(f"{where}: give exactly one of engine ({{\"/\": cid}}) or engine_name")
    engine = None
    engine_name = item.get("engine_name")
    if "engine" in item:
        link = item["engine"]
        if type(link) is not dict or set(link) != {"/"} or type(link["/"]) is not str:
            raise _bad(f'{where}.engine: must be a link {{"/": "<cid>"}}')
        try:
            engine = CID.parse_untrusted(link["/"])
        except LatticeError as exc:
            raise BadRequest(f"{where}.engine: {exc}", code="bad_cid") from None
    elif type(engine_name) is not str or not _NAME.fullmatch(engine_name):
        raise _bad(f"{where}.engine_name: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    default_source = f"{name}/input" if not before else before[-1].results
    source = _path(item.get("source", default_source), f"{where}.source")
    split = None
    if action == "reduce":
        default_split = before[-1].source if before[-1].action == "map" else None
        if "split" not in item and default_split is None:
            raise _bad(f"{where}.split: required when the previous stage is not a map")
        split = _path(item.get("split", default_split), f"{where}.split")
    elif "split" in item:
        raise _bad(f"{where}.split: only a reduce stage takes a split")
    condition = item.get("condition")
    if condition is not None and type(condition) is not str:
        raise _bad(f"{where}.condition: must be a string")
    constraints = item.get("constraints", [])
    try:
        task.normalize_task_untrusted({"input": {"value": 0}, "taskDefinition": {
            "runner": {"type": "bin-json-runner"}, "constraints": constraints}})
    except BadInput as exc:
        raise _bad(f"{where}.constraints: {exc}") from None
    return Stage(name, action, engine, engine_name, source, split, condition, tuple(constraints))


def submitted_column(condition: str, genesis: str, line: int, column: int) -> int:
    """The column in the *submitted* ``condition`` of a ``column`` counted after ``$JOB`` became ``genesis``.

    Why: the parser only ever sees the substituted text, where every
    ``$JOB`` before the error is ``len(genesis) - 4`` characters longer, so
    its columns point past the mistake in what the client wrote.  A column
    inside a substituted CID maps to its ``$JOB``.

    Args:
        condition: The stage's condition as submitted.
        genesis: The text each ``$JOB`` was replaced with.
        line: 1-based line of the error (columns on other lines need no change).
        column: 1-based column of the error in the substituted line.
    """
    lines = condition.split("\n")
    if not 0 < line <= len(lines):
        return column
    text, shift = lines[line - 1], len(genesis) - len(JOB_PLACEHOLDER)
    before, i = 0, text.find(JOB_PLACEHOLDER)
    while i != -1:
        start = i + 1 + before * shift  # this $JOB's 1-based column once substituted
        if column < start:
            break
        if column < start + len(genesis):
            return i + 1
        before += 1
        i = text.find(JOB_PLACEHOLDER, i + len(JOB_PLACEHOLDER))
    return column - before * shift
