"""Shared pieces of the adversarial suite: honest daemons and a hostile peer process.

A test module starts its honest mesh once (``module`` scope) and makes its
attacks against it one test at a time; the last test of a module checks
that the honest mesh still finishes its work with correct results.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .._daemons import REPO, Daemon


class HostilePeer:
    """``tests.adversarial._hostile_peer`` as a child process, driven by JSON commands."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.adversarial._hostile_peer", topic, bootstrap],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the hostile peer exited with {self.proc.wait(10)}")
        hello = json.loads(line)
        self.peer_id: str = hello["peer_id"]

    def __call__(self, op: str, **args) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the hostile peer exited with {self.proc.wait(10)}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def topic_of(mesh: str = "default") -> str:
    """The gossipsub topic of a mesh (as meshd.daemon names it)."""
    return f"meshd/{mesh}/hpcp/2"


def rejected(d: Daemon) -> dict[str, int]:
    """The node's rejection counters (``GET /v1/node``)."""
    return d.get("/v1/node").json()["rejected"]
