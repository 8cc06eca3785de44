"""``meshd.client``: the sync and async clients against a real daemon.

Both publish an engine, enqueue tasks, wait for them, read the results,
use a dataset and scrape the metrics; a failed task's ``wait`` returns its
state; an API error and an absent daemon raise ``ClientError`` /
``NotRunning``.  Also runs the module docstring's example and every
example of docs/api.md's "Python client" section as written (each in its own
``python`` process from the checkout, ``~`` the daemon's home's parent); the
daemon runs the evaluator too, for the pipeline example.  The client also
lists tasks page by page, submits and waits on a job, and reads the trust
view and the engine policy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

import meshd.client
from meshd.client import AsyncClient, Client
from meshd.errors import ClientError, NotRunning

from ._daemons import ECHO, REPO, Daemon, free_port

FAIL = "import sys\nsys.stdin.read()\nsys.exit(3)\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("client") / ".meshd", roles=("manager", "runner", "evaluator")).init().start()
    try:
        yield d
    finally:
        d.stop()


def _task(engine: str, value: object, **extra: object) -> dict:
    return {"input": {"value": value}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}},
            **extra}


def test_sync_client(daemon: Daemon) -> None:
    with Client.from_home(daemon.home) as mesh:
        engine = mesh.add_engine("echo", {"echo.py": ECHO.read_bytes()}, executable="echo.py", interpreter="python3")
        assert any(e["cid"] == engine for e in mesh.engines())
        cids = mesh.enqueue([_task(engine, i) for i in range(3)])
        assert len(cids) == 3 and mesh.enqueue(_task(engine, 0)) == cids[:1]
        for i, cid in enumerate(cids):
            assert mesh.wait(cid, timeout=60)["state"] == "completed"
            assert mesh.results(cid)["results"][0]["output"] == i
        ds = mesh.create_dataset(value={"a": 1})
        mesh.put_dataset(ds, "b", [1, 2])
        mesh.put_dataset(ds, "c", "x", append=True)
        assert mesh.dataset(ds) == {"a": 1, "b": [1, 2], "c": ["x"]} and mesh.dataset(ds, "b") == [1, 2]
        assert mesh.queue()["completed"] >= 3 and mesh.node()["peer_id"] == daemon.peer_id
        assert "meshd_queue_tasks" in mesh.metrics()
        failing = mesh.add_engine("fails", {"f.py": FAIL.encode()}, executable="f.py", interpreter="python3")
        [bad] = mesh.enqueue(_task(failing, 1, max_attempts=1))
        assert mesh.wait(bad, timeout=60)["state"] == "failed"
        with pytest.raises(ClientError, match="bad_cid"):
            mesh.status("not-a-cid")


async def test_async_client(daemon: Daemon) -> None:
    async with AsyncClient.from_home(daemon.home) as mesh:
        engine = await mesh.add_engine("echo", {"echo.py": ECHO.read_bytes()}, executable="echo.py",
                                       interpreter="python3")
        [cid] = await mesh.enqueue(_task(engine, "async"))
        assert (await mesh.wait(cid, timeout=60))["state"] == "completed"
        assert (await mesh.results(cid))["results"][0]["output"] == "async"
        ds = await mesh.create_dataset(name="async-ds")
        await mesh.put_dataset(ds, "k", 3)
        assert await mesh.dataset(ds, "k") == 3
        with pytest.raises(ClientError, match="task_not_found"):
            await mesh.status("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")


def test_nothing_listening_is_not_running() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "token") as mesh, pytest.raises(NotRunning):
        mesh.queue()


def test_the_module_example_runs_as_written(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    example = meshd.client.__doc__.split("Example::\n", 1)[1]
    code = "\n".join(line[4:] for line in example.splitlines())
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(daemon.home.parent))
    exec(compile(code, "meshd.client example", "exec"), {})


def test_api_md_examples_run_as_written(daemon: Daemon) -> None:
    text = (REPO / "docs" / "api.md").read_text()
    section = text[text.index("## Python client"):text.index("## CLI equivalents")]
    examples = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(examples) == 4 and all("..." not in e and "…" not in e for e in examples)
    env = dict(os.environ, HOME=str(daemon.home.parent))
    outputs = []
    for code in examples:
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=400)
        assert run.returncode == 0, f"{code}\n{run.stderr}"
        outputs.append(run.stdout.splitlines())
    assert outputs[0] == ["completed 21"]
    streamed = [line.split(" ", 2) for line in outputs[1][:5]]
    assert [s for s, _, _ in streamed] == ["completed"] * 5
    assert sorted(json.loads(out)[0] for _, _, out in streamed) == [0, 1, 2, 3, 4]
    assert any(" square-3 " in line for line in outputs[1][5:])
    assert outputs[2][0] == str({"n": 10, "seen": [1]})
    assert outputs[3][0].startswith("completed [('split', 1, 1)")


def test_listings_jobs_and_policy(daemon: Daemon) -> None:
    with Client.from_home(daemon.home) as mesh:
        engine = mesh.add_engine("echo", {"echo.py": ECHO.read_bytes()}, executable="echo.py", interpreter="python3")
        cids = mesh.enqueue([_task(engine, f"page-{i}", name=f"page-{i}") for i in range(7)])
        for cid in cids:
            mesh.wait(cid, timeout=60)
        first = mesh.tasks("completed", limit=3)
        assert len(first["tasks"]) == 3 and first["next"] == first["tasks"][-1]["cid"]
        rows = list(mesh.iter_tasks("completed", page=3))
        assert {r["cid"] for r in rows} >= set(cids) and len(rows) == len({r["cid"] for r in rows})
        assert {r["name"] for r in rows if r["cid"] in cids} == {f"page-{i}" for i in range(7)}
        assert mesh.trust()["banned"] == [] and "trusted_publishers" in mesh.engine_policy()
        with pytest.raises(ClientError) as refused:
            mesh.job("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        assert refused.value.status == 404
    with Client(daemon.url, "wrong") as stranger, pytest.raises(ClientError) as denied:
        stranger.queue()
    assert denied.value.status == 401 and denied.value.code == "unauthorized"
