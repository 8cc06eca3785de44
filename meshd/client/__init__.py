"""A typed Python client of a meshd node's HTTP API (``/v1``), sync and async, on httpx.

Why: scripts should not have to rebuild what the CLI knows (the token file,
``<home>/api``, the error shape).  :class:`Client` and :class:`AsyncClient`
offer the same methods; every call is one request (``wait`` polls) and every
failure is a :class:`meshd.errors.ClientError` (``NotRunning`` when nothing
listens), with the API's ``code: message``.

Example::

    from meshd.client import Client

    with Client.from_home("~/.meshd") as mesh:
        engine = mesh.add_engine("echo", {"echo.py": open("engines/examples/echo.py", "rb").read()},
                                 executable="echo.py", interpreter="python3")
        [task] = mesh.enqueue([{"input": {"value": 21},
                                "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}])
        print(mesh.wait(task)["state"], mesh.results(task)["results"][0]["output"])
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx

from ..api import address
from ..errors import ClientError, NotRunning
from ..home import Home

__all__ = ["AsyncClient", "Client", "TERMINAL_STATES"]

#: States a task does not leave.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


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
        raise ClientError(f"{error.get('code', 'error')}: {error.get('message', '')}")
    raise ClientError(f"HTTP {response.status_code}: {response.text[:200]}")


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


_JSON = {"Content-Type": "application/json"}


class Client:
    """A synchronous client; close it, or use it as a context manager.

    Args:
        base_url: e.g. ``http://127.0.0.1:7600``.
        token: A bearer token (admin, submit or read scope; each method needs its route's).
        timeout: Per-request timeout (s); long polls add their wait to it.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=timeout)

    @classmethod
    def from_home(cls, home: str | Path, **kw: Any) -> Client:
        """The client of the daemon running on ``home`` (its admin token)."""
        url, token = _home_target(home)
        return cls(url, token, **kw)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
              params: Mapping[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, content=None if body is None else json.dumps(body),
                                          headers=_JSON if method != "GET" else None, params=params,
                                          timeout=timeout or self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise NotRunning(f"meshd is not running at {self.base_url}") from None
        except httpx.TransportError as exc:
            raise ClientError(f"request to {self.base_url} failed: {exc!r}") from None
        return _answer(response)

    def enqueue(self, tasks: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[str]:
        """Enqueue one task or a list; the task CIDs, in order."""
        return _cids(self._call("POST", "/v1/tasks", _task_body(tasks)))

    def status(self, cid: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/tasks/{cid}")

    def results(self, cid: str, *, wait: float = 0.0) -> dict[str, Any]:
        """Every runner's result; ``wait`` (≤ 60 s) long-polls for the first one or the task's failure."""
        return self._call("GET", f"/v1/results/{cid}", params={"wait": wait}, timeout=self.timeout + wait)

    def wait(self, cid: str, *, timeout: float = 300.0) -> dict[str, Any]:
        """The task's status once it has completed or failed.

        Raises:
            ClientError: ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(cid)
            left = deadline - time.monotonic()
            if status["state"] in TERMINAL_STATES:
                return status
            if left <= 0:
                raise ClientError(f"timed out after {timeout:g}s waiting for {cid} (state: {status['state']})")
            if self.results(cid, wait=min(10.0, left))["results"]:
                time.sleep(0.25)  # results, not done yet (a replicated task awaits its quorum): poll gently

    def cancel(self, cid: str, reason: str = "") -> dict[str, Any]:
        """Cancel a task (its engine stops wherever it runs); its status after."""
        return self._call("POST", f"/v1/tasks/{cid}/cancel", {"reason": reason} if reason else {})

    def retry(self, cid: str) -> dict[str, Any]:
        """Make a failed or cancelled task available again, with fresh attempts; its status after."""
        return self._call("POST", f"/v1/tasks/{cid}/retry", {})

    def cancel_job(self, job: str, reason: str = "") -> dict[str, Any]:
        """Cancel a job: its rules stop firing and its open tasks are cancelled."""
        return self._call("POST", f"/v1/jobs/{job}/cancel", {"reason": reason} if reason else {})

    def stream_results(self, cids: list[str], *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield each task's results answer (as :meth:`results`) as the task ends, in the order they end.

        One Server-Sent Events request (``GET /v1/results/stream``), not a
        poll per task; the generator ends once every task has ended.
        ``timeout`` bounds the whole stream (default: none).

        Raises:
            ClientError: the API refused the request, or ``timeout`` passed.
        """
        params = _stream_params(cids)
        try:
            with self._http.stream("GET", "/v1/results/stream", params=params,
                                   timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
                if not response.is_success:
                    response.read()
                    _answer(response)
                sse = _Sse()
                for line in response.iter_lines():
                    item = sse.feed(line)
                    if item is not None:
                        yield item
                    if sse.ended:
                        return
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise NotRunning(f"meshd is not running at {self.base_url}") from None
        except httpx.TransportError as exc:
            raise ClientError(f"results stream from {self.base_url} failed: {exc!r}") from None

    def queue(self) -> dict[str, Any]:
        return self._call("GET", "/v1/queue")

    def create_dataset(self, name: str | None = None, value: Mapping[str, Any] | None = None) -> str:
        body: dict[str, Any] = {} if name is None else {"name": name}
        if value is not None:
            body["value"] = dict(value)
        return self._call("POST", "/v1/datasets", body)["cid"]

    def dataset(self, cid: str, path: str = "") -> Any:
        """The value at ``path`` (the whole dataset when empty)."""
        return self._call("GET", f"/v1/datasets/{cid}" + (f"/{path.strip('/')}" if path.strip("/") else ""))["value"]

    def put_dataset(self, cid: str, path: str, value: Any, *, append: bool = False) -> None:
        self._call("PUT", f"/v1/datasets/{cid}/{path.strip('/')}", {"value": value, "action": "append" if append else "set"})

    def add_engine(self, name: str, files: Mapping[str, bytes], *, executable: str, **manifest: Any) -> str:
        """Publish an engine (signed by the node); its CID."""
        return self._call("POST", "/v1/engines", _engine_body(name, files, executable, manifest))["cid"]

    def engines(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/engines")["engines"]

    def node(self) -> dict[str, Any]:
        return self._call("GET", "/v1/node")

    def peers(self) -> dict[str, Any]:
        return self._call("GET", "/v1/peers")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        return self._call("GET", "/metrics")

    def explain(self, cid: str, *, depth: int = 1) -> dict[str, Any]:
        """The lineage of a task, result, dataset (version) or engine (``GET /v1/explain/{cid}``)."""
        return self._call("GET", f"/v1/explain/{cid}?depth={int(depth)}")


class AsyncClient:
    """The same methods as :class:`Client`, awaitable (trio or asyncio, through httpx)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"},
                                       timeout=timeout)

    @classmethod
    def from_home(cls, home: str | Path, **kw: Any) -> AsyncClient:
        url, token = _home_target(home)
        return cls(url, token, **kw)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
                    params: Mapping[str, Any] | None = None) -> Any:
        try:
            response = await self._http.request(method, path, content=None if body is None else json.dumps(body),
                                                headers=_JSON if method != "GET" else None, params=params,
                                                timeout=timeout or self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise NotRunning(f"meshd is not running at {self.base_url}") from None
        except httpx.TransportError as exc:
            raise ClientError(f"request to {self.base_url} failed: {exc!r}") from None
        return _answer(response)

    async def enqueue(self, tasks: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[str]:
        return _cids(await self._call("POST", "/v1/tasks", _task_body(tasks)))

    async def status(self, cid: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/tasks/{cid}")

    async def results(self, cid: str, *, wait: float = 0.0) -> dict[str, Any]:
        return await self._call("GET", f"/v1/results/{cid}", params={"wait": wait}, timeout=self.timeout + wait)

    async def wait(self, cid: str, *, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(cid)
            left = deadline - time.monotonic()
            if status["state"] in TERMINAL_STATES:
                return status
            if left <= 0:
                raise ClientError(f"timed out after {timeout:g}s waiting for {cid} (state: {status['state']})")
            if (await self.results(cid, wait=min(10.0, left)))["results"]:
                await anyio.sleep(0.25)

    async def cancel(self, cid: str, reason: str = "") -> dict[str, Any]:
        return await self._call("POST", f"/v1/tasks/{cid}/cancel", {"reason": reason} if reason else {})

    async def retry(self, cid: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/tasks/{cid}/retry", {})

    async def cancel_job(self, job: str, reason: str = "") -> dict[str, Any]:
        return await self._call("POST", f"/v1/jobs/{job}/cancel", {"reason": reason} if reason else {})

    async def stream_results(self, cids: list[str], *, timeout: float | None = None
                             ) -> AsyncIterator[dict[str, Any]]:
        """As :meth:`Client.stream_results`, an async generator."""
        params = _stream_params(cids)
        try:
            async with self._http.stream("GET", "/v1/results/stream", params=params,
                                         timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
                if not response.is_success:
                    await response.aread()
                    _answer(response)
                sse = _Sse()
                async for line in response.aiter_lines():
                    item = sse.feed(line)
                    if item is not None:
                        yield item
                    if sse.ended:
                        return
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise NotRunning(f"meshd is not running at {self.base_url}") from None
        except httpx.TransportError as exc:
            raise ClientError(f"results stream from {self.base_url} failed: {exc!r}") from None

    async def queue(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/queue")

    async def create_dataset(self, name: str | None = None, value: Mapping[str, Any] | None = None) -> str:
        body: dict[str, Any] = {} if name is None else {"name": name}
        if value is not None:
            body["value"] = dict(value)
        return (await self._call("POST", "/v1/datasets", body))["cid"]

    async def dataset(self, cid: str, path: str = "") -> Any:
        p = path.strip("/")
        return (await self._call("GET", f"/v1/datasets/{cid}" + (f"/{p}" if p else "")))["value"]

    async def put_dataset(self, cid: str, path: str, value: Any, *, append: bool = False) -> None:
        await self._call("PUT", f"/v1/datasets/{cid}/{path.strip('/')}",
                         {"value": value, "action": "append" if append else "set"})

    async def add_engine(self, name: str, files: Mapping[str, bytes], *, executable: str, **manifest: Any) -> str:
        return (await self._call("POST", "/v1/engines", _engine_body(name, files, executable, manifest)))["cid"]

    async def engines(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/engines"))["engines"]

    async def node(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/node")

    async def peers(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/peers")

    async def metrics(self) -> str:
        return await self._call("GET", "/metrics")

    async def explain(self, cid: str, *, depth: int = 1) -> dict[str, Any]:
        return await self._call("GET", f"/v1/explain/{cid}?depth={int(depth)}")
