"""Pydantic models of the HTTP API's request and response bodies.

Request models validate the *shape* of what clients send, mirroring
``lattice.task.normalize_task_untrusted`` so that a schema violation is
reported as a precise 422 before the node is involved.  The API still passes
the client's original JSON on to the node, which stays the authority (it may
reject what the schema let through with a 400 ``bad_record``); free-form
objects (``metadata``, ``conditions``, constraint values) reach it untouched.

A malformed CID inside a body fails validation with the custom error type
``bad_cid``; the API turns that into a 400 ``bad_cid`` (the same answer as a
bad CID in the URL) rather than a generic 422.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag
from pydantic_core import PydanticCustomError

from lattice.cid import CID
from lattice.errors import BadCID
from lattice.task import CONSTRAINT_TYPES, RUNNER_TYPES

BAD_CID: str = "bad_cid"
TaskState = Literal["available", "assigned", "completed", "failed", "cancelled"]


def _check_cid(text: str) -> str:
    try:
        CID.parse_untrusted(text)
    except BadCID as exc:
        raise PydanticCustomError(BAD_CID, "invalid CID: {reason}", {"reason": str(exc)}) from None
    return text


CidStr = Annotated[str, AfterValidator(_check_cid)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Link(_Strict):
    """An IPLD link, ``{"/": "<cid>"}`` (base32 ``b…`` or base58btc ``z…``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    target: CidStr = Field(alias="/", description="The linked CID")


def _check_relative(path: str) -> str:
    if path.startswith("/"):
        raise PydanticCustomError("relative_path", "path must not start with '/'")
    return path


RelativePath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_relative)]


def _check_runner_type(value: str) -> str:
    if value not in RUNNER_TYPES:
        raise PydanticCustomError("runner_type", "runner.type must be one of {types}", {"types": sorted(RUNNER_TYPES)})
    return value


def _check_constraint_type(value: str) -> str:
    if value not in CONSTRAINT_TYPES:
        raise PydanticCustomError(
            "constraint_type", "constraint type must be one of {types}", {"types": sorted(CONSTRAINT_TYPES)}
        )
    return value


class DatasetRef(_Strict):
    """A location inside a dataset: its genesis link plus a relative slash-separated path."""

    dataset: Link
    path: RelativePath = Field(examples=["split/input"])


class InlineInput(_Strict):
    """Task input given inline instead of by dataset reference (``index`` is set by ``map``)."""

    value: JsonValue
    index: int | None = Field(default=None, ge=0)


class RunnerSpec(_Strict):
    """Which engine runs the task; engine-specific ``metadata`` is passed through."""

    type: Annotated[str, AfterValidator(_check_runner_type)] = Field(examples=["docker-json-runner"])
    engine: Link | None = None
    manifest: Link | None = Field(default=None, description="Alias of engine")
    metadata: dict[str, Any] | None = None


class ResultSpec(_Strict):
    """Where a task's output is written: ``set`` replaces, ``append`` adds to a list."""

    action: Literal["set", "append"] = "set"
    destination: DatasetRef


def _result_kind(value: Any) -> str:
    return "location" if isinstance(value, dict) and "destination" not in value and "action" not in value \
        else "spec"


#: Listing 2's ``{action, destination}``, or Listing 3's ``{dataset, path}`` (set there).
AnyResult = Annotated[
    Annotated[ResultSpec, Tag("spec")] | Annotated[DatasetRef, Tag("location")],
    Discriminator(_result_kind),
]


class Constraint(_Strict):
    """A runner requirement, e.g. ``{"type": "arch", "value": "x86_64"}``."""

    type: Annotated[str, AfterValidator(_check_constraint_type)] = Field(examples=["arch"])
    value: JsonValue = None


Constraints = Annotated[list[Constraint], Field(max_length=32)]


class Verify(_Strict):
    """Replicated execution: run on ``replicas`` runners, accept ``quorum`` agreeing results."""

    replicas: int | None = Field(default=None, ge=1, le=16)
    quorum: int | None = Field(default=None, ge=1, le=16)


class TaskDefinition(_Strict):
    """The reusable part of a task (whitepaper Listing 2)."""

    runner: RunnerSpec
    result: AnyResult | None = None
    conditions: list[dict[str, Any]] | None = None
    constraints: Constraints | None = None


def _input_kind(value: Any) -> str:
    # Choose the branch up front so errors describe one shape, not both.
    return "value" if isinstance(value, dict) and "value" in value else "dataset"


def _definition_kind(value: Any) -> str:
    return "link" if isinstance(value, dict) and "/" in value else "inline"


class TaskIn(_Strict):
    """One task, in the whitepaper's Listing 2 form (see ``lattice.task``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "input": {
                        "dataset": {"/": "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
                        "path": "split/input",
                    },
                    "taskDefinition": {
                        "runner": {
                            "type": "docker-json-runner",
                            "metadata": {"image": "computes/fibonacci-sum-split:latest"},
                        }
                    },
                    "result": {
                        "action": "set",
                        "destination": {
                            "dataset": {"/": "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
                            "path": "split/results",
                        },
                    },
                }
            ]
        },
    )

    input: Annotated[
        Annotated[DatasetRef, Tag("dataset")] | Annotated[InlineInput, Tag("value")],
        Discriminator(_input_kind),
    ]
    taskDefinition: Annotated[
        Annotated[TaskDefinition, Tag("inline")] | Annotated[Link, Tag("link")],
        Discriminator(_definition_kind),
    ]
    result: AnyResult | None = None
    status: Annotated[
        Annotated[Link, Tag("link")] | Annotated[DatasetRef, Tag("location")],
        Discriminator(_definition_kind),
    ] | None = Field(default=None, description="Where the whitepaper's client keeps the task's status; "
                                                "kept in the record, not used by meshd")
    constraints: Constraints | None = None
    verify: Verify | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    checkpoint_s: int | None = Field(default=None, ge=1, le=86400,
                                     description="run with checkpoints, the engine saving its state about this often")
    cache: bool | None = Field(default=None, description="false: run even when an earlier result of the same "
                               "deterministic engine on the same input could complete the task (result cache)")
    name: str | None = Field(default=None, max_length=256)
    nonce: str | None = Field(default=None, max_length=256)
    t: Literal["meshd/task"] | None = None
    v: Literal[1] | None = None


class BulkTasksIn(_Strict):
    """Several tasks enqueued in one request."""

    tasks: list[TaskIn] = Field(min_length=1, max_length=10_000)


class DatasetCreateIn(_Strict):
    """Create a dataset (a GOHO); ``value`` is its initial content."""

    name: str | None = Field(default=None, max_length=256)
    value: dict[str, JsonValue] | None = None


class DatasetPutIn(_Strict):
    """Write ``value`` at a path: ``set`` replaces it, ``append`` adds to a list."""

    value: JsonValue
    action: Literal["set", "append"] = "set"


def _check_relpath(name: str) -> str:
    norm = posixpath.normpath(name)
    if not name or name.startswith("/") or norm.startswith("..") or norm != name or "\\" in name:
        raise PydanticCustomError("bad_path", "file name must be a normalised relative path: {name}", {"name": name})
    return name


def _decode_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("bad_base64", "file content is not valid base64") from None


RelPath = Annotated[str, AfterValidator(_check_relpath)]
Base64Bytes = Annotated[str, AfterValidator(_decode_b64)]


class EngineManifest(_Open):
    """What an engine is and how to start it; extra keys are kept."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    executable: RelPath
    protocol: str | None = Field(default=None, examples=["json-lines"])
    resources: dict[str, Any] | None = None
    interpreter: str | None = Field(default=None, examples=["python3"])
    deterministic: bool | None = Field(default=None, description="Same input, same output: the mesh may complete "
                                       "a task from an earlier result of this engine on the same input (result cache)")


class EngineIn(_Strict):
    """An engine upload: the manifest plus its files, base64-encoded by relative path."""

    manifest: EngineManifest
    files: dict[RelPath, Base64Bytes] = Field(min_length=1, max_length=1000)


# ----------------------------------------------------------------- responses
# Documentation only: responses are passed through from the node unvalidated,
# so a richer node answer never turns into a 500.


class ErrorBody(_Strict):
    """The body of every error response."""

    code: str = Field(examples=["bad_cid"])
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorOut(_Strict):
    """``{"error": {"code", "message"}}``."""

    error: ErrorBody


class EnqueuedOut(_Open):
    """One enqueued task."""

    cid: str
    state: str


class EnqueuedBulkOut(_Open):
    """Several enqueued tasks, in request order."""

    tasks: list[EnqueuedOut]


class AttemptOut(_Open):
    """One execution attempt of a task."""

    runner: str | None = None
    started: Any = None
    finished: Any = None
    ok: bool | None = None
    error: str | None = None
    stderr: str | None = None
    stolen: bool | None = Field(default=None, description="claimed from another runner's share (a steal)")


class CheckpointOut(_Open):
    """One saved engine state of a task (its next runner resumes from the latest)."""

    runner: str
    attempt: int
    at: int
    state: dict[str, str]
    size: int


class TaskStatusOut(_Open):
    """A task's state, attempts and result link."""

    cid: str
    state: str
    name: str | None = Field(default=None, description="the task's name, when it has one")
    attempts: list[AttemptOut] = Field(default_factory=list)
    checkpoints: list[CheckpointOut] | None = Field(default=None, description="saved states, oldest first "
                                                    "(tasks with checkpoint_s)")
    result: dict[str, str] | None = None
    task: dict[str, Any] | None = None


class TaskListOut(_Open):
    """A page of tasks; pass ``next`` as ``after`` for the next page."""

    tasks: list[TaskStatusOut]
    next: str | None = None


class ResultOut(_Open):
    """One runner's signed output."""

    runner: str | None = None
    output: Any = None
    output_cid: str | None = None
    signature: str | None = None
    at: Any = None


class ResultsOut(_Open):
    """All results reported for a task."""

    task: str
    results: list[ResultOut]
    state: str | None = Field(default=None, description="the task's state here (null: not in this node's queue)")
    reason: str | None = Field(default=None, description="why a failed task failed, or who cancelled it and why")


class QueueOut(_Open):
    """Task counts by state."""

    available: int
    assigned: int
    completed: int
    failed: int
    cancelled: int = 0
    total: int


class CidOut(_Open):
    """A created object's CID."""

    cid: str


class DatasetValueOut(_Open):
    """The value at a dataset path."""

    dataset: str
    path: str
    value: Any = None


class EnginesOut(_Open):
    """Known engines."""

    engines: list[dict[str, Any]]


class NodeOut(_Open):
    """This node's identity, inventory and counters."""

    peer_id: str
    version: str
    roles: list[str]
    inventory: dict[str, Any]
    addresses: list[str] = Field(default_factory=list)
    counters: dict[str, Any] = Field(default_factory=dict)


class HealthOut(_Open):
    """Liveness."""

    ok: bool
