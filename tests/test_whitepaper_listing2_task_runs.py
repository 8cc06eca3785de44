"""A task shaped like the whitepaper's Listing 2, with real CIDs, runs on a real daemon.

The task names its Docker engine only by ``metadata.image``; the node
resolves the image to a published engine when the task is enqueued, or
refuses the task then.  The engine receives the task's ``metadata`` (in
``$MESHD_TASK_METADATA``) and its input from the dataset path, and the
output is set at the destination.  A Listing 3 ``result`` (no action) in the
task definition works the same way.  Needs the project's dockerd
(``tests/_docker_env.py``); skips with its reason when there is none.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import pytest

from ._daemons import Daemon
from ._docker_env import docker_client, docker_host, require_docker_host  # noqa: F401 - fixtures

# Prints {"metadata": <$MESHD_TASK_METADATA>, "input": <stdin>}.
_ENGINE = ('FROM meshd/noop:1\n'
           'CMD ["/bin/sh", "-c", "printf \'{\\"metadata\\":%s,\\"input\\":%s}\' '
           '\\"$MESHD_TASK_METADATA\\" \\"$(cat)\\""]\n')


@pytest.fixture
def fib_image(docker_client: Any) -> Any:
    """A fresh image tagged like the whitepaper's, removed afterwards."""
    tag = f"computes/fibonacci-sum-split-{uuid.uuid4().hex[:8]}:latest"
    image, _ = docker_client.images.build(fileobj=io.BytesIO(_ENGINE.encode()), tag=tag, rm=True)
    yield tag
    try:
        docker_client.images.remove(image.id, force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _docker_daemon(daemon_factory: Any) -> Daemon:
    d = daemon_factory("node")
    cfg = d.home / "config.toml"
    text, n = re.subn(r'(\[docker\]\nhost = )""', f'\\1"{require_docker_host()}"', cfg.read_text())
    assert n == 1, "config.toml has no [docker] host line"
    cfg.write_text(text)
    return d.start()


def _dataset(d: Daemon, value: dict[str, Any] | None = None) -> str:
    r = d.post("/v1/datasets", {"value": value} if value else {})
    assert r.status_code == 201, r.text
    return r.json()["cid"]


def _listing2(image: str, split: str, results: str, status: str) -> dict[str, Any]:
    return {
        "input": {"dataset": {"/": split}, "path": "split/input"},
        "taskDefinition": {"runner": {"type": "docker-json-runner", "metadata": {"image": image}}},
        "result": {"action": "set", "destination": {"dataset": {"/": results}, "path": "split/results"}},
        "status": {"/": status},
    }


def test_listing2_task_resolves_its_image_runs_and_sets_its_result(daemon_factory: Any, fib_image: str) -> None:
    d = _docker_daemon(daemon_factory)
    split = _dataset(d, {"split/input": {"numbers": [1, 1, 2, 3, 5]}})
    results = _dataset(d)
    status = _dataset(d)

    # No engine is published for the image yet: refused at enqueue, never queued.
    r = d.post("/v1/tasks", _listing2(fib_image, split, results, status))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unknown_engine"
    assert fib_image in r.json()["error"]["message"]
    assert d.get("/v1/queue").json()["available"] == 0

    add = d.cli("engine", "add-docker", fib_image, "--name", "fib-split", "--json",
                "--docker-host", require_docker_host(), check=False)
    assert add.returncode == 0, add.stderr
    engine = json.loads(add.stdout)["cid"]

    r = d.post("/v1/tasks", _listing2(fib_image, split, results, status))
    assert r.status_code == 201, r.text
    task_cid = r.json()["cid"]
    d.wait_state(task_cid, "completed", timeout=90)
    record = d.get(f"/v1/tasks/{task_cid}").json()["task"]
    assert record["taskDefinition"]["runner"]["engine"] == {"/": engine}  # fixed at enqueue
    assert record["status"] == {"/": status}
    written = d.get(f"/v1/datasets/{results}/split/results").json()["value"]
    assert written == {"metadata": {"image": fib_image}, "input": {"numbers": [1, 1, 2, 3, 5]}}

    # Listing 3's result: {dataset, path} with no action, here in the definition.
    listing3 = {"input": {"dataset": {"/": split}, "path": "split/input"},
                "taskDefinition": {"runner": {"type": "docker-json-runner",
                                              "metadata": {"image": fib_image, "stage": "map"}},
                                   "result": {"dataset": {"/": results}, "path": "map/results"}}}
    r = d.post("/v1/tasks", listing3)
    assert r.status_code == 201, r.text
    d.wait_state(r.json()["cid"], "completed", timeout=90)
    written = d.get(f"/v1/datasets/{results}/map/results").json()["value"]
    assert written["metadata"] == {"image": fib_image, "stage": "map"}
