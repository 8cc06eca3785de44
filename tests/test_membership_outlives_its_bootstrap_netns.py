"""A mesh of hosts outlives its bootstrap node (issue 15 item 5), in network namespaces.

Five daemons, each in its own namespace with its own address on a bridge,
listen on ``0.0.0.0`` (the README's default) and bootstrap to the first.
Each namespace also has a second interface that nobody can reach (a dummy
interface on a subnet every namespace shares, so a dial there is routed
into the dialler's own dead link and hangs).
The test checks that

* nobody offers a wildcard address, and the nodes connect to each other, not
  only to the first (no star);
* with the first node killed (SIGKILL), work enqueued on the second runs on
  the third, fourth and fifth;
* a sixth node joins through the third and connects to the others soon,
  although every peer offers the unreachable address first;
* a restarted node (same home), whose bootstrap node is dead, is heard at
  once: a task enqueued on it right after its restart is known on its peers
  within a few seconds (it dials the members saved in ``<home>/peers.json``).

Needs root and iproute2; otherwise it skips and says why, and under
``CI=true`` a skip is a failure.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from ._daemons import ECHO, echo_task, wait_for
from .test_mesh_partition_netns import NsDaemon, NsNet, _netns_reason, _sh

pytestmark = pytest.mark.slow

#: Deadlines for outcomes: generous, for a loaded 2-core CI machine running six daemons.
OUTCOME_S = 120.0
#: Bounds on the figures (printed first): loose enough for load, tight enough to catch
#: a return of the 30-60 s stalls (equivocation, waiting on redials) they replaced.
CONNECT_BOUND_S = 15.0
HEARD_BOUND_S = 15.0


class DualNet(NsNet):
    """:class:`NsNet` plus, in every namespace, an interface on a subnet nobody can reach."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        octet = self.ips[0].split(".")[2]
        self.dead_ips = [f"10.233.{octet}.{i + 1}" for i in range(n)]

    def up(self) -> None:
        super().up()
        for ns, dead in zip(self.names, self.dead_ips):
            # A veth pair inside the namespace, its far end never up: ARP on
            # it gets no answer, so a dial to another namespace's address
            # on this subnet hangs until the kernel gives up.
            _sh("ip", "-n", ns, "link", "add", "dead0", "type", "veth", "peer", "name", "dead1")
            _sh("ip", "-n", ns, "addr", "add", f"{dead}/24", "dev", "dead0")
            _sh("ip", "-n", ns, "link", "set", "dead0", "up")


def _node(tmp_path: Path, net: NsNet, i: int, bootstrap: list[str], trust: list[str]) -> NsDaemon:
    d = NsDaemon(tmp_path / f"n{i}", net.names[i], net.ips[i], net.api_ips[i]).init(bootstrap, trust)
    cfg = d.home / "config.toml"
    cfg.write_text(cfg.read_text().replace(f'"/ip4/{d.ip}/tcp/4601"', '"/ip4/0.0.0.0/tcp/4601"'))
    return d


def _live(d: NsDaemon) -> set[str]:
    return set(d.get("/v1/peers").json()["live_runners"])


def _connected(d: NsDaemon) -> set[str]:
    return {p["peer_id"] for p in d.get("/v1/peers").json()["peers"] if p["connected"]}


def test_the_mesh_outlives_its_bootstrap_and_restarts_cleanly(tmp_path: Path) -> None:
    reason = _netns_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the netns test cannot run: {reason}")
        pytest.skip(reason)
    t_start = time.monotonic()
    net = DualNet(6)
    nodes: list[NsDaemon] = []
    figures: dict[str, float] = {}  # printed whatever happens, so a failure under load says how slow it was
    try:
        net.up()
        first = _node(tmp_path, net, 0, [], [])
        second = _node(tmp_path, net, 1, [first.multiaddr], [])  # publishes the engine
        trust = [second.public_hex]
        rest = [_node(tmp_path, net, i, [first.multiaddr], trust) for i in (2, 3, 4)]
        nodes = [first.start(), second.start(), *(d.start() for d in rest)]
        ids = {d.peer_id for d in nodes}
        for d in nodes:
            wait_for(lambda d=d: _live(d) == ids, timeout=60, what=f"{d.home.name} to see all five")
        offered = second.get("/v1/node").json()["addresses"]
        assert not any("/0.0.0.0/" in a for a in offered), offered
        assert any(f"/ip4/{second.ip}/tcp/4601/p2p/" in a for a in offered), offered
        # Not a star: the others connect to each other, not only to the first.
        for d in nodes[1:]:
            wait_for(lambda d=d: len(_connected(d) - {first.peer_id}) >= 2, timeout=30,
                     what=f"{d.home.name} to connect to peers besides the bootstrap")

        body = {"manifest": {"name": "echo", "executable": "echo.py", "interpreter": "python3",
                             "serve_args": ["--jsonl"]},
                "files": {"echo.py": base64.b64encode(ECHO.read_bytes()).decode()}}
        engine = second.post("/v1/engines", body).json()["cid"]

        first.proc.kill()
        first.proc.wait(10)
        killed = time.monotonic()
        alive = {d.peer_id for d in nodes[1:]}
        wait_for(lambda: _live(second) == alive, timeout=OUTCOME_S, what="the second node to drop the first")
        figures["bootstrap_dropped_s"] = time.monotonic() - killed
        tasks = {d.peer_id: second.post("/v1/tasks", echo_task(engine, d.home.name, constraints=[
            {"type": "label", "value": d.home.name}])).json()["cid"] for d in rest}
        for d in rest:
            wait_for(lambda d=d: d.get(f"/v1/tasks/{tasks[d.peer_id]}").json()["state"] == "completed",
                     timeout=OUTCOME_S, what=f"{d.home.name} to run its task without the bootstrap node")

        third = rest[0]
        sixth = _node(tmp_path, net, 5, [third.multiaddr], trust).start()
        nodes.append(sixth)
        joined = time.monotonic()
        others = alive - {third.peer_id}
        wait_for(lambda: others <= _connected(sixth), timeout=OUTCOME_S,
                 what="the sixth node to connect to the members it heard of through the third")
        connect_s = figures["sixth_connected_s"] = time.monotonic() - joined
        wait_for(lambda: _live(sixth) == alive | {sixth.peer_id}, timeout=OUTCOME_S,
                 what="the sixth node to see the mesh")

        fifth = rest[2]
        fifth.stop()
        fifth.start()
        restarted = time.monotonic()
        cid = fifth.post("/v1/tasks", echo_task(engine, "after the restart", constraints=[
            {"type": "label", "value": fifth.home.name}])).json()["cid"]
        wait_for(lambda: second.get(f"/v1/tasks/{cid}").status_code == 200, timeout=OUTCOME_S,
                 what="the second node to know the task the restarted node enqueued")
        heard_s = figures["restarted_task_heard_s"] = time.monotonic() - restarted
        wait_for(lambda: second.get(f"/v1/tasks/{cid}").json()["state"] == "completed", timeout=OUTCOME_S,
                 what="the restarted node's task to complete, seen from the second node")
        # Every peer offers the unreachable address first: a dial there costs
        # 250 ms, and members are heard of within a presence interval (2 s).
        # Bounds are generous for a loaded 2-core CI machine (six daemons plus
        # the rest of the suite): the printed figures are what to read.
        assert connect_s < CONNECT_BOUND_S
        # Measured 0.5 s idle: it dials the members it saved in peers.json at start
        # and greets each peer its gossip reaches (was 4.6-4.9 s, waiting on redials).
        # One CI run under load took 5.5 s; the bound catches a return of the
        # 30-60 s equivocation stall, not a slow machine.
        assert heard_s < HEARD_BOUND_S
    finally:
        figures["whole_test_s"] = time.monotonic() - t_start
        print("netns membership figures: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()))
        for d in nodes:
            d.stop()
        net.down()
