"""``<home>/api``: where a running daemon's API listens, for clients of that home.

Why: ``meshd run --api HOST:PORT`` (or port 0) serves somewhere the home's
``config.toml`` does not say, so a client given only ``--home`` would dial
the configured default and find nothing.  Kubo solves the same problem with
``$IPFS_PATH/api``; the daemon here writes ``<home>/api`` once its API
listens and removes it when the API stops.

The file is one JSON record, ``{"t": "meshd/api-address", "v": 1, "url":
"http://127.0.0.1:7600", "pid": 1234}``.  A daemon killed with SIGKILL
leaves it behind, so a reader also checks that the pid still runs; a file
that is unreadable, of another type or version, or names a dead process is
ignored (the client falls back to the config).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ..config import parse_host_port
from ..errors import BadAddressFile

ADDRESS_FILE: Final = "api"
RECORD_TYPE: Final = "meshd/api-address"
RECORD_VERSION: Final = 1
_MAX_BYTES: Final = 4096


@dataclass(frozen=True)
class ApiAddress:
    """A daemon's API address as recorded in its home.

    Attributes:
        url: Base URL, e.g. ``http://127.0.0.1:7600``.
        pid: The daemon's process id.
    """

    url: str
    pid: int


def encode(address: ApiAddress) -> bytes:
    """The file's bytes for ``address``."""
    return (json.dumps({"t": RECORD_TYPE, "v": RECORD_VERSION, "url": address.url, "pid": address.pid}) + "\n").encode()


def decode_untrusted(data: bytes) -> ApiAddress:
    """The v1 record in ``data``.

    Raises:
        BadAddressFile: ``data`` is not a valid v1 record.
    """
    if len(data) > _MAX_BYTES:
        raise BadAddressFile("the API address record is too large")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadAddressFile("the API address record is not JSON") from None
    if not isinstance(obj, dict) or obj.get("t") != RECORD_TYPE or obj.get("v") != RECORD_VERSION:
        raise BadAddressFile(f"the API address record is not a {RECORD_TYPE} v{RECORD_VERSION} record")
    url, pid = obj.get("url"), obj.get("pid")
    if not isinstance(url, str) or type(pid) is not int or pid <= 0:
        raise BadAddressFile("the API address record needs a url string and a positive pid")
    try:
        parts = urlsplit(url)
        ok = parts.scheme == "http" and bool(parts.hostname) and parts.path in ("", "/") and parts.port is not None
    except ValueError:
        ok = False
    if not ok:
        raise BadAddressFile("the API address record's url is not http://HOST:PORT")
    return ApiAddress(url.rstrip("/"), pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OverflowError:
        return False
    return True


def write(home: Path, address: ApiAddress) -> None:
    """Record ``address`` in ``home`` (written to a temporary file, then renamed: readers never see half a file)."""
    tmp = home / f".{ADDRESS_FILE}.{os.getpid()}.tmp"
    tmp.write_bytes(encode(address))
    os.replace(tmp, home / ADDRESS_FILE)


def remove(home: Path, pid: int) -> None:
    """Remove the record if it is still ``pid``'s (a later daemon's record stays)."""
    path = home / ADDRESS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    try:
        mine = decode_untrusted(data).pid == pid
    except BadAddressFile:
        mine = True  # garbage is nobody's record
    if mine:
        path.unlink(missing_ok=True)


def client_url(listen: str) -> str:
    """The URL a local client reaches an ``[api] listen`` address at (a wildcard bind through loopback)."""
    host, port = parse_host_port(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_live(home: Path) -> ApiAddress | None:
    """The recorded address if the file is valid and its daemon still runs, else None."""
    try:
        data = (home / ADDRESS_FILE).read_bytes()
    except OSError:
        return None
    try:
        found = decode_untrusted(data)
    except BadAddressFile:
        return None
    return found if _alive(found.pid) else None
