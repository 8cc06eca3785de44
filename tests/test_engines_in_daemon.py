"""Engines through a real daemon: Docker images as content-addressed engines,
authorization, broken engine blocks, and native engines that fork.

Docker tests need the project's dockerd (``tests/_docker_env.py``) and skip
with its reason when there is none.  Every wait is on a condition.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engines.manifest import load_manifest, public_key_bytes, sign_manifest
from lattice import unixfs
from lattice.cid import RAW, CID
from lattice.diskstore import DiskBlockStore
from meshd.p2p.identity import peer_id_from_public_key

from ._daemons import Daemon, wait_for
from ._docker_env import docker_client, docker_host, require_docker_host  # noqa: F401 - fixtures


def _with_docker(d: Daemon, host: str) -> Daemon:
    cfg = d.home / "config.toml"
    text, n = re.subn(r'(\[docker\]\nhost = )""', f'\\1"{host}"', cfg.read_text())
    assert n == 1, "config.toml has no [docker] host line"
    cfg.write_text(text)
    return d


def _docker_daemon(daemon_factory: Any, name: str = "node") -> Daemon:
    return _with_docker(daemon_factory(name), require_docker_host()).start()


def _add_docker(d: Daemon, image: str, *extra: str) -> dict[str, Any]:
    r = d.cli("engine", "add-docker", image, "--json", "--docker-host", require_docker_host(), *extra, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _docker_task(engine: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"input": {"value": value},
            "taskDefinition": {"runner": {"type": "docker-json-runner", "engine": {"/": engine}}}, **extra}


def _enqueue(d: Daemon, task: dict[str, Any]) -> str:
    r = d.post("/v1/tasks", task)
    assert r.status_code == 201, r.text
    return r.json()["cid"]


def _output(d: Daemon, task_cid: str) -> Any:
    d.wait_state(task_cid, "completed", timeout=60)
    return d.get(f"/v1/results/{task_cid}").json()["results"][0]["output"]


def _failure(d: Daemon, task_cid: str) -> str:
    return d.wait_state(task_cid, "failed", timeout=60)["reason"]


def _policy(d: Daemon) -> dict[str, Any]:
    return d.get("/v1/engines/policy").json()


@pytest.fixture
def fresh_image(docker_client: Any) -> Any:
    """An image no node has run yet (meshd/wordcount:1 plus a unique label); removed afterwards."""
    tag = f"meshd/wordcount-{uuid.uuid4().hex[:8]}:1"
    dockerfile = f"FROM meshd/wordcount:1\nLABEL org.meshd.test={tag}\n".encode()
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    yield tag, image.id
    try:
        docker_client.images.remove(image.id, force=True)
    except Exception:  # noqa: BLE001 - already removed by the test
        pass


def test_docker_engine_added_with_add_docker_is_loaded_from_blocks_and_runs_cold_and_warm(
        daemon_factory: Any, docker_client: Any, fresh_image: Any) -> None:
    tag, image_id = fresh_image
    d = _docker_daemon(daemon_factory)
    cold = _add_docker(d, tag)
    warm = _add_docker(d, tag, "--protocol", "jsonl", "--name", "wc-warm")
    assert cold["image_id"] == warm["image_id"] == image_id
    assert cold["image_tar"] == warm["image_tar"]  # same image, same content-addressed tarball
    # Drop the image from dockerd: the node must `docker load` it from its blocks.
    docker_client.images.remove(image_id, force=True)

    assert _output(d, _enqueue(d, _docker_task(cold["cid"], {"text": "one two three"})))["words"] == 3
    assert docker_client.images.get(image_id).id == image_id
    for text, words in (("a b c d", 4), ("x", 1)):
        assert _output(d, _enqueue(d, _docker_task(warm["cid"], {"text": text})))["words"] == words

    stats = _policy(d)["docker"]["statistics"]
    assert stats["cold_runs"] == 1
    assert stats["warm_runs"] == 2
    assert stats["warm_starts"] == 1  # the second warm task reused the container
    names = {e.get("name") for e in d.get("/v1/engines").json()["engines"]}
    assert {tag, "wc-warm"} <= names


def test_engine_signed_by_an_untrusted_key_is_refused_and_never_runs_until_trusted(daemon_factory: Any) -> None:
    d = _docker_daemon(daemon_factory)
    engine = _add_docker(d, "meshd/noop:1", "--no-sign")
    assert engine["signature"] is None
    foreign = Ed25519PrivateKey.generate()
    record = sign_manifest(CID.parse_untrusted(engine["cid"]), foreign).encode()[1]
    r = d.post(f"/v1/engines/{engine['cid']}/signatures", {"record": base64.b64encode(record).decode()})
    assert r.status_code == 201, r.text

    reason = _failure(d, _enqueue(d, _docker_task(engine["cid"], {"n": 1}, max_attempts=1)))
    assert reason.startswith("not authorized")
    assert "1 signature(s) by untrusted publishers" in reason
    policy = _policy(d)
    assert policy["host"]["refused"] == 1
    assert policy["host"]["docker"] == 0  # nothing reached the Docker backend
    assert policy["docker"]["statistics"]["cold_runs"] == 0

    peer_id = peer_id_from_public_key(public_key_bytes(foreign))
    r = d.cli("engine", "trust", peer_id, "--json", check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["publisher"] == public_key_bytes(foreign).hex()
    assert public_key_bytes(foreign).hex() in (d.home / "config.toml").read_text()  # survives a restart
    assert _output(d, _enqueue(d, _docker_task(engine["cid"], {"n": 2}, max_attempts=1))) == {"n": 2}


def test_unsigned_engine_runs_once_allow_listed_and_signing_needs_the_manifest(daemon_factory: Any) -> None:
    d = _docker_daemon(daemon_factory)
    engine = _add_docker(d, "meshd/noop:1", "--no-sign", "--name", "noop-unsigned")
    reason = _failure(d, _enqueue(d, _docker_task(engine["cid"], {"n": 1}, max_attempts=1)))
    assert "no signatures offered" in reason

    r = d.cli("engine", "allow", engine["cid"], check=False)
    assert r.returncode == 0, r.stderr
    assert _output(d, _enqueue(d, _docker_task(engine["cid"], {"n": 2}, max_attempts=1))) == {"n": 2}

    unknown = "bafyreihujewmr2f2bwtbcsf75wkuqmkdkblk4c376ykoe5ckeaquefoi7y"
    r = d.cli("engine", "sign", unknown, check=False)
    assert r.returncode == 1 and "engine_not_found" in r.stderr


def test_signing_an_engine_registers_the_node_signature_for_peers(daemon_factory: Any) -> None:
    d = _docker_daemon(daemon_factory)
    engine = _add_docker(d, "meshd/noop:1", "--no-sign", "--name", "noop-to-sign")
    r = d.cli("engine", "sign", engine["cid"], "--json", check=False)
    assert r.returncode == 0, r.stderr
    signed = json.loads(r.stdout)
    assert signed["publisher"] == _policy(d)["publisher"]
    listed = {e["cid"]: e for e in d.get("/v1/engines").json()["engines"]}
    assert listed[engine["cid"]]["signatures"] == [signed["signature"]]
    assert _output(d, _enqueue(d, _docker_task(engine["cid"], [1, 2], max_attempts=1))) == [1, 2]


def _leaves(store: DiskBlockStore, file: CID) -> list[CID]:
    """The raw leaves of a UnixFS file, in order."""
    if file.codec == RAW:
        return [file]
    return [leaf for c in unixfs.links_untrusted(store.get(file)) for leaf in _leaves(store, c)]


def test_engine_with_a_missing_or_corrupt_image_block_fails_clearly(daemon_factory: Any) -> None:
    d = _docker_daemon(daemon_factory)
    missing = _add_docker(d, "meshd/noop:1")
    corrupt = _add_docker(d, "meshd/wordcount:1")
    d.stop()
    db = d.home / "blocks" / "blocks.db"
    with DiskBlockStore.open(db) as store:
        lists = {}
        for engine in (missing, corrupt):
            tar = load_manifest(store, CID.parse_untrusted(engine["cid"])).image.tar
            lists[engine["cid"]] = _leaves(store, tar)
        # The two images share busybox, so pick chunks only one tarball holds.
        chunks = {a["cid"]: next(c for c in lists[a["cid"]] if c not in lists[b["cid"]])
                  for a, b in ((missing, corrupt), (corrupt, missing))}
        store.delete(chunks[missing["cid"]])
    with sqlite3.connect(db) as conn:  # bit rot under the store: same key, other bytes
        n = conn.execute("UPDATE blocks SET data = ? WHERE cid = ?",
                         (b"rotten", chunks[corrupt["cid"]].raw)).rowcount
        assert n == 1
    d.start()

    reason = _failure(d, _enqueue(d, _docker_task(missing["cid"], {"n": 1}, max_attempts=1)))
    assert reason == "engine blocks missing: image tarball of meshd/noop:1 is incomplete (1 block(s))"
    reason = _failure(d, _enqueue(d, _docker_task(corrupt["cid"], {"text": "x"}, max_attempts=1)))
    # The disk store re-hashes on read and reports a rotten block as absent,
    # so the runner treats it as missing (and tries to fetch a good copy).
    assert reason.startswith("engine blocks missing")
    assert _policy(d)["docker"]["statistics"]["cold_runs"] == 0  # neither reached a container


def test_node_without_a_reachable_docker_runs_and_fails_docker_tasks_clearly(daemon_factory: Any,
                                                                            tmp_path: Path) -> None:
    require_docker_host()  # the image to upload comes from the test dockerd
    d = _with_docker(daemon_factory(), f"unix://{tmp_path}/absent.sock").start()
    assert _policy(d)["docker"]["available"] is False
    engine = _add_docker(d, "meshd/noop:1")
    reason = _failure(d, _enqueue(d, _docker_task(engine["cid"], {"n": 1}, max_attempts=1)))
    assert reason == "docker runner unavailable on this node"
    assert "docker_unavailable" in d.log()


def test_image_upload_streams_under_its_own_limit_and_rejects_what_is_not_an_image(daemon_factory: Any) -> None:
    d = daemon_factory()
    cfg = d.home / "config.toml"
    cfg.write_text(cfg.read_text().replace("max_image_mb = 4096", "max_image_mb = 1"))
    d.start()

    def chunks() -> Any:  # no Content-Length: the limit must count the bytes received
        for _ in range(3):
            yield b"\0" * (512 * 1024)

    tar = {"Content-Type": "application/x-tar"}
    r = d.post("/v1/engines/docker?name=big", content=chunks(), headers=tar)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = d.post("/v1/engines/docker?name=junk", content=b"not a tarball", headers=tar)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_image"
    r = d.post("/v1/engines/docker?colour=red", content=b"x", headers=tar)
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]
    assert d.get("/v1/engines/docker").status_code == 405
    assert not list(d.home.glob(".upload-*"))  # spooled tarballs are removed


FORKER = """
import json, subprocess, sys, time
marker = json.load(sys.stdin)["marker"]
for _ in range(2):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
time.sleep(600)
"""


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in (p.info["cmdline"] or []):
            found.append(p)
    return found


def test_an_output_too_big_for_peers_to_fetch_fails_the_task(daemon: Daemon) -> None:
    # 6 MiB: under the engine's 16 MiB stdout limit, over the 4 MiB block a peer can fetch.
    engine = daemon.add_script_engine("big", "import json, sys\njson.dump('x' * (6 << 20), sys.stdout)\n")
    task = {"input": {"value": 1}, "max_attempts": 1,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}
    reason = _failure(daemon, _enqueue(daemon, task))
    assert "peers can fetch at most 4194304" in reason, reason


def test_native_engine_that_forks_children_leaves_no_process_behind_after_timeout(daemon: Daemon) -> None:
    engine = daemon.add_script_engine("forker", FORKER, resources={"timeout_s": 1.0})
    marker = f"meshd-test-{uuid.uuid4().hex}"
    task = {"input": {"value": {"marker": marker}}, "max_attempts": 1,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}
    cid = _enqueue(daemon, task)
    wait_for(lambda: len(_marked(marker)) == 2, timeout=30, what="the engine's two children to start")
    assert "timeout" in _failure(daemon, cid)
    wait_for(lambda: not _marked(marker), timeout=10, what="the engine's children to be killed")


def test_docker_engine_published_on_one_node_runs_on_another_that_never_saw_it(
        daemon_factory: Any, docker_client: Any, fresh_image: Any) -> None:
    tag, image_id = fresh_image
    a = daemon_factory("pub", roles=("manager",))  # publishes and submits, runs nothing
    a.start()
    b = _with_docker(daemon_factory("run", bootstrap=[a.multiaddr], trust=[a.public_hex]), require_docker_host()).start()
    wait_for(lambda: any(p["roles"] for p in b.get("/v1/peers").json()["peers"]), timeout=60, what="B to see A")
    engine = _add_docker(a, tag)
    docker_client.images.remove(image_id, force=True)  # B must fetch the tarball's blocks from A and docker load them
    cid = _enqueue(a, _docker_task(engine["cid"], {"text": "across the mesh"}))
    a.wait_state(cid, "completed", timeout=120)
    res = wait_for(lambda: [r for r in a.get(f"/v1/results/{cid}").json()["results"] if r["output"] is not None],
                   timeout=60, what="the output on A")
    assert res[0]["output"]["words"] == 3 and res[0]["runner"] == b.peer_id
    assert docker_client.images.get(image_id).id == image_id
