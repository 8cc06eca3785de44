"""The ``meshd`` CLI against a real in-process API server.

The server (Hypercorn on port 0 over :class:`FakeNode`) runs in the test's
trio nursery; ``main([...])`` runs in a worker thread, exactly as it would in
a separate process, and talks to it over TCP.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import tarfile
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from meshd.api.app import create_app
from meshd.api.server import serve
from meshd.cli.commands import main
from meshd.config import ApiOptions
from meshd.home import Home, init_home
from tests.test_api_contract_inprocess import FakeNode, listing2_task


class PolledNode(FakeNode):
    """A FakeNode that signals each time a task's status is read."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0
        self.polled = trio.Event()

    async def task_status(self, cid: str) -> dict:
        self.polls += 1
        self.polled.set()
        return await super().task_status(cid)


class Harness:
    """A running server plus helpers to run the CLI against it."""

    def __init__(self, node: PolledNode, api: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.node, self.api, self.home, self._capsys = node, api, home, capsys

    async def run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        """Run ``meshd argv...`` with this home; return (exit code, stdout, stderr)."""
        self._capsys.readouterr()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = await trio.to_thread.run_sync(main, [*argv, "--home", str(self.home)])
        finally:
            sys.stdin = old_stdin
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
async def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Harness]:
    node = PolledNode()
    home = init_home(tmp_path / "home")
    # The server takes the home's tokens, as the daemon does; the CLI sends the admin one.
    options = Home(home.path).api_options(home.load_config({"api": {"listen": "127.0.0.1:0"}}))
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, create_app(node, options), options)
        # The home's config names the server, so commands need no --api.
        home.config_path.write_text(home.config_path.read_text().replace("127.0.0.1:7600", f"127.0.0.1:{bound.port}"))
        yield Harness(node, f"127.0.0.1:{bound.port}", home.path, capsys)
        nursery.cancel_scope.cancel()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- init / run


def test_init_prints_the_peer_id_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    assert main(["init", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    peer_id = Home(home).load_identity().peer_id
    assert f"peer id: {peer_id}" in out
    assert main(["init", "--home", str(home)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["init", "--home", str(home), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peer_id"] != peer_id


def test_init_uses_meshd_home_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MESHD_HOME", str(tmp_path / "env-home"))
    assert main(["init"]) == 0
    assert (tmp_path / "env-home" / "identity.key").exists()


def test_run_passes_flag_overrides_to_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)  # it would become a [docker] override
    calls: list[tuple[Any, Any]] = []
    fake = types.ModuleType("meshd.daemon")
    fake.run = lambda home, overrides: calls.append((home, overrides)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshd.daemon", fake)
    init_home(tmp_path)
    code = main(["run", "--home", str(tmp_path), "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0",
                 "--bootstrap", "/ip4/10.0.0.1/tcp/4601/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"])
    assert code == 0
    assert calls == [(tmp_path, {"api": {"listen": "127.0.0.1:0"},
                                 "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"],
                                         "bootstrap": ["/ip4/10.0.0.1/tcp/4601/p2p/"
                                                       "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"]}})]


def test_run_refuses_an_uninitialised_home_and_bad_overrides(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--home", str(tmp_path / "nothing")]) == 1
    assert "meshd init" in capsys.readouterr().err
    init_home(tmp_path / "h")
    assert main(["run", "--home", str(tmp_path / "h"), "--listen", "0.0.0.0:4601"]) == 1
    assert "multiaddr" in capsys.readouterr().err


# ----------------------------------------------------------------- client commands


async def test_enqueue_status_and_queue_print_readable_text(cli: Harness, tmp_path: Path) -> None:
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(listing2_task()))
    code, out, _ = await cli.run("enqueue", str(task_file))
    assert code == 0
    cid, state = out.split()
    assert state == "available" and cid in cli.node.tasks

    code, out, _ = await cli.run("status", cid)
    assert code == 0 and f"task:     {cid}" in out and "state:    available" in out

    code, out, _ = await cli.run("queue")
    assert code == 0 and "available  1" in out and "total      1" in out


async def test_enqueue_reads_a_list_from_stdin_and_json_flag_prints_raw_answer(cli: Harness) -> None:
    code, out, _ = await cli.run("enqueue", "-", "--json", stdin=json.dumps([listing2_task(1), listing2_task(2)]))
    assert code == 0
    answer = json.loads(out)
    assert [t["cid"] for t in answer["tasks"]] == list(cli.node.tasks)
    code, out, _ = await cli.run("status", answer["tasks"][0]["cid"], "--json")
    assert json.loads(out)["task"] == listing2_task(1)


async def test_api_errors_are_printed_without_traceback(cli: Harness, tmp_path: Path) -> None:
    code, out, err = await cli.run("status", "not-a-cid")
    assert code == 1 and out == "" and err.startswith("error: bad_cid:") and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = await cli.run("enqueue", str(bad))
    assert code == 1 and "not valid JSON" in err
    code, _, err = await cli.run("enqueue", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err


async def test_result_wait_polls_until_completion_and_shows_progress(cli: Harness) -> None:
    cid = (await cli.node.enqueue([listing2_task()]))[0]["cid"]
    cli.node.start(cid)
    async with trio.open_nursery() as nursery:
        async def finish_after_first_poll() -> None:
            await cli.node.polled.wait()
            cli.node.complete(cid, {"sum": 55})

        nursery.start_soon(finish_after_first_poll)
        code, out, err = await cli.run("result", cid, "--wait", "--timeout", "60")
    assert code == 0
    assert '"sum": 55' in out
    assert f"waiting: {cid} assigned" in err and f"waiting: {cid} completed" in err


async def test_result_wait_times_out_with_exit_1(cli: Harness) -> None:
    cid = (await cli.node.enqueue([listing2_task()]))[0]["cid"]
    code, _, err = await cli.run("result", cid, "--wait", "--timeout", "0.2")
    assert code == 1 and "timed out" in err


async def test_result_wait_on_a_failed_task_exits_1(cli: Harness) -> None:
    cid = (await cli.node.enqueue([listing2_task()]))[0]["cid"]
    cli.node.complete(cid, None, ok=False)
    code, _, err = await cli.run("result", cid, "--wait")
    assert code == 1 and "engine exited 1" in err


async def test_result_without_wait_reports_no_results_yet(cli: Harness) -> None:
    cid = (await cli.node.enqueue([listing2_task()]))[0]["cid"]
    code, out, _ = await cli.run("result", cid)
    assert code == 0 and "no results yet" in out


async def test_engine_add_uploads_a_file_a_directory_and_a_tarball(cli: Harness, tmp_path: Path) -> None:
    script = tmp_path / "fib.py"
    script.write_text("print(1)\n")
    code, out, _ = await cli.run("engine", "add", str(script), "--interpreter", "python3")
    assert code == 0 and out.startswith("engine fib: b")

    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "main.py").write_text("x")
    (tree / "lib" / "u.py").write_text("y")
    (tree / "manifest.json").write_text(json.dumps({"executable": "main.py", "protocol": "jsonl"}))
    code, _, _ = await cli.run("engine", "add", str(tree), "--name", "treeish")
    assert code == 0

    tar_path = tmp_path / "packed.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tree / "main.py", arcname="bin/run")
    code, _, _ = await cli.run("engine", "add", str(tar_path))
    assert code == 0

    code, out, _ = await cli.run("engine", "list")
    assert code == 0
    assert "fib" in out and "treeish" in out and "packed" in out
    engines = {e["name"]: e for e in cli.node.engines.values()}
    assert engines["treeish"]["files"] == ["lib/u.py", "main.py"]
    assert engines["packed"]["executable"] == "bin/run"


async def test_engine_add_of_a_multi_file_directory_needs_an_executable(cli: Harness, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("2")
    code, _, err = await cli.run("engine", "add", str(tmp_path))
    assert code == 1 and "--executable" in err


async def test_node_peers_and_tasks_commands(cli: Harness) -> None:
    await cli.node.enqueue([listing2_task()])
    code, out, _ = await cli.run("node")
    assert code == 0 and "peer id:   12D3KooWfake" in out and "/ip4/127.0.0.1/tcp/4601" in out
    code, out, _ = await cli.run("peers")
    assert code == 0 and "12D3KooWother" in out
    code, out, _ = await cli.run("peers", "--json")
    assert json.loads(out)[0]["peer_id"] == "12D3KooWother"
    code, out, _ = await cli.run("tasks", "--state", "available")
    assert code == 0 and "available" in out


async def test_api_flag_overrides_the_home_config(cli: Harness, tmp_path: Path) -> None:
    code, out, _ = await cli.run("queue", "--api", cli.api, "--json")
    assert code == 0 and json.loads(out)["total"] == 0


async def test_token_from_the_home_is_sent_to_a_non_loopback_api(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    home = init_home(tmp_path, api={"listen": "0.0.0.0:7600"})
    options = ApiOptions(listen="0.0.0.0:0", token=home.read_token())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, create_app(FakeNode(), options), options)
        api = f"127.0.0.1:{bound.port}"
        code = await trio.to_thread.run_sync(main, ["queue", "--home", str(tmp_path), "--api", api])
        assert code == 0
        other = tmp_path / "other"
        init_home(other)
        code = await trio.to_thread.run_sync(main, ["queue", "--home", str(other), "--api", api])
        assert code == 1 and "unauthorized" in capsys.readouterr().err
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------- not running / bench


def test_not_running_gives_a_clear_message_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    init_home(tmp_path, api={"listen": f"127.0.0.1:{port}"})
    for argv in (["queue"], ["status", "b"], ["node", "--json"], ["result", "b", "--wait"]):
        assert main([*argv, "--home", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err == f"error: meshd is not running at http://127.0.0.1:{port} (start it with `meshd run`)\n"


def test_not_running_default_address_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No home at all: the client falls back to the default address.
    code = main(["queue", "--home", str(tmp_path / "none"), "--api", f"127.0.0.1:{_free_port()}"])
    assert code == 1 and "start it with `meshd run`" in capsys.readouterr().err


def test_bench_dispatches_to_the_named_module(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("meshd.bench.mesh")
    fake.main = lambda args: seen.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshd.bench.mesh", fake)
    assert main(["bench", "mesh", "--json", "--peers", "5"]) == 0
    assert seen == [["--json", "--peers", "5"]]


def test_bench_missing_module_exits_2_with_a_message(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "meshd.bench.ipfs", None)
    assert main(["bench", "ipfs"]) == 2
    assert "not available" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nonsense"])
    assert exc.value.code == 2
