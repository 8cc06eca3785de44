"""What the docs promise, checked against a real daemon and the CLI (issue 17, "Docs contradict the code").

* docs/api.md's enqueue examples run as written (bash, ``curl``, ``jq``),
  with ``~/.meshd`` the daemon's home, and the task they enqueue completes;
  so does the README's "Using the CLI" block (``meshd`` from this checkout's
  environment; the daemon the block before it starts is the fixture's);
* ``GET /v1/datasets/{cid}`` reads the whole value; ``{"tasks": []}`` is 400
  ``no_tasks``; error messages name no internal model;
* ``meshd peers`` shows roles; ``meshd engine list`` has no always-empty column;
* ``meshd run --api`` records ``<home>/api`` and ``--home`` clients use it;
  ``meshd --version``; ``meshd dataset``; the ``compare`` extra installs
  what ``scripts/compare_peers.py`` imports beyond meshd;
* every ``tests/...py`` a module docstring cites exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.api import address
from meshd.cli import format as fmt
from meshd.errors import BadAddressFile

from ._daemons import REPO, Daemon, free_port, wait_for

API_MD = REPO / "docs" / "api.md"


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i:text.index(end, i)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    user_home = tmp_path_factory.mktemp("user")
    d = Daemon(user_home / ".meshd").init().start()
    try:
        yield d
    finally:
        d.stop()


def test_cited_test_files_exist() -> None:
    cited = set()
    for package in ("lattice", "meshd", "engines", "conditions"):
        for path in (REPO / package).rglob("*.py"):
            cited |= {(path, m) for m in re.findall(r"tests/\w+\.py", path.read_text())}
    missing = [f"{p.relative_to(REPO)} cites {t}" for p, t in sorted(cited) if not (REPO / t).exists()]
    assert missing == []


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_api_md_enqueue_examples_run_as_written(daemon: Daemon) -> None:
    text = API_MD.read_text()
    setup = next(b for b in _sh_blocks(text) if "mcurl()" in b)
    examples = _sh_blocks(_section(text, "### `POST /v1/tasks` — enqueue", "### `GET /v1/tasks/{cid}`"))
    assert len(examples) == 3 and all("..." not in b and "…" not in b for b in examples)
    # The set-up as written, pointed at this daemon's port; blocks separated by a marker line.
    script = "set -euo pipefail\n" + setup + f"API={daemon.url}\n" + "echo @@@\n".join(examples)
    env = dict(os.environ, HOME=str(daemon.home.parent))
    # Its runner serves (roles start after the API answers): the first
    # example is then claimed at submit, as api.md shows.
    wait_for(lambda: "event=node_ready" in daemon.log_path.read_text(), timeout=60, what="the daemon's roles to start")
    run = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    outputs = run.stdout.split("@@@\n")
    assert outputs[0].strip() == ""  # the first block only sets ENGINE and DATASET
    one = json.loads(outputs[1])
    bulk = json.loads(outputs[2])
    assert one["state"] == "assigned" and len(bulk["tasks"]) == 2
    for cid in [one["cid"]] + [t["cid"] for t in bulk["tasks"]]:
        daemon.wait_state(cid, "completed", timeout=60)
    dataset = daemon.get(f"/v1/tasks/{one['cid']}").json()["task"]["input"]["dataset"]["/"]
    r = daemon.get(f"/v1/datasets/{dataset}/split/results")
    assert r.status_code == 200 and r.json()["value"] == [{"start": 0, "stop": 5}, {"start": 5, "stop": 10}]
    whole = daemon.get(f"/v1/datasets/{dataset}")
    assert whole.status_code == 200, whole.text
    assert whole.json()["value"] == {"split": {"input": {"n": 10, "chunks": 2},
                                               "results": [{"start": 0, "stop": 5}, {"start": 5, "stop": 10}]}}


@pytest.mark.skipif(not shutil.which("jq"), reason="needs jq")
def test_readme_cli_example_runs_as_written(daemon: Daemon, tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    block = _sh_blocks(_section(text, "In another terminal:", "Other commands:"))[0]
    (tmp_path / "engines").symlink_to(REPO / "engines")  # the block's paths are the checkout's
    env = dict(os.environ, HOME=str(daemon.home.parent),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MESHD_HOME", None)
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"engine echo: \S+", lines[0]), lines
    assert lines[-3:] == ["{", '  "hello": "mesh"', "}"], lines  # the output, after the result line


def test_the_compare_extra_installs_what_compare_peers_imports() -> None:
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["compare"]
    wanted = {re.split(r"[\[<>=]", req)[0] for req in extra}
    source = (REPO / "scripts" / "compare_peers.py").read_text()
    imported = set(re.findall(r"^\s*(?:from|import) (\w+)", source, flags=re.M))
    third_party = imported - set(sys.stdlib_module_names) - {"meshd", "__future__"}
    assert third_party == wanted == {"dask", "ray"}
    assert "pip install -e '.[compare]'" in source


def test_an_empty_dataset_reads_as_an_empty_object(daemon: Daemon) -> None:
    cid = daemon.post("/v1/datasets", {}).json()["cid"]
    r = daemon.get(f"/v1/datasets/{cid}")
    assert r.status_code == 200 and r.json()["value"] == {} and r.json()["path"] == ""


def test_an_empty_task_list_is_no_tasks(daemon: Daemon) -> None:
    r = daemon.post("/v1/tasks", {"tasks": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_tasks"


@pytest.mark.parametrize("body", [[], "x", {"tasks": [1]}, {"tasks": "no"}])
def test_errors_name_no_internal_model(daemon: Daemon, body: object) -> None:
    r = daemon.post("/v1/tasks", body)
    assert r.status_code == 422, r.text
    text = r.text
    assert "instance of" not in text and "TaskIn" not in text and "BulkTasksIn" not in text


def test_engine_list_shows_type_and_protocol(daemon: Daemon) -> None:
    daemon.add_echo_engine()
    out = daemon.cli("engine", "list", "--home", str(daemon.home)).stdout
    header = out.splitlines()[0].split()
    assert header == ["name", "cid", "type", "protocol"]
    echo = next(line.split() for line in out.splitlines() if line.startswith("echo "))
    assert echo[2] == "bin-json-runner" and echo[3] == "json"


def test_peers_show_roles() -> None:
    answer = {"peers": [{"peer_id": "12D3KooWabc", "roles": ["manager", "runner"], "connected": True,
                         "last_seen_s": 1.25, "addresses": ["/ip4/10.0.0.2/tcp/4601"]}]}
    lines = fmt.format_peers(answer).splitlines()
    assert lines[0].split() == ["peer", "roles", "connected", "seen", "addresses"]
    assert lines[1].split() == ["12D3KooWabc", "manager,runner", "yes", "1.2s", "ago", "/ip4/10.0.0.2/tcp/4601"]


def test_version() -> None:
    from meshd import __version__

    run = subprocess.run([sys.executable, "-m", "meshd.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"meshd {__version__}"


def test_dataset_command(daemon: Daemon) -> None:
    home = ["--home", str(daemon.home)]
    cid = daemon.cli("dataset", "create", "--value", '{"a/b": 1}', *home).stdout.strip()
    assert cid.startswith("bafy")
    daemon.cli("dataset", "set", cid, "a/c", '"two"', *home)
    daemon.cli("dataset", "append", cid, "list", "3", *home)
    daemon.cli("dataset", "append", cid, "list", "4", *home)
    assert json.loads(daemon.cli("dataset", "get", cid, "a/c", *home).stdout) == "two"
    assert json.loads(daemon.cli("dataset", "get", cid, *home).stdout) == {"a": {"b": 1, "c": "two"}, "list": [3, 4]}
    bad = daemon.cli("dataset", "set", cid, "x", "not json", *home, check=False)
    assert bad.returncode == 1 and "not valid JSON" in bad.stderr


def test_run_records_its_api_address_for_home_clients(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "node").init()
    port = free_port()
    assert port != d.port
    log = open(d.log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "meshd.cli", "run", "--home", str(d.home),
                             "--api", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, env=d.env)
    try:
        recorded = wait_for(lambda: address.read_live(d.home), timeout=60, what="<home>/api")
        assert recorded == address.ApiAddress(f"http://127.0.0.1:{port}", proc.pid)
        # A client given only --home reaches the daemon on the port the config does not name.
        out = d.cli("queue", "--home", str(d.home), "--json")
        assert json.loads(out.stdout)["total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not (d.home / address.ADDRESS_FILE).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    # A record left by a dead daemon is ignored: the client falls back to the config's address.
    address.write(d.home, address.ApiAddress(f"http://127.0.0.1:{port}", proc.pid))
    assert address.read_live(d.home) is None
    gone = d.cli("queue", "--home", str(d.home), check=False)
    assert gone.returncode == 1 and f":{d.port}" in gone.stderr


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"t": "meshd/api-address", "v": 2, "url": "http://a:1", "pid": 1}',
                                  b'{"t": "meshd/api-address", "v": 1, "url": "ftp://a:1", "pid": 1}',
                                  b'{"t": "meshd/api-address", "v": 1, "url": "http://a:1", "pid": -1}',
                                  b'{"t": "meshd/api-address", "v": 1, "url": "http://a:1", "pid": true}',
                                  b'{"t": "meshd/api-address", "v": 1, "url": "http://a:99999", "pid": 1}',
                                  b"\xff" * 5000])
def test_bad_address_records_are_refused(data: bytes) -> None:
    with pytest.raises(BadAddressFile):
        address.decode_untrusted(data)
