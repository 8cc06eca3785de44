"""Start a local mesh of ``meshd run`` processes on 127.0.0.1.

Used by ``make demo``, ``meshd bench mesh`` and ``scripts/compare_peers.py``:
each node gets its own home under a root directory, free ports for the API
and libp2p, and bootstraps to the first node.  Stopping sends SIGTERM.
"""

from __future__ import annotations

import json
import collections
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

PY = sys.executable


#: Ports :func:`free_port` handed out lately: a port is free until the daemon
#: it was chosen for binds it, so the next call must not choose it again (a
#: node's API and p2p ports are chosen one after the other, before it starts).
_handed_out: collections.deque[int] = collections.deque(maxlen=4096)


def free_port() -> int:
    """A port free now, below Linux's default ephemeral range (32768-60999) when one is,
    and not one this process handed out lately.

    A port from the ephemeral range (what binding port 0 gives) is free when
    chosen, but the daemons started before this one dial out from that same
    range: one of their connections could take it before this daemon binds
    it, and the daemon then refuses to start (a port in use).
    """
    for _ in range(50):
        port = random.randrange(20_000, 32_000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.append(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(msg, flush=True)


class LocalNode:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.home = root / name
        self.api_port = free_port()
        self.p2p_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen | None = None
        self.peer_id = ""
        self.headers: dict[str, str] = {}  # the admin token, once init() has made the home
        self._http: httpx.Client | None = None

    def meshd(self, *args: str) -> str:
        out = subprocess.run([PY, "-m", "meshd.cli", *args, "--home", str(self.home)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"meshd {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def init(self, bootstrap: list[str], roles: list[str], *, slots: int = 2, extra_config: str = "",
             trust: list[str] = ()) -> None:
        self.meshd("init", "--preset", "server")  # benchmarks set their owner policy themselves
        cfg = self.home / "config.toml"
        text = cfg.read_text()
        text = text.replace('listen = "127.0.0.1:7600"', f'listen = "127.0.0.1:{self.api_port}"')
        text = text.replace('"/ip4/0.0.0.0/tcp/4601"', f'"/ip4/127.0.0.1/tcp/{self.p2p_port}"')
        text = text.replace("bootstrap = []", "bootstrap = " + json.dumps(bootstrap))
        text = text.replace('name = "', f'name = "{self.name}" # was "', 1)
        text = re.sub(r"roles = \[[^\]]*\]", "roles = " + json.dumps(roles), text)
        text = text.replace("trusted_publishers = []", "trusted_publishers = " + json.dumps(list(trust)))
        text = re.sub(r"slots = \d+", f"slots = {slots}", text)
        cfg.write_text(text + extra_config)
        from meshd.home import Home

        identity = Home(self.home).load_identity()
        self.peer_id = identity.peer_id
        self.public_hex = identity.public_hex
        # Every API request but /v1/health needs a token, on loopback too.
        self.headers = {"Authorization": f"Bearer {Home(self.home).read_token()}"}

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def start(self) -> None:
        log = open(self.home.parent / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen([PY, "-m", "meshd.cli", "run", "--home", str(self.home)], stdout=log, stderr=log)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.home.parent / (self.name + '.log')}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start in {timeout}s")

    @property
    def pid(self) -> int | None:
        """The daemon's process id, while it runs."""
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def signal_tree(self, sig: int) -> None:
        """Send ``sig`` to the daemon and every process below it (its engine workers)."""
        if self.pid is None:
            return
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def http(self) -> httpx.Client:
        """A keep-alive client for this node's API.  Benchmarks that poll must
        use it: a fresh connection per request costs the poller about 20 ms
        here, which a poll over several nodes adds to what it measures
        (``bench membership``'s rejoin figures were 100-150 ms too high)."""
        if self._http is None:
            self._http = httpx.Client(headers=self.headers)
        return self._http

    def get(self, path: str, **kw):
        return self.http.get(self.url + path, timeout=30, **kw).json()

    def post(self, path: str, body) -> dict:
        r = self.http.post(self.url + path, json=body, timeout=60)
        if r.status_code >= 400:
            raise SystemExit(f"POST {path} failed: {r.text}")
        return r.json()




def start_mesh(root: Path, n: int, roles: list[str], *, slots: int = 2, extra_config: str = "",
               node_roles: Sequence[Sequence[str]] | None = None,
               node_slots: Sequence[int] | None = None) -> list[LocalNode]:
    """Init and start ``n`` nodes under ``root`` (which must be empty).

    Args:
        root: An empty directory; each node's home and log go under it.
        n: Number of nodes (named node-a, node-b, ...).
        roles: Roles of every node, unless ``node_roles`` is given.
        slots: Runner slots of every node, unless ``node_slots`` is given.
        extra_config: TOML appended to every node's config.
        node_roles: One roles list per node (``len == n``).
        node_slots: One slot count per node (``len == n``).
    """
    per_roles = [list(r) for r in node_roles] if node_roles is not None else [list(roles)] * n
    per_slots = list(node_slots) if node_slots is not None else [slots] * n
    if len(per_roles) != n or len(per_slots) != n:
        raise ValueError("node_roles and node_slots need one entry per node")
    nodes = [LocalNode(root, f"node-{chr(ord('a') + i)}") for i in range(n)]
    first = nodes[0]
    first.init([], per_roles[0], slots=per_slots[0], extra_config=extra_config)
    for node, r, s in zip(nodes[1:], per_roles[1:], per_slots[1:]):
        # The first node publishes the engines; the others trust its key.
        node.init([first.multiaddr], r, slots=s, extra_config=extra_config, trust=[first.public_hex])
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
    except BaseException:
        # The caller never gets the list, so it cannot stop them: a node that
        # failed to start left the others running, after their homes were
        # removed (seen as a bench run that printed nothing).
        for node in nodes:
            node.stop()
        raise
    return nodes


def wait_peers(nodes: list[LocalNode], timeout: float = 30.0) -> bool:
    """Wait until every node sees every other node's presence."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = True
        for node in nodes:
            peers = node.get("/v1/node").get("peers", [])
            if sum(1 for p in peers if p.get("roles")) < len(nodes) - 1:
                ok = False
                break
        if ok:
            return True
        time.sleep(0.2)
    return False
