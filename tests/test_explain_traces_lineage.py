"""``meshd explain`` / ``GET /v1/explain/{cid}``: a result's lineage on a real daemon.

One daemon (manager, runner, evaluator) runs a two-stage job, ``first`` then
``second`` (both echo), and a plain echo task.  Explaining the second
stage's task two levels deep must name its engine with the node's own
signature (valid, trusted here), the job stage and rule that made it, its
input (the job dataset at ``first/results``, with the dataset's version) and
the task that wrote that input, which in turn names its own stage and input;
the runner of each attempt; and its result.  The result's output CID, the
job dataset, one of its versions (a delta) and the engine explain too; a
plain task says no rule made it; a bad or unknown CID is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.client import Client
from meshd.errors import ClientError

from ._daemons import Daemon, echo_task, wait_for


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, str]]]:
    d = Daemon(tmp_path_factory.mktemp("explain") / "node", roles=("manager", "runner", "evaluator")).init().start()
    try:
        echo = d.add_echo_engine()
        plain = d.post("/v1/tasks", echo_task(echo, 7, name="plain")).json()["cid"]
        job = d.post("/v1/jobs", {"name": "chain", "input": {"value": 5},
                                  "stages": [{"name": "first", "engine": {"/": echo}},
                                             {"name": "second", "engine": {"/": echo}}]})
        assert job.status_code == 201, job.text
        job_id = job.json()["job"]
        wait_for(lambda: d.get(f"/v1/jobs/{job_id}").json()["state"] == "completed", timeout=60, what="the job")
        d.wait_state(plain, "completed")
        yield d, {"echo": echo, "plain": plain, "job": job_id}
    finally:
        d.stop()


def _stage_task(client: Client, stage: str) -> dict:
    tasks = client._call("GET", "/v1/tasks?limit=100")["tasks"]
    found = [x for t in tasks if (x := client.explain(t["cid"], depth=0))["made_by"] and x["made_by"]["stage"] == stage]
    assert len(found) == 1, found
    return found[0]


def test_a_second_stage_task_explains_back_to_the_job_input(ran: tuple[Daemon, dict[str, str]]) -> None:
    d, ids = ran
    with Client(d.url, d.token("read")) as client:
        second = client.explain(_stage_task(client, "second")["cid"], depth=2)
        assert second["kind"] == "task" and second["state"] == "completed"
        assert second["made_by"]["job"] == ids["job"] and second["made_by"]["job_name"] == "chain"
        assert "first/results" in second["made_by"]["rule"]  # the stage's default condition
        engine = second["engine"]
        assert engine["cid"] == ids["echo"] and engine["name"] == "echo"
        (sig,) = engine["signatures"]
        assert sig["publisher"] == d.public_hex and sig["peer_id"] == d.peer_id
        assert sig["valid"] is True and sig["trusted_here"] is True
        inp = second["input"]
        assert inp["dataset"] == ids["job"] and inp["path"] == "first/results" and inp["version"]
        assert second["destination"]["path"] == "second/results"
        assert [a["runner"] for a in second["attempts"]] == [d.peer_id] and second["attempts"][0]["ok"] is True
        (result,) = second["results"]
        assert result["runner"] == d.peer_id
        # Depth 2: the first stage's task, and its own input (the job's input, written by no task).
        (first,) = inp["writers"]["tasks"]
        assert inp["writers"]["total"] == 1
        assert first["made_by"]["stage"] == "first" and first["destination"]["path"] == "first/results"
        assert first["input"]["path"] == "first/input" and first["input"]["writers"] == {"total": 0, "tasks": []}

        # The result's output CID leads back to the task.
        out = client.explain(result["output"])
        assert out["kind"] == "result" and out["total"] >= 1 and {r["runner"] for r in out["results"]} == {d.peer_id}
        assert second["cid"] in {r["task"]["cid"] for r in out["results"]}  # echo outputs are equal: maybe others too
        # The job dataset, one of its versions, and the engine.
        ds = client.explain(ids["job"])
        assert ds["kind"] == "dataset" and ds["job"]["name"] == "chain" and ds["job"]["stages"] == ["first", "second"]
        assert {t["cid"] for t in ds["writers"]["tasks"]} == {first["cid"], second["cid"]}
        version = client.explain(ds["version"][0])
        assert version["kind"] == "dataset_version" and version["dataset"] == ids["job"]
        assert version["author"] == d.peer_id and version["paths"]
        assert client.explain(ids["echo"])["kind"] == "engine"

        plain = client.explain(ids["plain"])
        assert plain["made_by"] is None and plain["input"] == {"value": 7} and plain["name"] == "plain"

        with pytest.raises(ClientError, match="bad_cid"):
            client.explain("not-a-cid")
        with pytest.raises(ClientError, match="not_found"):
            client.explain("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        with pytest.raises(ClientError):
            client.explain(ids["plain"], depth=6)


def test_the_cli_prints_the_lineage_as_a_tree(ran: tuple[Daemon, dict[str, str]]) -> None:
    d, ids = ran
    with Client(d.url, d.token("read")) as client:
        second = _stage_task(client, "second")["cid"]
    run = d.cli("explain", second, "--depth", "2", "--home", str(d.home))
    text = run.stdout
    assert text.startswith(f"task {second}") and "completed" in text.splitlines()[0]
    assert f"made by job chain ({ids['job']}) stage second" in text
    assert f"made by job chain ({ids['job']}) stage first" in text  # the writer, one level down
    assert f"signed by {d.peer_id}" in text and "valid, trusted here" in text
    assert "path 'first/results'" in text and "path 'first/input'" in text
    assert f"attempt 1 on {d.peer_id}" in text
    answer = json.loads(d.cli("explain", ids["plain"], "--json", "--home", str(d.home)).stdout)
    assert answer["cid"] == ids["plain"]
    bad = subprocess.run([sys.executable, "-m", "meshd.cli", "explain", "nope", "--home", str(d.home)],
                         capture_output=True, text=True, env=d.env, timeout=60)
    assert bad.returncode == 1 and "bad_cid" in bad.stderr
