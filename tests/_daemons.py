"""Real ``meshd run`` daemons as separate processes on 127.0.0.1, for tests.

Every wait is on a condition (the API answers, a task reaches a state) with a
deadline; nothing sleeps a fixed time.

The API wants a bearer token on every route but ``/v1/health`` and JSON bodies
declared as such: :meth:`Daemon.get`, :meth:`Daemon.post`, :meth:`Daemon.put`
and :meth:`Daemon.client` send the home's admin token (``scope=`` picks
another) and ``Content-Type: application/json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from meshd.bench import localmesh

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "engines" / "examples" / "echo.py"


def free_port() -> int:
    """A free port below the ephemeral range (see :func:`meshd.bench.localmesh.free_port`):
    daemons started earlier dial out from that range and could take a port chosen there."""
    return localmesh.free_port()


def wait_for(cond: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition", interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


class Daemon:
    """One meshd home and the daemon process running on it."""

    def __init__(self, home: Path, *, roles: tuple[str, ...] = ("manager", "runner"), extra_config: str = "",
                 bootstrap: list[str] | None = None, p2p: bool = True, trust: list[str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.p2p_port = free_port()
        self.bootstrap = bootstrap or []
        self.p2p = p2p
        self.trust = trust or []  # hex public keys of trusted engine publishers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{home.name}.log"
        self.env = dict(os.environ, MESHD_HOME=str(home), PYTHONUNBUFFERED="1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.roles = roles
        self.extra_config = extra_config

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshd.cli", *args], input=input, capture_output=True, text=True,
            env=self.env, timeout=120, check=check,
        )

    def init(self) -> "Daemon":
        self.cli("init", "--home", str(self.home), "--preset", "server")  # tests choose their owner policy
        cfg = self.home / "config.toml"
        text = cfg.read_text()
        roles = ", ".join(f'"{r}"' for r in self.roles)
        text = text.replace('listen = "127.0.0.1:7600"', f'listen = "127.0.0.1:{self.port}"')
        p2p_listen = f'"/ip4/127.0.0.1/tcp/{self.p2p_port}"' if self.p2p else ""
        text = text.replace('"/ip4/0.0.0.0/tcp/4601"', p2p_listen)
        text = text.replace("bootstrap = []", "bootstrap = " + json.dumps(self.bootstrap))
        text = text.replace("trusted_publishers = []", "trusted_publishers = " + json.dumps(self.trust))
        import re

        text = re.sub(r"roles = \[[^\]]*\]", f"roles = [{roles}]", text)
        text = re.sub(r"task_timeout_s = [0-9.]+", "task_timeout_s = 10.0", text)
        cfg.write_text(text + self.extra_config)
        return self

    @property
    def peer_id(self) -> str:
        from meshd.home import Home

        return Home(self.home).load_identity().peer_id

    @property
    def public_hex(self) -> str:
        from meshd.home import Home

        return Home(self.home).load_identity().public_hex

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def start(self) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshd.cli", "run", "--home", str(self.home)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )
        wait_for(self._healthy, timeout=60, what=f"daemon on {self.url} to answer")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200

    def notable_log(self, limit: int = 40) -> str:
        """The log's last ``limit`` lines that are not routine (not ``info``), and a
        count of every event, for a failed test's report."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        events: dict[str, int] = {}
        for line in lines:
            if " event=" in line:
                ev = line.split(" event=", 1)[1].split(" ", 1)[0]
                events[ev] = events.get(ev, 0) + 1
        odd = [ln[:300] for ln in lines if " info " not in ln[:40] or "failed" in ln or "error" in ln]
        return "\n".join(odd[-limit:] + ["events: " + ", ".join(f"{k}={v}" for k, v in sorted(events.items()))])

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # -- API helpers ------------------------------------------------------------

    def token(self, scope: str = "admin") -> str:
        """The home's API token of ``scope`` (``admin``, ``submit`` or ``read``; the last two exist once started)."""
        from meshd.home import Home

        return Home(self.home).read_token(scope)

    def headers(self, scope: str = "admin", *, json_body: bool = False) -> dict[str, str]:
        """``Authorization`` for ``scope``, plus ``Content-Type: application/json`` when ``json_body``."""
        out = {"Authorization": f"Bearer {self.token(scope)}"}
        if json_body:
            out["Content-Type"] = "application/json"
        return out

    def client(self, scope: str = "admin", **kw: Any) -> httpx.Client:
        """An ``httpx.Client`` on this daemon carrying the ``scope`` token (close it, or use ``with``)."""
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=self.headers(scope), **kw)

    def get(self, path: str, *, scope: str = "admin", **kw: Any) -> httpx.Response:
        kw["headers"] = {**self.headers(scope), **kw.get("headers", {})}
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, body: Any = None, *, scope: str = "admin", **kw: Any) -> httpx.Response:
        if body is not None:
            kw["content"] = json.dumps(body)
        kw["headers"] = {**self.headers(scope, json_body=True), **kw.get("headers", {})}
        return httpx.post(self.url + path, timeout=30, **kw)

    def put(self, path: str, body: Any, *, scope: str = "admin", **kw: Any) -> httpx.Response:
        kw["headers"] = {**self.headers(scope, json_body=True), **kw.get("headers", {})}
        return httpx.put(self.url + path, content=json.dumps(body), timeout=30, **kw)

    def add_echo_engine(self, **manifest: Any) -> str:
        import base64

        body = {"manifest": {"name": "echo", "executable": "echo.py", "interpreter": "python3",
                             "serve_args": ["--jsonl"], **manifest},
                "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}
        r = self.post("/v1/engines", body)
        assert r.status_code in (200, 201), r.text
        return r.json()["cid"]

    def add_script_engine(self, name: str, source: str, **manifest: Any) -> str:
        import base64

        body = {"manifest": {"name": name, "executable": f"{name}.py", "interpreter": "python3", **manifest},
                "files": {f"{name}.py": base64.b64encode(source.encode()).decode()}}
        r = self.post("/v1/engines", body)
        assert r.status_code in (200, 201), r.text
        return r.json()["cid"]

    def wait_state(self, cid: str, state: str, timeout: float = 60) -> dict:
        last: list[Any] = [None]

        def cond() -> dict | None:
            r = self.get(f"/v1/tasks/{cid}")
            last[0] = r.json() if r.status_code == 200 else r.status_code
            if r.status_code == 200 and r.json()["state"] == state:
                return r.json()
            return None

        try:
            return wait_for(cond, timeout=timeout, what=f"task {cid} to be {state}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {str(last[0])[:1500]}") from None


def echo_task(engine: str, value: Any, **extra: Any) -> dict:
    return {"input": {"value": value}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}, **extra}
