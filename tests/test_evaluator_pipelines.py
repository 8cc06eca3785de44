"""Pipelines run end to end on a real daemon: split → map → reduce chained by evaluator rules.

One ``meshd run`` process with the manager, runner and evaluator roles; the
example engines are published by name, the example pipeline files are
submitted through the API and the CLI, and every wait is on a condition.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.examples import EXAMPLES_DIR
from meshd.client import Client as ApiClient
from meshd.errors import ClientError
from meshd.roles.jobs import publish_examples

from ._daemons import Daemon, wait_for

PIPELINES = Path(EXAMPLES_DIR) / "pipelines"


def _example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline(name: str) -> dict[str, Any]:
    return json.loads((PIPELINES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, ApiClient]]:
    daemon = Daemon(tmp_path_factory.mktemp("jobs") / "node", roles=("manager", "runner", "evaluator")).init()
    client = ApiClient(daemon.url, daemon.token())
    try:
        daemon.start()
        publish_examples(client)
        yield daemon, client
    finally:
        client.close()
        daemon.stop()


def finished(client: ApiClient, job: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = client.request("GET", f"/v1/jobs/{job}")
        return status if status["state"] in ("completed", "failed") else None

    return wait_for(done, timeout=timeout, what=f"job {job} to finish")


def progress(status: dict[str, Any]) -> list[tuple[str, int, int | None]]:
    return [(s["name"], s["done"], s["total"]) for s in status["stages"]]


def test_fibsum_pipeline_sums_the_first_n_fibonacci_numbers(node: tuple[Daemon, ApiClient]) -> None:
    daemon, client = node
    body = pipeline("fibsum")
    n, chunks = body["input"]["n"], body["input"]["chunks"]
    answer = client.request("POST", "/v1/jobs", body)
    assert answer["evaluator"] is True and answer["stages"] == ["split", "map", "reduce"]
    assert len(answer["tasks"]) == 1  # the split task, enqueued by the submit itself

    status = finished(client, answer["job"])

    a, b, expected = 0, 1, 0
    for _ in range(n):
        expected, a, b = expected + a, b, a + b
    assert status["state"] == "completed", status
    assert status["result"] == {"total": str(expected)}
    assert progress(status) == [("split", 1, 1), ("map", chunks, chunks), ("reduce", 1, 1)]
    assert status["errors"] == []
    listed = client.request("GET", "/v1/jobs")["jobs"]
    assert {"job": answer["job"], "name": "fibsum", "state": "completed"}.items() <= \
        next(j for j in listed if j["job"] == answer["job"]).items()
    # The job is a dataset: its pieces are readable through the dataset API too.
    split = daemon.get(f"/v1/datasets/{answer['job']}/split/results").json()["value"]
    assert split == _example("fibsum").split(body["input"])


def test_wordcount_pipeline_counts_words_and_job_watch_shows_stages(node: tuple[Daemon, ApiClient]) -> None:
    daemon, _ = node
    path = PIPELINES / "wordcount.json"
    text, chunks = pipeline("wordcount")["input"]["text"], pipeline("wordcount")["input"]["chunks"]
    submitted = daemon.cli("job", "submit", str(path))
    job = submitted.stdout.strip()
    assert re.fullmatch(r"bafy[a-z0-9]+", job), submitted

    watched = daemon.cli("job", "watch", job, "--timeout", "120")

    expected = Counter(re.findall(r"[a-z0-9']+", text.lower()))
    assert json.loads(watched.stdout) == {"counts": dict(expected)}
    pieces = len(_example("wordcount").split({"text": text, "chunks": chunks}))
    lines = watched.stderr.strip().splitlines()
    assert lines[-1].startswith(f"split 1/1  map {pieces}/{pieces}  reduce 1/1  [completed]"), watched.stderr
    assert all(line.startswith("split ") for line in lines)
    as_json = json.loads(daemon.cli("job", "watch", job, "--json").stdout)
    assert as_json["state"] == "completed" and as_json["result"] == {"counts": dict(expected)}


def test_malformed_condition_is_refused_at_submit_with_its_position(node: tuple[Daemon, ApiClient]) -> None:
    daemon, client = node
    before = client.request("GET", "/v1/jobs")["jobs"]
    body = pipeline("fibsum")
    body["stages"][1]["condition"] = "exist(dataset(hpcp('$JOB/split/results')) && "

    r = daemon.post("/v1/jobs", body)

    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_condition"
    assert "stage 'map'" in error["message"] and "line 1, column" in error["message"]
    assert client.request("GET", "/v1/jobs")["jobs"] == before  # nothing was created


@pytest.mark.parametrize(("change", "code"), [
    (lambda b: b["stages"][0].update(engine_name="no-such-engine"), "unknown_engine"),
    (lambda b: b["stages"][2].update(action="fold"), "bad_pipeline"),
    (lambda b: b["stages"].insert(0, dict(b["stages"][2], name="first")), "bad_pipeline"),
    (lambda b: b.pop("input"), "bad_pipeline"),
    (lambda b: b["stages"][1].update(source="../elsewhere"), "bad_pipeline"),
])
def test_invalid_pipelines_are_refused_with_a_code(node: tuple[Daemon, ApiClient], change: Any, code: str) -> None:
    daemon, _ = node
    body = pipeline("fibsum")
    change(body)
    r = daemon.post("/v1/jobs", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


def test_unknown_job_is_404_and_the_cli_says_so(node: tuple[Daemon, ApiClient]) -> None:
    daemon, client = node
    unknown = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with pytest.raises(ClientError, match="job_not_found"):
        client.request("GET", f"/v1/jobs/{unknown}")
    r = daemon.cli("job", "watch", unknown, check=False)
    assert r.returncode == 1 and "job_not_found" in r.stderr
    assert daemon.get("/v1/evaluator").json()["enabled"] is True
