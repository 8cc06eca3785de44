"""The CLI talks to a real daemon: enqueue, status, result --wait, queue, node."""

from __future__ import annotations

import json

import pytest

from ._daemons import Daemon, echo_task

pytestmark = pytest.mark.slow


def test_cli_round_trip(daemon: Daemon, tmp_path) -> None:
    api = ["--api", f"127.0.0.1:{daemon.port}"]
    out = daemon.cli("engine", "add", str(tmp_path.parent / "x") if False else "engines/examples/echo.py",
                     "--interpreter", "python3", "--serve-arg=--jsonl", "--json", *api)
    engine = json.loads(out.stdout)["cid"]
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(echo_task(engine, {"cli": True})))
    cid = json.loads(daemon.cli("enqueue", str(task_file), "--json", *api).stdout)["cid"]
    res = daemon.cli("result", cid, "--wait", "--timeout", "60", "--json", *api)
    assert json.loads(res.stdout)["results"][0]["output"] == {"cli": True}
    status = daemon.cli("status", cid, *api).stdout
    assert "completed" in status
    q = json.loads(daemon.cli("queue", "--json", *api).stdout)
    assert q["completed"] == 1
    node = json.loads(daemon.cli("node", "--json", *api).stdout)
    assert node["peer_id"].startswith("12D3KooW")
    # Enqueue from stdin too.
    cid2 = json.loads(daemon.cli("enqueue", "-", "--json", *api, input=json.dumps(echo_task(engine, 2))).stdout)["cid"]
    assert json.loads(daemon.cli("result", cid2, "--wait", "--json", *api).stdout)["results"][0]["output"] == 2


def test_cli_says_clearly_when_no_daemon_runs(tmp_path, daemon_factory) -> None:
    d = daemon_factory("idle")
    out = d.cli("queue", "--api", "127.0.0.1:9", check=False)
    assert out.returncode == 1
    assert "not running" in out.stderr and "Traceback" not in out.stderr
