"""HTTP routes for engine administration (see :mod:`meshd.api.engine_admin`).

Two pieces, both thin: they validate input and call one
:class:`~meshd.api.engine_admin.EngineAdmin` method.

* :func:`router` — JSON routes mounted in the ``/v1`` app like any role router::

      POST /v1/engines/{cid}/sign          sign with this node's key
      POST /v1/engines/{cid}/signatures    {"record": "<base64 meshd/engine-sig block>"}
      POST /v1/engines/trust               {"publisher": "<64 hex> | <peer id>"}
      POST /v1/engines/allow               {"cid": "<engine CID>"}
      GET  /v1/engines/policy              live policy, Docker availability, counters

* :func:`with_docker_upload` — ``POST /v1/engines/docker?name=&tag=&cmd=&protocol=
  &timeout_s=&memory_mb=&sign=`` with the raw ``docker save`` tarball as the
  body.  It wraps the app *outside* the API's body-limit middleware, which
  buffers whole bodies up to ``[api] max_body_bytes``: an image is streamed
  to disk chunk by chunk under its own limit (``[docker] max_image_mb``).
  Being outside the app, it is outside the app's :class:`~meshd.api.guard.ApiGuard`
  too, so it gets a guard of its own with the same Host/Origin rules, the
  ``admin`` scope and ``Content-Type: application/x-tar``; it keeps the one
  error shape and 413 for an oversized ``Content-Length`` before any body byte.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..config import ApiOptions
from ..errors import ApiError, BadRequest
from ..runtime.logs import get_logger
from .app import error_body
from .engine_admin import DockerUpload, EngineAdmin
from .guard import TAR, ApiGuard, GuardPolicy, required_access

log = get_logger("meshd.api_engines")

UPLOAD_PATH = "/v1/engines/docker"


async def _json_object_untrusted(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="bad_request")
    return body


def _string_field(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field {key!r} must be a non-empty string", code="bad_request")
    return value


def router(admin: EngineAdmin) -> APIRouter:
    """The JSON engine-administration routes over ``admin``."""
    r = APIRouter(tags=["engines"])

    @r.post("/v1/engines/trust")
    async def trust(request: Request) -> JSONResponse:
        """Trust a publisher key (persisted in config.toml, applied live)."""
        body = await _json_object_untrusted(request)
        return JSONResponse(await admin.trust(_string_field(body, "publisher")))

    @r.post("/v1/engines/allow")
    async def allow(request: Request) -> JSONResponse:
        """Allow-list an engine CID (persisted in config.toml, applied live)."""
        body = await _json_object_untrusted(request)
        return JSONResponse(await admin.allow(_string_field(body, "cid")))

    @r.get("/v1/engines/policy")
    async def policy() -> JSONResponse:
        """The live engine policy and the engine host's counters."""
        return JSONResponse(admin.policy())

    @r.post("/v1/engines/{cid}/sign", status_code=201)
    async def sign(cid: str) -> JSONResponse:
        """Sign an engine manifest held here with this node's key."""
        return JSONResponse(await admin.sign(cid), status_code=201)

    @r.post("/v1/engines/{cid}/signatures", status_code=201)
    async def add_signature(cid: str, request: Request) -> JSONResponse:
        """Register a signature record made by another publisher."""
        body = await _json_object_untrusted(request)
        try:
            record = base64.b64decode(_string_field(body, "record"), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("field 'record' must be base64", code="bad_signature") from None
        return JSONResponse(await admin.add_signature_untrusted(cid, record), status_code=201)

    return r


# ----------------------------------------------------------------- streamed upload


def upload_fields_untrusted(query: bytes) -> DockerUpload:
    """Parse the upload's query string.

    Raises:
        BadRequest: an unknown or malformed parameter.
    """
    try:
        params = parse_qs(query.decode("ascii"), keep_blank_values=True, strict_parsing=False, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"bad query string: {exc}", code="bad_request") from None
    known = {"name", "tag", "cmd", "protocol", "timeout_s", "memory_mb", "sign"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; known: {sorted(known)}", code="bad_request")

    def one(key: str, default: str) -> str:
        values = params.get(key, [default])
        if len(values) != 1:
            raise BadRequest(f"parameter {key!r} given more than once", code="bad_request")
        return values[0]

    try:
        timeout_s = float(one("timeout_s", "60"))
        memory_mb = int(one("memory_mb", "1024"))
    except ValueError:
        raise BadRequest("timeout_s and memory_mb must be numbers", code="bad_request") from None
    if not math.isfinite(timeout_s):
        raise BadRequest("timeout_s must be finite", code="bad_request")
    sign = one("sign", "true").lower()
    if sign not in ("true", "false", "1", "0"):
        raise BadRequest("sign must be true or false", code="bad_request")
    protocol = one("protocol", "json")
    if protocol not in ("json", "jsonl"):
        raise BadRequest("protocol must be json or jsonl", code="bad_request")
    return DockerUpload(name=one("name", ""), tag=one("tag", ""), cmd=tuple(params.get("cmd", [])),
                        protocol=protocol, timeout_s=timeout_s, memory_mb=memory_mb, sign=sign in ("true", "1"))


class _ClientGone(Exception):
    """The client disconnected before sending the whole body."""


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class DockerUploadEndpoint:
    """The ASGI endpoint of ``POST /v1/engines/docker`` (streams the body)."""

    def __init__(self, admin: EngineAdmin) -> None:
        self.admin = admin

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("method") != "POST":
            await _send_json(send, 405, error_body("method_not_allowed", f"{UPLOAD_PATH} accepts POST only"))
            return
        limit = self.admin.max_image_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, error_body(
                    "payload_too_large", f"image tarball exceeds the limit of {limit} bytes ([docker] max_image_mb)"))
                return

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _ClientGone()
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        try:
            fields = upload_fields_untrusted(scope.get("query_string", b""))
            answer = await self.admin.add_docker(body(), fields)
        except _ClientGone:
            return  # nobody to answer
        except ApiError as exc:
            await _send_json(send, exc.status, error_body(exc.code, exc.message))
            return
        except Exception as exc:  # a bug or a store failure: logged, answered 500 (Cancelled is not an Exception)
            log.exception("docker_upload_failed", error=repr(exc))
            await _send_json(send, 500, error_body("internal_error", "internal error; see the daemon log"))
            return
        await _send_json(send, 201, answer)


def with_docker_upload(app: Any, admin: EngineAdmin, options: ApiOptions) -> Any:
    """Wrap the ``/v1`` app so ``POST /v1/engines/docker`` streams (see the module doc)."""
    # Every method on this path is classed as the upload (admin): a GET gets its 405 only with the admin token.
    endpoint = ApiGuard(DockerUploadEndpoint(admin), GuardPolicy.from_options(options, content_type=TAR),
                        lambda method, path: required_access("POST", UPLOAD_PATH))

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == UPLOAD_PATH:
            await endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch
