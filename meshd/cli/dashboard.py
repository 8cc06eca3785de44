"""``meshd dashboard``: the URL of the node's web dashboard, with the read token.

The page at ``/`` holds no secret; the script in it reads the ``read`` token
from the URL *fragment* (``#token=…``), which browsers never send to a
server, so the token shows up in no request line, log or ``Referer``
(see :mod:`meshd.api.dashboard`).  The read token cannot enqueue work or
change what the node runs or trusts.
"""

from __future__ import annotations

import argparse
import webbrowser
from typing import Any, TextIO
from urllib.parse import quote

from .commands import _client, _closing, _emit, _resolve_home


def dashboard_url(base_url: str, token: str) -> str:
    """``<base>/#token=<token>`` (the token percent-encoded, though home tokens need none)."""
    return f"{base_url.rstrip('/')}/#token={quote(token, safe='')}"


def cmd_dashboard(args: argparse.Namespace, out: TextIO) -> int:
    token = _resolve_home(args).read_token("read")
    with _closing(_client(args)) as client:
        client.health()  # NotRunning, with the usual hint, when nothing listens
        url = dashboard_url(client.base_url, token)
    _emit(args, {"url": url}, lambda a: a["url"], out)
    if args.open:
        webbrowser.open(url)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dashboard", parents=[client],
                       help="print the web dashboard's URL (with the read token in its #fragment)")
    p.add_argument("--open", action="store_true", help="also open it in the default web browser")
    p.set_defaults(func=cmd_dashboard)
