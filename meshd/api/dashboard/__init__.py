"""The web dashboard: static files served at ``/``, with no secret in them.

Why it is shaped so: the API's gate (:mod:`meshd.api.guard`) wants a bearer
token on every route, and a browser cannot attach one to a page it navigates
to.  So the page and its script and style are *open* routes (Host and Origin
are still checked, so a DNS-rebound name gets 403 ``bad_host``) and hold
nothing private: they are the same bytes for everyone.  The user brings the
``read`` token: ``meshd dashboard`` prints ``http://…/#token=…``.  A URL
fragment never leaves the browser (it is in no request line, log or
``Referer``); the script moves it to ``sessionStorage``, wipes it from the
address bar, and sends it as ``Authorization: Bearer`` on same-origin
``fetch`` calls to the ordinary JSON routes, which a cross-origin page could
not make without a preflight that the API never approves.

The answers carry a Content-Security-Policy that allows only this origin's
script, style and ``fetch`` (no inline script, no framing), so text that
peers wrote (task names, stderr) can never run as code; the script also
inserts such text with ``textContent`` only.

Files ship as package data (``pyproject.toml``); nothing comes from a CDN,
since a mesh may have no internet.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from ...errors import NotFound

#: The files served under ``/dashboard/``, with their media types.
ASSETS: Final = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
INDEX: Final = "index.html"

#: Sent with every dashboard file: same-origin script, style and fetch only; never framed.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def asset(name: str) -> bytes:
    """The bytes of one shipped file (read once; they do not change while the daemon runs)."""
    return resources.files(__package__).joinpath(name).read_bytes()


def router() -> APIRouter:
    """``GET /`` (the page) and ``GET /dashboard/{name}`` (its script and style); both open."""
    r = APIRouter(tags=["dashboard"])

    @r.get("/", response_class=Response, responses={200: {"content": {"text/html": {}}}})
    async def dashboard_page() -> Response:
        """The dashboard page; it reads the ``read`` token from the URL fragment (``meshd dashboard``)."""
        return Response(asset(INDEX), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @r.get("/dashboard/{name}", response_class=Response, responses={404: {}})
    async def dashboard_asset(name: str) -> Response:
        """The dashboard's script or style sheet."""
        media = ASSETS.get(name)
        if media is None:
            raise NotFound(f"no dashboard file {name!r}", code="not_found")
        return Response(asset(name), media_type=media, headers=SECURITY_HEADERS)

    return r
