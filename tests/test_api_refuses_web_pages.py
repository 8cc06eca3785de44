"""A web page cannot drive the API: tokens, scopes, Host, Origin and content type.

Any page the user opens can reach 127.0.0.1.  A browser sends cross-origin
``text/plain`` and form POSTs without a preflight, and DNS rebinding puts a
page on the API's own origin.  Uploading an engine or trusting a publisher
key that way is code execution as the daemon's user, so these tests attack:

* the gate rule by rule, in process (:func:`meshd.api.guard.check_untrusted`
  through the real app), including that it answers before reading the body;
* every route of the OpenAPI document, which must name its scope and refuse
  a token one scope too weak;
* a real ``meshd run`` daemon over TCP, then checks that its engine list and
  its trusted publishers did not change;
* a real headless Chromium on an attacker page (cross-origin ``fetch`` with
  ``mode: 'no-cors'``, a ``text/plain`` form, and a DNS-rebound same-origin
  page), skipped with the reason when ``chromium`` is not installed
  (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from meshd.api import engines as api_engines
from meshd.api import lifecycle as api_lifecycle
from meshd.api import lineage as api_lineage
from meshd.api import mesh as api_mesh
from meshd.api.app import create_app
from meshd.api import metrics as api_metrics
from meshd.api import store as api_store
from meshd.api.guard import ROUTE_SCOPES, Access
from meshd.config import ROLES
from meshd.home import Home
from meshd.owner import api as owner_api
from meshd.p2p.identity import Identity
from meshd.roles import role_module
from tests._daemons import ECHO, Daemon
from tests.test_api_contract_inprocess import (
    AUTH,
    BASE_URL,
    READ_TOKEN,
    SUBMIT_TOKEN,
    TOKEN,
    FakeNode,
    api_options,
    assert_error,
    listing2_task,
)

ATTACKER_KEY = Identity.generate().public_hex
ENGINE = {"manifest": {"name": "pwned", "executable": "echo.py", "interpreter": "python3"},
          "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _client(node: FakeNode, base_url: str = BASE_URL, headers: dict[str, str] | None = None,
            **options: Any) -> httpx.AsyncClient:
    app = create_app(node, api_options(**options))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url,
                             headers=AUTH if headers is None else headers)


# ----------------------------------------------------------------- the rules, in process


@pytest.mark.parametrize("host", ["attacker.example:7600", "attacker.example", "127.0.0.1:8000", "localhost:1",
                                  "127.0.0.1.attacker.example:7600", "", "x y", "127.0.0.1:7600@evil"])
async def test_a_foreign_host_is_refused_even_with_the_admin_token(host: str) -> None:
    node = FakeNode()
    async with _client(node) as c:
        r = await c.post("/v1/engines", json=ENGINE, headers={"Host": host})
        assert_error(r, 403, "bad_host")
        assert_error(await c.get("/v1/health", headers={"Host": host}), 403, "bad_host")
    assert node.engines == {}


@pytest.mark.parametrize("host", ["127.0.0.1:7600", "localhost:7600", "[::1]:7600", "LOCALHOST:7600"])
async def test_the_loopback_names_on_the_api_port_are_accepted(host: str) -> None:
    async with _client(FakeNode()) as c:
        assert (await c.get("/v1/node", headers={"Host": host})).status_code == 200


async def test_allowed_hosts_admit_a_non_loopback_deployment_and_nothing_else() -> None:
    options = {"listen": "0.0.0.0:7600", "allowed_hosts": ("mesh.example.com", "10.0.0.5:7600")}
    async with _client(FakeNode(), base_url="http://10.0.0.5:7600", **options) as c:
        assert (await c.get("/v1/node")).status_code == 200
        assert (await c.get("/v1/node", headers={"Host": "mesh.example.com:443"})).status_code == 200
        assert (await c.get("/v1/node", headers={"Host": "mesh.example.com"})).status_code == 200
        assert_error(await c.get("/v1/node", headers={"Host": "10.0.0.5:7601"}), 403, "bad_host")
        assert_error(await c.get("/v1/node", headers={"Host": "0.0.0.0:7600"}), 403, "bad_host")
        assert_error(await c.get("/v1/node", headers={"Host": "other.example.com"}), 403, "bad_host")


@pytest.mark.parametrize("origin", ["http://attacker.example", "http://127.0.0.1:8000", "http://127.0.0.1:7600.attacker.example",
                                    "null", "file://", "http://127.0.0.1:7600/path", "chrome-extension://abc"])
async def test_a_foreign_origin_is_refused_even_with_the_admin_token(origin: str) -> None:
    node = FakeNode()
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json=listing2_task(), headers={"Origin": origin})
        assert_error(r, 403, "bad_origin")
        r = await c.post("/v1/engines", json=ENGINE, headers={"Origin": origin})
        assert_error(r, 403, "bad_origin")
    assert node.tasks == {} and node.engines == {}


async def test_a_same_origin_page_is_accepted() -> None:
    async with _client(FakeNode()) as c:
        for origin in ("http://127.0.0.1:7600", "http://localhost:7600"):
            assert (await c.post("/v1/tasks", json=listing2_task(), headers={"Origin": origin})).status_code == 201


async def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge() -> None:
    node = FakeNode()
    async with _client(node, headers={"Content-Type": "application/json"}) as c:
        for auth in (None, "Bearer ", "Bearer wrong-token-wrong-token", f"Basic {TOKEN}", f"bearer{TOKEN}",
                     f"Bearer {TOKEN}x"):
            headers = {"Authorization": auth} if auth is not None else {}
            r = await c.post("/v1/tasks", json=listing2_task(), headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/v1/health")).status_code == 200
    assert node.tasks == {}


async def test_each_scope_gets_its_routes_and_403_insufficient_scope_beyond() -> None:
    node = FakeNode()
    async with _client(node, headers={}) as c:
        read, submit, admin = _bearer(READ_TOKEN), _bearer(SUBMIT_TOKEN), _bearer(TOKEN)
        assert (await c.get("/v1/queue", headers=read)).status_code == 200
        assert_error(await c.post("/v1/tasks", json=listing2_task(), headers=read), 403, "insufficient_scope")
        assert_error(await c.post("/v1/engines", json=ENGINE, headers=read), 403, "insufficient_scope")
        assert node.tasks == {}
        assert (await c.post("/v1/tasks", json=listing2_task(), headers=submit)).status_code == 201
        assert (await c.post("/v1/datasets", json={"name": "d"}, headers=submit)).status_code == 201
        assert_error(await c.post("/v1/engines", json=ENGINE, headers=submit), 403, "insufficient_scope")
        assert node.engines == {}
        assert (await c.post("/v1/engines", json=ENGINE, headers=admin)).status_code == 201
        assert (await c.get("/v1/queue", headers=admin)).status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonx", "application/x-tar", "json"])
async def test_a_body_that_is_not_declared_json_is_415(content_type: str | None) -> None:
    node = FakeNode()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with _client(node, headers=headers) as c:
        assert_error(await c.post("/v1/tasks", content=json.dumps(listing2_task())), 415, "unsupported_media_type")
        assert_error(await c.post("/v1/engines", content=json.dumps(ENGINE)), 415, "unsupported_media_type")
        r = await c.put(f"/v1/datasets/{listing2_task()['input']['dataset']['/']}/p", content=b'{"value": 1}')
        assert_error(r, 415, "unsupported_media_type")
    assert node.tasks == {} and node.engines == {}


async def test_json_with_a_charset_parameter_is_accepted() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "Application/JSON; charset=utf-8"}
    async with _client(FakeNode(), headers=headers) as c:
        assert (await c.post("/v1/tasks", content=json.dumps(listing2_task()))).status_code == 201


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"host": "attacker.example:7600"}, 403, "bad_host"),
    ({"origin": "http://attacker.example"}, 403, "bad_origin"),
    ({"authorization": "Bearer nope-nope-nope-nope"}, 401, "unauthorized"),
    ({"authorization": f"Bearer {READ_TOKEN}"}, 403, "insufficient_scope"),
    ({"content-type": "text/plain"}, 415, "unsupported_media_type"),
])
async def test_refusals_come_before_a_single_body_byte_is_read(headers: dict[str, str], status: int,
                                                               code: str) -> None:
    app = create_app(FakeNode(), api_options())
    base = {"host": "127.0.0.1:7600", "authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/engines", "raw_path": b"/v1/engines", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 7600), "client": ("127.0.0.1", 50000),
             "headers": [(k.encode(), v.encode()) for k, v in {**base, **headers}.items()]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read before the request was refused")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == status
    assert json.loads(sent[1]["body"])["error"]["code"] == code


class _Admin:
    """Stands in for EngineAdmin behind the upload endpoint: records what it is given."""

    max_image_bytes = 1 << 20

    def __init__(self) -> None:
        self.uploads: list[bytes] = []

    async def add_docker(self, body: Any, fields: Any) -> dict[str, Any]:
        self.uploads.append(b"".join([chunk async for chunk in body]))
        return {"cid": "bafy-fake", "name": fields.name}


async def test_the_streamed_image_upload_outside_the_app_has_the_same_gate() -> None:
    admin = _Admin()
    options = api_options()
    app = api_engines.with_docker_upload(create_app(FakeNode(), options), admin, options)  # type: ignore[arg-type]
    tar = {"Content-Type": "application/x-tar"}
    url = "/v1/engines/docker?name=x"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        assert_error(await c.post(url, content=b"tar", headers=tar), 401, "unauthorized")
        admin_tar = {**tar, "Authorization": f"Bearer {TOKEN}"}
        assert_error(await c.post(url, content=b"tar", headers={**admin_tar, "Host": "evil.example:7600"}),
                     403, "bad_host")
        assert_error(await c.post(url, content=b"tar", headers={**admin_tar, "Origin": "http://evil.example"}),
                     403, "bad_origin")
        assert_error(await c.post(url, content=b"tar", headers={**tar, "Authorization": f"Bearer {SUBMIT_TOKEN}"}),
                     403, "insufficient_scope")
        for wrong in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
            r = await c.post(url, content=b"tar", headers={**admin_tar, "Content-Type": wrong})
            assert_error(r, 415, "unsupported_media_type")
        assert admin.uploads == []
        r = await c.post(url, content=b"tar", headers=admin_tar)
        assert r.status_code == 201 and admin.uploads == [b"tar"]


# ----------------------------------------------------------------- every route has a scope


def _all_routes_app() -> Any:
    """The app with every router a daemon can mount (handlers never run: the gate answers first)."""
    ctx = types.SimpleNamespace(node=None, roles={}, config=None, home=None, host=None, mesh=None)
    routers = [api_lifecycle.router(ctx.node), api_mesh.router(ctx.node), api_engines.router(ctx),  # type: ignore[arg-type]
               api_metrics.router(None), api_store.router(None), owner_api.router(ctx),
               api_lineage.router(ctx)]  # type: ignore[arg-type]
    for name in sorted(ROLES):
        mod = role_module(name)
        if mod is not None and hasattr(mod, "router"):
            routers.append(mod.router(ctx))
    return create_app(FakeNode(), api_options(), routers=routers)


async def test_every_route_in_the_openapi_document_has_a_scope_and_refuses_a_weaker_token() -> None:
    app = _all_routes_app()
    weaker = {Access.READ: None, Access.SUBMIT: READ_TOKEN, Access.ADMIN: SUBMIT_TOKEN}
    checked = set()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        document = (await c.get("/openapi.json", headers=AUTH)).json()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                key = (method.upper(), path)
                assert key in ROUTE_SCOPES, f"{method.upper()} {path} has no scope in meshd.api.guard.ROUTE_SCOPES"
                scope = ROUTE_SCOPES[key]
                assert operation["x-meshd-scope"] == scope.label
                checked.add(key)
                if scope is Access.OPEN:
                    continue
                url = path.replace("{", "x").replace("}", "x")
                token = weaker[scope]
                headers = {"Content-Type": "application/json"}
                if token is None:
                    assert_error(await c.request(method, url, headers=headers), 401, "unauthorized")
                else:
                    headers["Authorization"] = f"Bearer {token}"
                    assert_error(await c.request(method, url, headers=headers), 403, "insufficient_scope")
    # The table names nothing that does not exist (the image upload and the document itself live outside it).
    assert set(ROUTE_SCOPES) - checked == {("GET", "/openapi.json"), ("POST", "/v1/engines/docker")}
    assert all(scope >= Access.SUBMIT for (method, _), scope in ROUTE_SCOPES.items() if method != "GET")
    assert {p for (m, p), s in ROUTE_SCOPES.items() if s is Access.ADMIN} >= {
        "/v1/engines", "/v1/engines/trust", "/v1/engines/allow", "/v1/engines/{cid}/sign", "/v1/engines/docker"}


async def test_a_route_missing_from_the_table_needs_admin() -> None:
    from fastapi import APIRouter

    extra = APIRouter()

    @extra.get("/v1/new-thing")
    async def new_thing() -> dict[str, bool]:
        return {"ok": True}

    app = create_app(FakeNode(), api_options(), routers=[extra])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        assert_error(await c.get("/v1/new-thing", headers=_bearer(SUBMIT_TOKEN)), 403, "insufficient_scope")
        assert (await c.get("/v1/new-thing", headers=_bearer(TOKEN))).status_code == 200


# ----------------------------------------------------------------- a real daemon


def _state(d: Daemon) -> tuple[Any, list[str], list[str], tuple[str, ...]]:
    """What an attack would change: engines, the live trust and allow lists, the persisted trusted publishers."""
    policy = d.get("/v1/engines/policy").json()
    return (d.get("/v1/engines").json(), policy["trusted_publishers"], policy["allow"],
            Home(d.home).load_config().engines.trusted_publishers)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("web") / "node").init().start()
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.slow
def test_cross_origin_rebinding_and_tokenless_requests_change_nothing_on_a_real_daemon(daemon: Daemon) -> None:
    before = _state(daemon)
    assert ATTACKER_KEY not in before[3]
    url = daemon.url
    trust = json.dumps({"publisher": ATTACKER_KEY})
    engine = json.dumps(ENGINE)
    page = {"Origin": "http://attacker.example", "Content-Type": "text/plain;charset=UTF-8"}
    rebound = {"Host": f"rebind.attacker.example:{daemon.port}", "Content-Type": "application/json",
               "Origin": f"http://rebind.attacker.example:{daemon.port}"}
    attempts = [
        # What a page's fetch(..., {mode: "no-cors"}) or <form enctype="text/plain"> sends: no token.
        ("/v1/engines/trust", trust, page, 403, "bad_origin"),
        ("/v1/engines", engine, page, 403, "bad_origin"),
        # A DNS-rebound page is "same-origin" with itself: it may send JSON, but its Host is its own name.
        ("/v1/engines/trust", trust, rebound, 403, "bad_host"),
        ("/v1/engines", engine, rebound, 403, "bad_host"),
        ("/v1/engines", engine, {"Host": f"rebind.attacker.example:{daemon.port}",
                                 "Content-Type": "application/json"}, 403, "bad_host"),
        # Everything right but the token.
        ("/v1/engines/trust", trust, {"Content-Type": "application/json"}, 401, "unauthorized"),
        ("/v1/engines", engine, {"Content-Type": "application/json"}, 401, "unauthorized"),
        # A leaked read or submit token is not enough; the admin token with a browser's type is not either.
        ("/v1/engines/trust", trust, daemon.headers("read", json_body=True), 403, "insufficient_scope"),
        ("/v1/engines", engine, daemon.headers("submit", json_body=True), 403, "insufficient_scope"),
        ("/v1/engines/trust", trust, {**daemon.headers(), "Content-Type": "text/plain"}, 415,
         "unsupported_media_type"),
    ]
    for path, body, headers, status, code in attempts:
        r = httpx.post(url + path, content=body, headers=headers, timeout=10)
        assert (r.status_code, r.json().get("error", {}).get("code")) == (status, code), (path, headers, r.text)
    assert httpx.get(url + "/v1/engines", timeout=10).status_code == 401
    assert httpx.get(url + "/v1/health", timeout=10).status_code == 200  # liveness stays open
    assert _state(daemon) == before
    assert daemon.proc is not None and daemon.proc.poll() is None
    # The refused bodies were valid: with the admin token and JSON the same requests succeed.
    assert daemon.post("/v1/engines/trust", {"publisher": ATTACKER_KEY}).status_code == 200
    assert ATTACKER_KEY in Home(daemon.home).load_config().engines.trusted_publishers


@pytest.mark.slow
def test_the_daemons_openapi_document_names_a_scope_for_every_operation(daemon: Daemon) -> None:
    document = daemon.get("/openapi.json").json()
    operations = [(m.upper(), p, op) for p, ops in document["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 20
    for method, path, op in operations:
        assert op.get("x-meshd-scope") == ROUTE_SCOPES[(method, path)].label, (method, path)


# ----------------------------------------------------------------- a real browser

REBIND_PAGE = """<!doctype html><title>rebind</title><script>
const report = (q) => fetch("REPORT/report?" + new URLSearchParams(q), {mode: "no-cors"});
async function go() {
  while (true) {  // the test says when the daemon has taken this page's port
    try { if ((await (await fetch("REPORT/go")).json()).go) break; } catch (e) {}
    await new Promise(r => setTimeout(r, 50));
  }
  const out = {stage: "rebind"};
  for (const [name, path, body] of BODIES) {
    try {  // same origin now: JSON is allowed without a preflight and the answer is readable
      const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body});
      out[name] = r.status + " " + ((await r.json()).error || {}).code;
    } catch (e) { out[name] = "error " + e; }
  }
  await report(out);
  location = "REPORT/cross.html";
}
report({stage: "loaded"}).then(go);
</script>"""

CROSS_PAGE = """<!doctype html><title>cross</title>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="DAEMON/v1/engines/trust">
<input type="hidden" name='{"publisher": "KEY", "pad": "' value='"}'></form>
<script>
const report = (q) => fetch("/report?" + new URLSearchParams(q));
async function go() {
  const out = {stage: "cross"};
  for (const [name, path, body] of BODIES) {
    try {
      const r = await fetch("DAEMON" + path, {method: "POST", mode: "no-cors",
                                             headers: {"Content-Type": "text/plain"}, body});
      out[name] = r.type;  // "opaque": the request went out and was answered
    } catch (e) { out[name] = "error " + e; }
  }
  await report(out);
  document.getElementById("sink").onload = () => report({stage: "form"});
  document.getElementById("f").submit();
}
go();
</script>"""


class _Attacker(http.server.ThreadingHTTPServer):
    """The attacker's own web server: serves the pages and collects what they report."""

    daemon_threads = True

    def __init__(self, port: int, pages: dict[str, str]) -> None:
        self.pages = pages
        self.reports: list[dict[str, str]] = []
        self.go = False
        self.changed = threading.Condition()
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), _AttackerHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        self.connections.add(conn)
        return conn, address

    def close(self) -> None:
        """Stop serving and drop every open connection, idle ones included.

        Chromium opens spare connections ahead of need and later sends a request on one; a handler
        thread still waiting on such a connection would answer for the attacker after the daemon has
        taken the port (CI once saw the rebound POST answered by this server's 501 page)."""
        self.shutdown()
        self.server_close()
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler, which also closes the rest
                pass

    def wait(self, stage: str, timeout: float = 60) -> dict[str, str]:
        with self.changed:
            if not self.changed.wait_for(lambda: any(r.get("stage") == stage for r in self.reports), timeout):
                raise AssertionError(f"the attacker page never reported {stage!r}; reports: {self.reports}")
            return next(r for r in self.reports if r.get("stage") == stage)


class _AttackerHandler(http.server.BaseHTTPRequestHandler):
    server: _Attacker

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: bytes, kind: str) -> None:
        self.send_response(200 if body != b"attacker" else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Access-Control-Allow-Origin", "*")  # the rebind page reads /go cross-origin
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/report":
            with self.server.changed:
                self.server.reports.append({k: v[0] for k, v in parse_qs(parts.query).items()})
                self.server.changed.notify_all()
            self._answer(b"{}", "application/json")
        elif parts.path == "/go":
            self._answer(json.dumps({"go": self.server.go}).encode(), "application/json")
        elif parts.path in self.server.pages:
            self._answer(self.server.pages[parts.path].encode(), "text/html")
        else:
            self._answer(b"attacker", "text/plain")


def _serve(server: _Attacker) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_real_browser_on_attacker_pages_changes_nothing(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it with apt): "
                    "the browser attack was not run")
    d = Daemon(tmp_path / "node").init()
    bodies = json.dumps([["trust", "/v1/engines/trust", json.dumps({"publisher": ATTACKER_KEY})],
                         ["engine", "/v1/engines", json.dumps(ENGINE)]])
    report = _Attacker(0, {})
    report_url = f"http://127.0.0.1:{report.server_address[1]}"
    report.pages["/cross.html"] = (CROSS_PAGE.replace("DAEMON", d.url).replace("KEY", ATTACKER_KEY)
                                   .replace("BODIES", bodies))
    # DNS rebinding: rebind.test first resolves to the attacker's server on the port the daemon will
    # use, the page loads, then the name "rebinds" to the daemon (here: the daemon takes the port).
    rebind = _Attacker(d.port, {"/rebind.html": REBIND_PAGE.replace("REPORT", report_url)
                                .replace("BODIES", bodies)})
    _serve(report), _serve(rebind)
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP rebind.test 127.0.0.1",
         f"--explicitly-allowed-ports={d.port},{report.server_address[1]}",
         f"http://rebind.test:{d.port}/rebind.html"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        report.wait("loaded")
        rebind.close()
        d.start()
        before = _state(d)
        report.go = True
        rebound = report.wait("rebind")
        cross = report.wait("cross")
        report.wait("form")
        after = _state(d)
        assert d.proc is not None and d.proc.poll() is None
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)
        report.shutdown()
        d.stop()
    # The rebound page reached the daemon and read its refusal; the cross-origin requests went out.
    assert rebound["trust"] == "403 bad_host" and rebound["engine"] == "403 bad_host", rebound
    assert cross["trust"] == "opaque" and cross["engine"] == "opaque", cross
    assert after == before
    assert ATTACKER_KEY not in after[1] and ATTACKER_KEY not in after[3]
