"""What both clients of :mod:`meshd.client` share: how they build requests and read answers.

:class:`meshd.client.Client` and :class:`meshd.client.AsyncClient` offer the
same methods, one over blocking httpx and one over async; everything that
does not depend on which is here, once: where a home's daemon listens, the
request bodies and headers, how an answer or a failure becomes a value or a
:class:`meshd.errors.ClientError`, and the reading of a Server-Sent Events
stream.  Nothing here does I/O but :func:`_home_target`, which reads the
home's files.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ..api import address
from ..errors import ClientError, NotRunning
from ..home import Home


def _home_target(home: str | Path) -> tuple[str, str]:
    """The base URL and admin token of the daemon of ``home`` (its ``<home>/api``, else its config)."""
    h = Home(Path(home).expanduser())
    running = address.read_live(h.path)
    if running is not None:
        url = running.url
    else:
        url = address.client_url(h.load_config().api.listen)
    return url, h.read_token()


def _answer(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data if data is not None else response.text
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", "error"))
        message = f"{code}: {error.get('message', '')}"
        if response.status_code == 401:
            message += " (the API needs the token from <home>/api.token)"
        raise ClientError(message, status=response.status_code, code=code)
    raise ClientError(f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code)


def _not_running(base_url: str) -> NotRunning:
    return NotRunning(f"meshd is not running at {base_url} (start it with `meshd run`)")


def _failed(base_url: str, exc: Exception) -> ClientError:
    return ClientError(f"request to {base_url} failed: {exc.__class__.__name__}: {exc}")


def _timed_out(timeout: float | None) -> ClientError:
    return ClientError(f"timed out after {timeout or 0:g}s", code="timeout")


def _check(deadline: float | None, timeout: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _timed_out(timeout)


def _content(body: Any, on_upload: Callable[[int, int], None] | None) -> tuple[Any, dict[str, str]]:
    """The request's content and extra headers; ``on_upload(sent, total)`` follows a body sent in pieces."""
    if body is None:
        return None, {}
    data = json.dumps(body).encode()
    if on_upload is None:
        return data, {}

    def pieces(size: int = 64 * 1024) -> Iterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]
            on_upload(min(len(data), i + size), len(data))

    on_upload(0, len(data))
    return pieces(), {"Content-Length": str(len(data))}


def _headers(method: str, extra: Mapping[str, str]) -> dict[str, str] | None:
    # The API takes bodies as application/json only, even an empty one.
    if method == "GET" and not extra:
        return None
    return {**(_JSON if method != "GET" else {}), **extra}


def _tasks_params(state: str | None, limit: int, after: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": int(limit)}
    if state:
        params["state"] = state
    if after:
        params["after"] = after
    return params


def _reason(reason: str) -> dict[str, str]:
    return {"reason": reason} if reason else {}


_JSON = {"Content-Type": "application/json"}


def _task_body(tasks: Mapping[str, Any] | list[Mapping[str, Any]]) -> dict[str, Any]:
    return {"tasks": [dict(t) for t in tasks]} if isinstance(tasks, list) else dict(tasks)


def _cids(answer: Any) -> list[str]:
    return [t["cid"] for t in answer["tasks"]] if "tasks" in answer else [answer["cid"]]


def _stream_params(cids: list[str]) -> dict[str, str]:
    if not cids:
        raise ClientError("stream_results needs at least one task CID")
    return {"tasks": ",".join(cids)}


class _Sse:
    """Reads a Server-Sent Events stream line by line: the ``result`` events' data, decoded, until ``end``."""

    def __init__(self) -> None:
        self.event, self.data, self.ended = "message", [], False

    def feed(self, line: str) -> Any | None:
        """One line in; the decoded data of a ``result`` event it completes, else None."""
        if line == "":
            event, data = self.event, self.data
            self.event, self.data = "message", []
            if event == "end":
                self.ended = True
            elif event == "result" and data:
                return json.loads("\n".join(data))
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self.event = value
            elif name == "data":
                self.data.append(value)
        return None


def _engine_body(name: str, files: Mapping[str, bytes], executable: str, manifest: Mapping[str, Any]) -> dict:
    return {"manifest": {"name": name, "executable": executable, **manifest},
            "files": {k: base64.b64encode(v).decode() for k, v in files.items()}}
