"""A typed Python client of a meshd node's HTTP API (``/v1``), sync and async, on httpx.

Why: scripts should not have to rebuild what the CLI knows (the token file,
``<home>/api``, the error shape).  :class:`Client` and :class:`AsyncClient`
offer the same methods; every call is one request (``wait`` polls) and every
failure is a :class:`meshd.errors.ClientError` (``NotRunning`` when nothing
listens), with the API's ``code: message`` (and ``.status``, ``.code``).  The
CLI is built on :class:`Client`: its commands call these methods, and
:meth:`Client.request` is the one way any of them reaches the API.

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

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx

from ..errors import ClientError
from ._wire import (
    _answer,
    _check,
    _cids,
    _content,
    _engine_body,
    _failed,
    _headers,
    _home_target,
    _not_running,
    _Sse,
    _stream_params,
    _task_body,
    _tasks_params,
    _timed_out,
)

__all__ = ["AsyncClient", "Client", "TERMINAL_STATES"]

#: States a task does not leave.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class Client:
    """A synchronous client; close it, or use it as a context manager.

    Args:
        base_url: e.g. ``http://127.0.0.1:7600``.
        token: A bearer token (admin, submit or read scope; each method needs
            its route's).  None sends none: only ``/v1/health`` answers then.
        timeout: Per-request timeout (s); long polls add their wait to it.
    """

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"} if token else {})

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

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                timeout: float | None = None, on_upload: Callable[[int, int], None] | None = None) -> Any:
        """Send one request to any route; the decoded JSON answer (text when it is not JSON).

        Args:
            method: ``GET``, ``POST``, ``PUT`` or ``DELETE``.
            path: e.g. ``/v1/queue``.
            body: Sent as JSON when not None.
            params: Query parameters.
            timeout: This request's timeout (default: the client's).
            on_upload: Called with ``(sent, total)`` bytes as the body goes out.

        Raises:
            NotRunning: Nothing listens at the base URL.
            ClientError: The API refused (``.status``, ``.code``) or the request failed.
        """
        content, extra = _content(body, on_upload)
        try:
            response = self._http.request(method, path, content=content, headers=_headers(method, extra),
                                          params=params, timeout=timeout or self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise _not_running(self.base_url) from None
        except httpx.TransportError as exc:
            raise _failed(self.base_url, exc) from None
        return _answer(response)

    _call = request

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

        One Server-Sent Events request (``GET /v1/results/stream``, at most
        1,000 tasks), not a poll per task; the generator ends once every task
        has ended.  ``timeout`` bounds the whole stream (default: none); it is
        checked on every line, and the server sends one at least every 15 s.

        Raises:
            ClientError: the API refused the request, or ``timeout`` passed
                (``code`` ``timeout``).
        """
        params = _stream_params(cids)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._http.stream("GET", "/v1/results/stream", params=params,
                                   timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
                if not response.is_success:
                    response.read()
                    _answer(response)
                sse = _Sse()
                for line in response.iter_lines():
                    _check(deadline, timeout)
                    item = sse.feed(line)
                    if item is not None:
                        yield item
                    if sse.ended:
                        return
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise _not_running(self.base_url) from None
        except httpx.TimeoutException:
            raise _timed_out(timeout) from None
        except httpx.TransportError as exc:
            raise _failed(self.base_url, exc) from None

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

    def publish_engine(self, manifest: Mapping[str, Any], files: Mapping[str, bytes], *,
                       on_upload: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Publish an engine from a whole manifest (``name``, ``executable``...); the API's answer.

        ``on_upload(sent, total)`` follows the upload (the CLI's progress bar).
        """
        body = _engine_body(str(manifest.get("name", "")), files, str(manifest.get("executable", "")),
                            {k: v for k, v in manifest.items() if k not in ("name", "executable")})
        return self._call("POST", "/v1/engines", body, on_upload=on_upload)

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
        return self._call("GET", f"/v1/explain/{cid}", params={"depth": int(depth)})

    def health(self) -> dict[str, Any]:
        """``GET /v1/health`` (needs no token)."""
        return self._call("GET", "/v1/health")

    def tasks(self, state: str | None = None, *, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """One page of ``GET /v1/tasks`` (``tasks``, ``next``): pass ``next`` as ``after`` for the next page."""
        return self._call("GET", "/v1/tasks", params=_tasks_params(state, limit, after))

    def iter_tasks(self, state: str | None = None, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every task (with ``state``), page by page, as the listing's rows."""
        after = None
        while True:
            answer = self.tasks(state, limit=page, after=after)
            yield from answer["tasks"]
            after = answer.get("next")
            if not after:
                return

    def submit_job(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a pipeline (``POST /v1/jobs``); the answer names the ``job``."""
        return self._call("POST", "/v1/jobs", dict(spec))

    def job(self, job: str) -> dict[str, Any]:
        """A job's state, stages with their progress, and what blocks them."""
        return self._call("GET", f"/v1/jobs/{job}")

    def jobs(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs", params={"limit": int(limit)})["jobs"]

    def wait_job(self, job: str, *, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        """The job's status once it is no longer running (completed, failed, stalled or cancelled).

        Raises:
            ClientError: ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job)
            if status["state"] != "running":
                return status
            if time.monotonic() >= deadline:
                raise ClientError(f"timed out after {timeout:g}s waiting for job {job} (state: running)")
            time.sleep(interval)

    def trust(self) -> dict[str, Any]:
        """The Verifier's view: trust scores and banned peers (``GET /v1/trust``)."""
        return self._call("GET", "/v1/trust")

    def engine_policy(self) -> dict[str, Any]:
        return self._call("GET", "/v1/engines/policy")

    def trust_publisher(self, publisher: str) -> dict[str, Any]:
        """Trust every engine signed by ``publisher`` (a peer id or a 64-hex key)."""
        return self._call("POST", "/v1/engines/trust", {"publisher": publisher})

    def allow_engine(self, cid: str) -> dict[str, Any]:
        return self._call("POST", "/v1/engines/allow", {"cid": cid})

    def sign_engine(self, cid: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/engines/{cid}/sign")

    def owner(self) -> dict[str, Any]:
        return self._call("GET", "/v1/owner")

    def drain(self, deadline_s: float | None = None) -> dict[str, Any]:
        return self._call("POST", "/v1/node/drain", {} if deadline_s is None else {"deadline_s": deadline_s})

    def resume(self) -> dict[str, Any]:
        return self._call("POST", "/v1/node/resume", {})


class AsyncClient:
    """The same methods as :class:`Client`, awaitable (trio or asyncio, through httpx)."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers={"Authorization": f"Bearer {token}"} if token else {})

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

    async def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """As :meth:`Client.request` (no upload progress)."""
        try:
            response = await self._http.request(method, path, content=None if body is None else json.dumps(body),
                                                headers=_headers(method, {}), params=params,
                                                timeout=timeout or self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise _not_running(self.base_url) from None
        except httpx.TransportError as exc:
            raise _failed(self.base_url, exc) from None
        return _answer(response)

    _call = request

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
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with self._http.stream("GET", "/v1/results/stream", params=params,
                                         timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
                if not response.is_success:
                    await response.aread()
                    _answer(response)
                sse = _Sse()
                async for line in response.aiter_lines():
                    _check(deadline, timeout)
                    item = sse.feed(line)
                    if item is not None:
                        yield item
                    if sse.ended:
                        return
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise _not_running(self.base_url) from None
        except httpx.TimeoutException:
            raise _timed_out(timeout) from None
        except httpx.TransportError as exc:
            raise _failed(self.base_url, exc) from None

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
        return await self._call("GET", f"/v1/explain/{cid}", params={"depth": int(depth)})

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/health")

    async def tasks(self, state: str | None = None, *, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        return await self._call("GET", "/v1/tasks", params=_tasks_params(state, limit, after))

    async def iter_tasks(self, state: str | None = None, *, page: int = 500) -> AsyncIterator[dict[str, Any]]:
        after = None
        while True:
            answer = await self.tasks(state, limit=page, after=after)
            for row in answer["tasks"]:
                yield row
            after = answer.get("next")
            if not after:
                return

    async def submit_job(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/v1/jobs", dict(spec))

    async def job(self, job: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job}")

    async def jobs(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/jobs", params={"limit": int(limit)}))["jobs"]

    async def wait_job(self, job: str, *, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.job(job)
            if status["state"] != "running":
                return status
            if time.monotonic() >= deadline:
                raise ClientError(f"timed out after {timeout:g}s waiting for job {job} (state: running)")
            await anyio.sleep(interval)

    async def trust(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/trust")

    async def engine_policy(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/engines/policy")

    async def trust_publisher(self, publisher: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/engines/trust", {"publisher": publisher})

    async def allow_engine(self, cid: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/engines/allow", {"cid": cid})

    async def sign_engine(self, cid: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/engines/{cid}/sign")

    async def owner(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/owner")

    async def drain(self, deadline_s: float | None = None) -> dict[str, Any]:
        return await self._call("POST", "/v1/node/drain", {} if deadline_s is None else {"deadline_s": deadline_s})

    async def resume(self) -> dict[str, Any]:
        return await self._call("POST", "/v1/node/resume", {})
