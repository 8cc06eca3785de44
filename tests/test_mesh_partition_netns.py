"""A network partition and heal between real daemons in network namespaces.

Three daemons run in their own namespaces (``ip netns``), joined by veth
pairs to a bridge in the root namespace, with addresses in a private /24 that
exists only inside this test.  Cutting one node's link partitions it: both
sides keep accepting and running work, and after the heal every replica
converges.  Needs root and iproute2; otherwise the test skips and says why.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ._daemons import ECHO, echo_task, wait_for

pytestmark = pytest.mark.slow


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def _netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "partition test needs root for ip netns"
    if shutil.which("ip") is None:
        return "partition test needs iproute2 (ip)"
    probe = f"meshd-probe-{secrets.token_hex(3)}"
    r = _sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add is not permitted here: {r.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


class NsNet:
    """N namespaces on a bridge (the mesh network, which we cut), each with a
    separate point-to-point management link to the root namespace (how the
    test reaches its API, which the cut leaves alone)."""

    def __init__(self, n: int) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"mbr{tag}"
        self.names = [f"meshd-{tag}-{i}" for i in range(n)]
        self.hostifs = [f"mh{tag}{i}" for i in range(n)]
        self.mgmtifs = [f"mm{tag}{i}" for i in range(n)]
        octet = 100 + int(tag, 16) % 100
        self.ips = [f"10.231.{octet}.{i + 1}" for i in range(n)]
        self.api_ips = [f"10.232.{octet}.{4 * i + 2}" for i in range(n)]
        self.root_ips = [f"10.232.{octet}.{4 * i + 1}" for i in range(n)]

    def up(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "link", "set", self.bridge, "up")
        for i, (ns, hif, ip) in enumerate(zip(self.names, self.hostifs, self.ips)):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", hif, "master", self.bridge)
            _sh("ip", "link", "set", hif, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            mif = self.mgmtifs[i]
            _sh("ip", "link", "add", mif, "type", "veth", "peer", "name", "mgmt", "netns", ns)
            _sh("ip", "addr", "add", f"{self.root_ips[i]}/30", "dev", mif)
            _sh("ip", "link", "set", mif, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{self.api_ips[i]}/30", "dev", "mgmt")
            _sh("ip", "-n", ns, "link", "set", "mgmt", "up")

    def cut(self, i: int) -> None:
        _sh("ip", "link", "set", self.hostifs[i], "down")

    def heal(self, i: int) -> None:
        _sh("ip", "link", "set", self.hostifs[i], "up")

    def down(self) -> None:
        for ns, hif, mif in zip(self.names, self.hostifs, self.mgmtifs):
            _sh("ip", "link", "del", hif, check=False)
            _sh("ip", "link", "del", mif, check=False)
            _sh("ip", "netns", "del", ns, check=False)
        _sh("ip", "link", "del", self.bridge, check=False)


class NsDaemon:
    def __init__(self, home: Path, ns: str, ip: str, api_ip: str) -> None:
        self.home, self.ns, self.ip, self.api_ip = home, ns, ip, api_ip
        self.url = f"http://{api_ip}:7600"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, MESHD_HOME=str(home))

    def init(self, bootstrap: list[str], trust: list[str]) -> "NsDaemon":
        subprocess.run([sys.executable, "-m", "meshd.cli", "init", "--home", str(self.home)], check=True,
                       capture_output=True, env=self.env)
        cfg = self.home / "config.toml"
        text = cfg.read_text().replace('listen = "127.0.0.1:7600"', f'listen = "{self.api_ip}:7600"')
        text = text.replace('"/ip4/0.0.0.0/tcp/4601"', f'"/ip4/{self.ip}/tcp/4601"')
        text = text.replace("bootstrap = []", "bootstrap = " + json.dumps(bootstrap))
        text = text.replace("trusted_publishers = []", "trusted_publishers = " + json.dumps(trust))
        text = re.sub(r"task_timeout_s = [0-9.]+", "task_timeout_s = 5.0", text)
        text = text.replace("labels = []", f'labels = ["{self.home.name}"]')
        cfg.write_text(text)
        from meshd.home import Home

        ident = Home(self.home).load_identity()
        self.peer_id, self.public_hex = ident.peer_id, ident.public_hex
        self.token = (self.home / "api.token").read_text().strip()
        return self

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.ip}/tcp/4601/p2p/{self.peer_id}"

    def start(self) -> "NsDaemon":
        log = open(self.home.parent / f"{self.home.name}.log", "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m", "meshd.cli", "run",
                                      "--home", str(self.home)], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: self.get("/v1/health").status_code == 200, timeout=60, what=f"{self.ns} daemon")
        return self

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10, **kw)

    def post(self, path: str, body) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_both_sides_work_while_partitioned_and_converge_after_heal(tmp_path: Path) -> None:
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    net = NsNet(3)
    daemons: list[NsDaemon] = []
    try:
        net.up()
        a = NsDaemon(tmp_path / "a", net.names[0], net.ips[0], net.api_ips[0]).init([], [])
        daemons.append(a.start())
        for i in (1, 2):
            d = NsDaemon(tmp_path / f"n{i}", net.names[i], net.ips[i], net.api_ips[i]).init([a.multiaddr], [a.public_hex])
            daemons.append(d.start())
        for d in daemons:
            wait_for(lambda d=d: sum(1 for p in d.get("/v1/peers").json()["peers"] if p["roles"]) >= 2,
                     timeout=60, what=f"{d.ns} to see the mesh")
        import base64

        body = {"manifest": {"name": "echo", "executable": "echo.py", "interpreter": "python3", "serve_args": ["--jsonl"]},
                "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}
        engine = a.post("/v1/engines", body).json()["cid"]
        c = daemons[2]
        wait_for(lambda: any(e["cid"] == engine for e in c.get("/v1/engines").json()["engines"]), timeout=60,
                 what="the engine to reach the third node")

        # Node 2 runs the engine once (a label constraint sends the task
        # there), so its files are local: engines are fetched lazily, and a
        # node cut off before its first run could not get them.
        warm = echo_task(engine, "warm-up", constraints=[{"type": "label", "value": c.home.name}])
        warm_cid = a.post("/v1/tasks", warm).json()["cid"]
        wait_for(lambda: a.get(f"/v1/tasks/{warm_cid}").json()["state"] == "completed", timeout=60,
                 what="the warm-up task on node 2")

        net.cut(2)  # node 2 is alone on its side
        left = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, {"left": i}) for i in range(5)]}).json()["tasks"]]
        right = [t["cid"] for t in c.post("/v1/tasks", {"tasks": [echo_task(engine, {"right": i}) for i in range(5)]}).json()["tasks"]]
        # Both sides keep working while cut off.
        wait_for(lambda: all(a.get(f"/v1/tasks/{x}").json()["state"] == "completed" for x in left), timeout=90,
                 what="the majority side to finish its tasks")
        wait_for(lambda: all(c.get(f"/v1/tasks/{x}").json()["state"] == "completed" for x in right), timeout=90,
                 what="the cut-off node to finish its tasks")
        assert a.get(f"/v1/tasks/{right[0]}").status_code == 404  # not seen across the cut

        net.heal(2)
        for d in daemons:
            wait_for(lambda d=d: d.get("/v1/queue").json()["completed"] == 11, timeout=120,
                     what=f"{d.ns} to converge after the heal")
        for d in daemons:
            for x in left + right:
                assert d.get(f"/v1/tasks/{x}").json()["state"] == "completed"
        # Every count agrees, result records included: the results object
        # syncs on its own and may trail the queue by a moment.
        wait_for(lambda: len({json.dumps(d.get("/v1/queue").json(), sort_keys=True) for d in daemons}) == 1,
                 timeout=60, what="every node's queue counts to agree after the heal")
    finally:
        for d in daemons:
            d.stop()
        net.down()
