"""The versioned HTTP API (``/v1``) over a :class:`NodeService`.

:func:`create_app` builds a FastAPI application; :mod:`meshd.api.server`
serves it with Hypercorn's trio worker.  The app holds no state of its own:
every route validates its input, calls one :class:`NodeService` method and
returns the node's JSON-ready answer.

Guarantees, each covered by ``tests/test_api_contract_inprocess.py``:

* Every error body is ``{"error": {"code": "<snake_case>", "message": "..."}}``.
* Bad input never yields a 5xx: malformed JSON is 400 ``malformed_json``, a
  bad CID anywhere is 400 ``bad_cid``, any other schema violation is 422
  ``validation_failed`` (with ``details``), an unknown object is 404.
* A body over ``max_body_bytes`` is 413 before the application sees it, even
  when ``Content-Length`` is absent or lies: the limit middleware counts the
  bytes actually received.
* Every request passes :class:`meshd.api.guard.ApiGuard` before anything
  else: a foreign ``Host`` or ``Origin`` is 403, a missing or wrong token 401,
  too little scope 403 ``insufficient_scope``, a body that is not
  ``application/json`` 415 (on loopback too: any web page can reach it).

Bodies are parsed here rather than by FastAPI so that the node receives the
client's JSON exactly as sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound, StoreError

from ..config import ApiOptions
from ..errors import ApiError, BadRequest, InternalError, InvalidRequest, ServiceUnavailable
from ..runtime.logs import get_logger
from . import dashboard
from . import models as m
from .guard import ROUTE_SCOPES, ApiGuard, GuardPolicy, error_body
from .guard import send_error as _send_error

API_VERSION = "v1"
_log = get_logger("meshd.api")  # the logger name predates meshd/api/
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class NodeService(Protocol):
    """What the API needs from the node; values are JSON-ready (CIDs as str).

    Implementations signal client mistakes with :class:`meshd.errors.BadRequest`,
    :class:`~meshd.errors.NotFound`, :class:`~meshd.errors.Conflict` or a
    :class:`lattice.errors.BadInput` subclass; anything else becomes a 500.
    """

    async def enqueue(self, tasks: list[dict]) -> list[dict]: ...
    async def task_status(self, cid: str) -> dict: ...
    async def list_tasks(self, state: str | None, limit: int, after: str | None) -> dict: ...
    async def results(self, task_cid: str, wait_s: float = 0.0) -> dict: ...
    async def queue_counts(self) -> dict: ...
    async def create_dataset(self, name: str | None, value: dict | None) -> dict: ...
    async def dataset_get(self, dataset: str, path: str) -> dict: ...
    async def dataset_put(self, dataset: str, path: str, value: object, action: str) -> dict: ...
    async def add_engine(self, name: str, files: dict[str, bytes], executable: str, manifest: dict) -> dict: ...
    async def list_engines(self) -> dict: ...
    async def node_info(self) -> dict: ...
    async def health(self) -> dict: ...


# ----------------------------------------------------------------- errors


def _snake(name: str) -> str:
    # BadCID -> bad_cid, BadEncoding -> bad_encoding
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Drop "input"/"ctx"/"url": they may echo large or binary client data.
    return [{"loc": list(e.get("loc", ()))[:32], "type": e.get("type"), "msg": _msg(e)} for e in errors]


#: Pydantic names the request model in some messages ("... or instance of TaskIn"): internal names, dropped.
_MODEL_NAME = re.compile(r" or instance of \w+")


def _msg(error: dict[str, Any]) -> str:
    return _MODEL_NAME.sub("", str(error.get("msg", "invalid")))


def _where(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "body"
    # A deeply nested bad value yields a huge location; keep messages short.
    return where if len(where) <= 120 else where[:60] + "…" + where[-59:]


def _from_validation(errors: list[dict[str, Any]]) -> ApiError:
    errors = errors[:20]
    types = {e.get("type") for e in errors}
    if "json_invalid" in types:
        return BadRequest("request body is not valid JSON", code="malformed_json")
    if m.BAD_CID in types:
        first = next(e for e in errors if e.get("type") == m.BAD_CID)
        return BadRequest(f"{_where(first)}: {_msg(first)}", code="bad_cid")
    first = errors[0] if errors else {}
    return InvalidRequest(f"{_where(first)}: {_msg(first)}", details=_validation_details(errors))


def _install_error_handlers(app: FastAPI, rejections: MutableMapping[str, int] | None = None) -> None:
    def counted(code: str) -> str:
        if rejections is not None:
            rejections[code] = rejections.get(code, 0) + 1
        return code

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        extra = {"details": exc.details} if isinstance(exc, InvalidRequest) and exc.details else {}
        return _error(exc.status, counted(exc.code) if exc.status < 500 else exc.code, exc.message, **extra)

    async def on_bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return _error(400, counted(_snake(type(exc).__name__)), str(exc))

    async def on_block_not_found(request: Request, exc: BlockNotFound) -> JSONResponse:
        return _error(404, "block_not_found", str(exc))

    async def on_request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await on_api_error(request, _from_validation(list(exc.errors())))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Reached only for bugs in this module: node failures are converted
        # to InternalError (and logged) in _call.
        _log.error("api_unhandled", method=request.method, path=request.url.path, error=repr(exc))
        return _error(500, "internal_error", "internal error; see the daemon log")

    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(BadInput, on_bad_input)  # type: ignore[arg-type]
    app.add_exception_handler(BlockNotFound, on_block_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)


# ----------------------------------------------------------------- middleware


class BodyLimitMiddleware:
    """Rejects bodies over ``max_bytes`` with 413, counting bytes as they arrive.

    The whole body is read (up to the limit) before the application runs and
    then replayed to it.  Counting received bytes, not trusting
    ``Content-Length``, is what makes the limit hold for chunked uploads and
    for clients whose header lies.  An honest oversized ``Content-Length`` is
    refused before a single body byte is read.

    Args:
        app: The wrapped ASGI application.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_msg = f"request body exceeds the limit of {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await _send_error(send, 400, "bad_request", "invalid Content-Length header")
                    return
                if int(value) > self.max_bytes:
                    await _send_error(send, 413, "payload_too_large", limit_msg)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # Client went away before finishing the body; nothing to answer.
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, "payload_too_large", limit_msg)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for http.disconnect

        await self.app(scope, replay, send)


# ----------------------------------------------------------------- helpers


async def _call(operation: str, awaitable: Awaitable[T]) -> T:
    """Await a node method, turning unexpected failures into a logged 500.

    Client errors (ApiError, BadInput, BlockNotFound) pass through to their
    handlers; ``trio.Cancelled`` is a BaseException and is never caught.
    """
    try:
        return await awaitable
    except (ApiError, BadInput, BlockNotFound):
        raise
    except StoreError as exc:
        raise ServiceUnavailable(f"block store unavailable: {exc}", code="store_unavailable") from None
    except Exception as exc:
        _log.exception("node_call_failed", operation=operation, error=repr(exc))
        raise InternalError("internal error; see the daemon log") from exc


async def _read_json_untrusted(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None
    except ValueError as exc:  # an integer over sys.get_int_max_str_digits() digits
        raise BadRequest(f"request body is not acceptable JSON: {exc}", code="malformed_json") from None
    except RecursionError:
        raise BadRequest("request body nests too deeply", code="malformed_json") from None


def _validate_untrusted(adapter: TypeAdapter[T], data: Any) -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _from_validation(list(exc.errors())) from None


def _cid(text: str) -> str:
    """A path/query CID in canonical base32; BadCID (400) when malformed."""
    return str(CID.parse_untrusted(text))


def _json_schema_body(model: Any, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}}


def _install_openapi(app: FastAPI, body_models: dict[str, Any]) -> None:
    # Bodies are parsed by hand (see module doc), so FastAPI does not know
    # their models; add them to the generated schema here.
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        # Each operation names the token scope it needs (meshd.api.guard).
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                scope = ROUTE_SCOPES.get((method.upper(), path))
                if scope is not None:
                    operation["x-meshd-scope"] = scope.label
        for name, model in body_models.items():
            tree = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
            components.update(tree.pop("$defs", {}))
            components[name] = tree
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERRORS = {400: {"model": m.ErrorOut}, 404: {"model": m.ErrorOut}, 422: {"model": m.ErrorOut}}
_TASK_BODY = m.TaskIn | m.BulkTasksIn
_TASK = TypeAdapter(m.TaskIn)
_BULK = TypeAdapter(m.BulkTasksIn)
_DATASET_CREATE = TypeAdapter(m.DatasetCreateIn)
_DATASET_PUT = TypeAdapter(m.DatasetPutIn)
_ENGINE = TypeAdapter(m.EngineIn)


def create_app(node: NodeService, options: ApiOptions, *, version: str = "0.1.0",
               routers: Sequence[Any] = (), rejections: MutableMapping[str, int] | None = None) -> FastAPI:
    """Build the ``/v1`` API application over ``node``.

    Args:
        node: The node the routes delegate to.
        options: Listen address and allowed hosts, body limit, tokens.
        version: Reported in the OpenAPI document.
        routers: Extra ``fastapi.APIRouter``s contributed by roles (archive,
            jobs, peers, trust...); they share the error handlers and limits.
        rejections: Counts of refused requests by error code, kept up to date
            by the guard and the error handlers (``GET /metrics`` reads them).

    Returns:
        An ASGI application; constructing it does no I/O.

    Raises:
        ConfigError: ``options.token`` (the admin token) is unset.
    """
    policy = GuardPolicy.from_options(options)
    app = FastAPI(
        title="meshd API",
        version=version,
        description="Local control API of a meshd node. Errors: {\"error\": {\"code\", \"message\"}}.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    _install_error_handlers(app, rejections)
    _install_openapi(app, {"TaskBody": _TASK_BODY, "DatasetCreateIn": m.DatasetCreateIn,
                           "DatasetPutIn": m.DatasetPutIn, "EngineIn": m.EngineIn})
    # Middleware added last runs first: the guard decides before the body is even read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=options.max_body_bytes)
    app.add_middleware(ApiGuard, policy=policy, rejections=rejections)

    app.include_router(dashboard.router())  # GET / and its files: open, no secret in them
    for router in routers:
        app.include_router(router)

    @app.post("/v1/tasks", status_code=201, tags=["tasks"],
              responses={201: {"model": m.EnqueuedOut | m.EnqueuedBulkOut}, **_ERRORS},
              openapi_extra=_json_schema_body("TaskBody", "One task (Listing 2 form) or {\"tasks\": [...]}"))
    async def enqueue_tasks(request: Request) -> JSONResponse:
        """Enqueue one task, or several with ``{"tasks": [...]}``."""
        body = await _read_json_untrusted(request)
        # Pick the branch by the "tasks" key rather than validating the union,
        # so error messages speak about one shape only.
        if isinstance(body, dict) and "tasks" in body:
            if body["tasks"] == []:
                raise BadRequest("expected a non-empty list of tasks", code="no_tasks")
            _validate_untrusted(_BULK, body)
            out = await _call("enqueue", node.enqueue(list(body["tasks"])))
            return JSONResponse({"tasks": out}, status_code=201)
        _validate_untrusted(_TASK, body)
        out = await _call("enqueue", node.enqueue([body]))
        return JSONResponse(out[0], status_code=201)

    @app.get("/v1/tasks/{cid}", tags=["tasks"], responses={200: {"model": m.TaskStatusOut}, **_ERRORS})
    async def get_task(cid: str) -> JSONResponse:
        """A task's state, attempts and result link."""
        return JSONResponse(await _call("task_status", node.task_status(_cid(cid))))

    @app.get("/v1/tasks", tags=["tasks"], responses={200: {"model": m.TaskListOut}, **_ERRORS})
    async def list_tasks(
        state: m.TaskState | None = Query(default=None, description="Only tasks in this state"),
        limit: int = Query(default=100, ge=1, le=1000),
        after: str | None = Query(default=None, description="The previous page's `next`"),
    ) -> JSONResponse:
        """A page of tasks, oldest first."""
        after_cid = _cid(after) if after else None
        return JSONResponse(await _call("list_tasks", node.list_tasks(state, limit, after_cid)))

    @app.get("/v1/results/{task_cid}", tags=["tasks"], responses={200: {"model": m.ResultsOut}, **_ERRORS})
    async def get_results(task_cid: str, wait: float = Query(0.0, ge=0.0, le=60.0, description="seconds to wait for a first result (long poll)")) -> JSONResponse:
        """Every runner's signed output for a task."""
        return JSONResponse(await _call("results", node.results(_cid(task_cid), wait)))

    @app.get("/v1/queue", tags=["tasks"], responses={200: {"model": m.QueueOut}})
    async def queue() -> JSONResponse:
        """Task counts by state."""
        return JSONResponse(await _call("queue_counts", node.queue_counts()))

    @app.post("/v1/datasets", status_code=201, tags=["datasets"],
              responses={201: {"model": m.CidOut}, **_ERRORS},
              openapi_extra=_json_schema_body("DatasetCreateIn", "Optional name and initial value"))
    async def create_dataset(request: Request) -> JSONResponse:
        """Create a dataset; the answer is its genesis CID."""
        parsed = _validate_untrusted(_DATASET_CREATE, await _read_json_untrusted(request))
        out = await _call("create_dataset", node.create_dataset(parsed.name, parsed.value))
        return JSONResponse(out, status_code=201)

    @app.get("/v1/datasets/{cid}", tags=["datasets"], responses={200: {"model": m.DatasetValueOut}, **_ERRORS})
    async def get_dataset_root(cid: str) -> JSONResponse:
        """The whole value of a dataset."""
        return JSONResponse(await _call("dataset_get", node.dataset_get(_cid(cid), "")))

    @app.get("/v1/datasets/{cid}/{path:path}", tags=["datasets"],
             responses={200: {"model": m.DatasetValueOut}, **_ERRORS})
    async def get_dataset(cid: str, path: str) -> JSONResponse:
        """The value at ``path`` in a dataset."""
        return JSONResponse(await _call("dataset_get", node.dataset_get(_cid(cid), path)))

    @app.put("/v1/datasets/{cid}/{path:path}", tags=["datasets"],
             responses={200: {"model": m.DatasetValueOut}, **_ERRORS},
             openapi_extra=_json_schema_body("DatasetPutIn", "The value and how to apply it"))
    async def put_dataset(cid: str, path: str, request: Request) -> JSONResponse:
        """Set or append a value at ``path`` in a dataset."""
        dataset = _cid(cid)
        parsed = _validate_untrusted(_DATASET_PUT, await _read_json_untrusted(request))
        return JSONResponse(await _call("dataset_put", node.dataset_put(dataset, path, parsed.value, parsed.action)))

    @app.post("/v1/engines", status_code=201, tags=["engines"],
              responses={201: {"model": m.CidOut}, **_ERRORS},
              openapi_extra=_json_schema_body("EngineIn", "Manifest plus base64-encoded files"))
    async def add_engine(request: Request) -> JSONResponse:
        """Add an engine from a manifest and its base64-encoded files."""
        body = await _read_json_untrusted(request)
        parsed = _validate_untrusted(_ENGINE, body)
        manifest = parsed.manifest
        if manifest.executable not in parsed.files:
            raise InvalidRequest(
                f"manifest.executable {manifest.executable!r} is not among the uploaded files",
                details=[{"loc": ["manifest", "executable"], "type": "missing_file", "msg": "not in files"}],
            )
        files: dict[str, bytes] = dict(parsed.files)  # type: ignore[arg-type]  # validated to bytes
        out = await _call(
            "add_engine", node.add_engine(manifest.name, files, manifest.executable, dict(body["manifest"]))
        )
        return JSONResponse(out, status_code=201)

    @app.get("/v1/engines", tags=["engines"], responses={200: {"model": m.EnginesOut}})
    async def list_engines() -> JSONResponse:
        """Engines this node knows."""
        return JSONResponse(await _call("list_engines", node.list_engines()))

    @app.get("/v1/health", tags=["node"], responses={200: {"model": m.HealthOut}})
    async def health() -> JSONResponse:
        """Liveness; open without a token."""
        return JSONResponse(await _call("health", node.health()))

    @app.get("/v1/node", tags=["node"], responses={200: {"model": m.NodeOut}})
    async def node_info() -> JSONResponse:
        """Peer id, version, roles, inventory, addresses and counters."""
        return JSONResponse(await _call("node_info", node.node_info()))

    return app
