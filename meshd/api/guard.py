"""Who may call the API, from which page, with what body: one gate in front of every route.

Why it exists: an API on 127.0.0.1 is reachable from every web page the
user opens.  A browser sends a cross-origin "simple" request (a GET, or a
POST whose body is ``text/plain``, form-encoded or multipart) *without* a
CORS preflight, so the page cannot read the answer but the request still
runs; and DNS rebinding lets a page talk to 127.0.0.1 under its own name, so
it can read answers too.  Uploading an engine or trusting a key through such
a request is code execution as the daemon's user.  So, in this order, and all
from the request line and headers, before one body byte is read:

1. ``Host`` must name this API (403 ``bad_host``): the listen address, or
   ``localhost`` / ``127.0.0.1`` / ``[::1]`` on the port the request came in
   on, or an ``[api] allowed_hosts`` entry.  Defeats DNS rebinding.
2. ``Origin``, when present, must be one of those hosts (403
   ``bad_origin``); ``Origin: null`` never is.  A CLI sends none.
3. ``Authorization: Bearer <token>`` (401 ``unauthorized``) whose scope
   covers the route (403 ``insufficient_scope``).  Only ``GET /v1/health``
   and the dashboard's static files (``/``, ``/dashboard/…``, no secret in
   them) are open.  A page cannot attach this header without a preflight, which the
   API never approves (it sends no CORS headers at all).
4. A ``POST``/``PUT``/``PATCH``/``DELETE`` must declare the route's content
   type (415 ``unsupported_media_type``): ``application/json``, or
   ``application/x-tar`` for the streamed image upload.  Neither is a type a
   browser may send cross-origin without a preflight.

Scopes nest: ``read`` < ``submit`` < ``admin``.  :data:`ROUTE_SCOPES` names
the scope of every route, keyed by method and path template; a path no
template matches needs ``admin`` (fail closed), and a test walks the OpenAPI
document so that a new route cannot ship unclassified.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from ..config import ApiOptions
from ..errors import ApiError, ConfigError, Forbidden, Unauthorized, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Access(enum.IntEnum):
    """What a token may do; a larger value includes every smaller one."""

    OPEN = 0  #: no token needed (``/v1/health`` only)
    READ = 1  #: every GET
    SUBMIT = 2  #: enqueue, cancel and retry tasks, create and edit datasets, submit and cancel jobs
    ADMIN = 3  #: anything that changes which code the node runs or trusts

    @property
    def label(self) -> str:
        """The lower-case name used in error messages, docs and the OpenAPI ``x-meshd-scope``."""
        return self.name.lower()


JSON: Final = "application/json"
TAR: Final = "application/x-tar"
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS: Final = frozenset({"/v1/health"})

_R, _S, _A = Access.READ, Access.SUBMIT, Access.ADMIN
#: The scope of every route, by (method, path template as in the OpenAPI document).
ROUTE_SCOPES: Final[dict[tuple[str, str], Access]] = {
    ("GET", "/v1/health"): Access.OPEN,
    # The dashboard's static files: no secret in them (meshd.api.dashboard); its data needs the read token.
    ("GET", "/"): Access.OPEN,
    ("GET", "/dashboard/{name}"): Access.OPEN,
    ("GET", "/openapi.json"): _R,
    ("GET", "/v1/node"): _R,
    ("GET", "/v1/peers"): _R,
    ("GET", "/v1/queue"): _R,
    ("GET", "/v1/tasks"): _R,
    ("GET", "/v1/tasks/{cid}"): _R,
    ("GET", "/v1/results/{task_cid}"): _R,
    ("GET", "/v1/results/stream"): _R,
    ("GET", "/v1/datasets/{cid}"): _R,
    ("GET", "/v1/datasets/{cid}/{path}"): _R,
    ("GET", "/v1/engines"): _R,
    ("GET", "/v1/engines/policy"): _R,
    ("GET", "/v1/owner"): _R,
    ("GET", "/v1/trust"): _R,
    ("GET", "/v1/jobs"): _R,
    ("GET", "/v1/jobs/{job}"): _R,
    ("GET", "/v1/evaluator"): _R,
    ("GET", "/v1/archive"): _R,
    ("GET", "/v1/archive/{genesis}"): _R,
    ("GET", "/v1/archive/{genesis}/{version}"): _R,
    ("GET", "/v1/pins"): _R,
    ("GET", "/v1/pinset"): _R,
    ("GET", "/v1/pinset/{cid}"): _R,
    ("GET", "/v1/explain/{cid}"): _R,
    ("GET", "/v1/store"): _R,
    ("GET", "/metrics"): _R,
    ("POST", "/v1/tasks"): _S,
    ("POST", "/v1/datasets"): _S,
    ("PUT", "/v1/datasets/{cid}/{path}"): _S,
    ("POST", "/v1/jobs"): _S,
    ("POST", "/v1/tasks/{cid}/cancel"): _S,
    ("POST", "/v1/tasks/{cid}/retry"): _S,
    ("POST", "/v1/jobs/{job}/cancel"): _S,
    ("POST", "/v1/pinset"): _S,
    ("DELETE", "/v1/pinset/{cid}"): _S,
    ("POST", "/v1/engines"): _A,
    ("POST", "/v1/engines/docker"): _A,
    ("POST", "/v1/engines/trust"): _A,
    ("POST", "/v1/engines/allow"): _A,
    ("POST", "/v1/engines/{cid}/sign"): _A,
    ("POST", "/v1/engines/{cid}/signatures"): _A,
    ("POST", "/v1/node/drain"): _A,
    ("POST", "/v1/node/resume"): _A,
}


def _pattern(template: str) -> re.Pattern[str]:
    # "{x}" is one path segment, as Starlette matches it; "{path}" is Starlette's
    # "{path:path}" (any rest of the path, slashes included).
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(
        ".*" if p == "{path}" else "[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


_PATTERNS: Final = [(method, _pattern(template), scope) for (method, template), scope in ROUTE_SCOPES.items()]


def required_access(method: str, path: str) -> Access:
    """The scope a request needs, from its method and concrete path.

    Matched against the :data:`ROUTE_SCOPES` templates rather than the
    router's own tables, so the answer does not depend on framework
    internals.  Where several templates match, the strictest wins; where
    none does, ``admin`` (fail closed: such a path is at best a 404, or a
    route someone forgot to classify).
    """
    wanted = "GET" if method == "HEAD" else method
    found = [scope for m, pattern, scope in _PATTERNS if m == wanted and pattern.fullmatch(path)]
    return max(found, default=Access.ADMIN)


# ----------------------------------------------------------------- policy


def _split_authority(text: str, default_port: int | None) -> tuple[str, int | None]:
    """``host[:port]`` as (lower-case host without brackets, port); ValueError if malformed."""
    if not text or any(c in text for c in "/?#@ \t\\"):
        raise ValueError(text)
    parts = urlsplit("//" + text)
    if not parts.hostname:
        raise ValueError(text)
    return parts.hostname, parts.port if parts.port is not None else default_port


@dataclass(frozen=True)
class GuardPolicy:
    """The tokens, hosts and content type one guard enforces (derived from :class:`ApiOptions`).

    Attributes:
        tokens: ``(token bytes, scope)`` pairs.
        hosts: Allowed ``(host, port)`` pairs; a port of ``None`` admits any port.
        loopback: Host names admitted on the port the request arrived on
            (and on the configured listen port).
        listen_port: The configured port (0 when the OS picks it).
        content_type: The media type a body-carrying request must declare.
    """

    tokens: tuple[tuple[bytes, Access], ...]
    hosts: frozenset[tuple[str, int | None]]
    loopback: frozenset[str]
    listen_port: int
    content_type: str = JSON

    @classmethod
    def from_options(cls, options: ApiOptions, *, content_type: str = JSON) -> GuardPolicy:
        """Build the policy; every request needs a token, so ``options.token`` must be set.

        Raises:
            ConfigError: No admin token is configured.
        """
        if not options.token:
            raise ConfigError("the API needs an admin token ([api] token, from <home>/api.token)")
        tokens = tuple((t.encode(), scope) for t, scope in ((options.token, Access.ADMIN),
                                                            (options.submit_token, Access.SUBMIT),
                                                            (options.read_token, Access.READ)) if t)
        hosts = {_split_authority(h, None) for h in options.allowed_hosts}
        loopback = {"localhost", "127.0.0.1", "::1"}
        if options.host not in ("0.0.0.0", "::", ""):  # a wildcard is no name a client uses
            loopback.add(options.host.lower())
        return cls(tokens, frozenset(hosts), frozenset(loopback), options.port, content_type)

    def host_allowed(self, host: str, port: int | None, server_port: int | None) -> bool:
        """Whether ``host:port`` names this API."""
        if host in self.loopback and port in (self.listen_port, server_port) and port:
            return True
        return (host, port) in self.hosts or (host, None) in self.hosts

    def access_of(self, authorization: bytes | None) -> Access | None:
        """The scope of the presented ``Authorization`` value; None when it is no known token."""
        if authorization is None or not authorization.startswith(b"Bearer "):
            return None
        given = authorization[len(b"Bearer "):].strip()
        best: Access | None = None
        for token, scope in self.tokens:  # compare with every token: constant time per token
            if hmac.compare_digest(given, token) and (best is None or scope > best):
                best = scope
        return best


def check_untrusted(policy: GuardPolicy, required: Access, method: str, headers: Iterable[tuple[bytes, bytes]],
                    server_port: int | None) -> None:
    """Decide one request from its method and headers alone.

    Raises:
        Forbidden: ``bad_host``, ``bad_origin`` or ``insufficient_scope``.
        Unauthorized: No token, or an unknown one, on a route that needs one.
        UnsupportedMediaType: A body-carrying method without the policy's content type.
    """
    seen: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        seen.setdefault(name.lower(), []).append(value)
    hosts = seen.get(b"host", [])
    try:
        if len(hosts) != 1:
            raise ValueError("exactly one Host header is required")
        host, port = _split_authority(hosts[0].decode("ascii"), 80)
    except (UnicodeDecodeError, ValueError):
        raise Forbidden("the Host header must name this API", code="bad_host") from None
    if not policy.host_allowed(host, port, server_port):
        raise Forbidden(f"Host {host!r} does not name this API (see [api] allowed_hosts)", code="bad_host")
    for origin in seen.get(b"origin", []):
        try:
            parts = urlsplit(origin.decode("ascii"))
            default = {"http": 80, "https": 443}[parts.scheme]
            if parts.path or parts.query or not parts.netloc:
                raise ValueError("an origin has no path")
            o_host, o_port = _split_authority(parts.netloc, default)
        except (UnicodeDecodeError, ValueError, KeyError):
            raise Forbidden("cross-origin requests are refused", code="bad_origin") from None
        if not policy.host_allowed(o_host, o_port, server_port):
            raise Forbidden("cross-origin requests are refused", code="bad_origin")
    if required > Access.OPEN:
        auth = seen.get(b"authorization", [])
        access = policy.access_of(auth[0]) if len(auth) == 1 else None
        if access is None:
            raise Unauthorized("missing or wrong bearer token (see <home>/api.token)")
        if access < required:
            raise Forbidden(f"this route needs the {required.label} scope; the token has {access.label}",
                            code="insufficient_scope")
    if method in BODY_METHODS:
        types = seen.get(b"content-type", [])
        media = types[0].split(b";", 1)[0].strip().lower() if len(types) == 1 else b""
        if media != policy.content_type.encode():
            raise UnsupportedMediaType(f"{method} bodies must be Content-Type: {policy.content_type}")


# ----------------------------------------------------------------- middleware


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", ...}}``."""
    return {"error": {"code": code, "message": message, **extra}}


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer an ASGI request with the one error shape (for middleware, outside FastAPI)."""
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ApiGuard:
    """ASGI middleware that applies :func:`check_untrusted` before the wrapped app runs.

    Args:
        app: The wrapped ASGI application.
        policy: Tokens, hosts and content type.
        resolve: ``(method, path) -> Access``; default :func:`required_access`.
        rejections: Counts of refusals by error code, kept up to date here
            (``GET /metrics`` reads them); None counts nothing.
    """

    def __init__(self, app: ASGIApp, policy: GuardPolicy,
                 resolve: Callable[[str, str], Access] = required_access,
                 rejections: MutableMapping[str, int] | None = None) -> None:
        self.app = app
        self.policy = policy
        self.resolve = resolve
        self.rejections = rejections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route speaks WebSocket, and browsers send those cross-origin freely.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http":
            method = scope.get("method", "GET")
            server = scope.get("server")
            try:
                check_untrusted(self.policy, self.resolve(method, scope.get("path", "")), method,
                                scope.get("headers", ()), server[1] if server else None)
            except ApiError as exc:
                if self.rejections is not None:
                    self.rejections[exc.code] = self.rejections.get(exc.code, 0) + 1
                extra = ((b"www-authenticate", b'Bearer realm="meshd"'),) if exc.status == 401 else ()
                await send_error(send, exc.status, exc.code, exc.message, extra)
                return
        await self.app(scope, receive, send)
