"""The HTTP API contract, against a real ``meshd run`` process."""

from __future__ import annotations

import json

import httpx
import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

HANG = "import time\nwhile True: time.sleep(1)\n"
GARBAGE = "import sys\nsys.stdin.read()\nprint('this is not json')\n"
FAILS = "import sys\nsys.stdin.read()\nsys.stderr.write('boom on stderr')\nsys.exit(3)\n"


def test_task_lifecycle_through_the_api(daemon: Daemon) -> None:
    engine = daemon.add_echo_engine()
    assert engine.startswith("bafy")
    r = daemon.post("/v1/tasks", echo_task(engine, {"x": 1}))
    assert r.status_code == 201
    cid = r.json()["cid"]
    assert r.json()["state"] in ("available", "assigned", "completed")
    # Idempotent: the same task gives the same CID.
    assert daemon.post("/v1/tasks", echo_task(engine, {"x": 1})).json()["cid"] == cid
    st = daemon.wait_state(cid, "completed")
    assert st["attempts"][0]["ok"] is True and st["result"]["/"].startswith("bafy")
    res = daemon.get(f"/v1/results/{cid}").json()
    assert res["results"][0]["output"] == {"x": 1}
    assert res["results"][0]["output_cid"].startswith("bafy")
    q = daemon.get("/v1/queue").json()
    assert q["completed"] == 1 and q["total"] == 1
    listed = daemon.get("/v1/tasks", params={"state": "completed", "limit": 10}).json()
    assert [t["cid"] for t in listed["tasks"]] == [cid]


def test_bulk_enqueue_returns_one_entry_per_task(daemon: Daemon) -> None:
    engine = daemon.add_echo_engine()
    r = daemon.post("/v1/tasks", {"tasks": [echo_task(engine, i) for i in range(20)]})
    assert r.status_code == 201
    cids = [t["cid"] for t in r.json()["tasks"]]
    assert len(set(cids)) == 20
    wait_for(lambda: daemon.get("/v1/queue").json()["completed"] == 20, timeout=60, what="20 completions")
    page1 = daemon.get("/v1/tasks", params={"limit": 7}).json()
    page2 = daemon.get("/v1/tasks", params={"limit": 7, "after": page1["next"]}).json()
    assert len(page1["tasks"]) == 7 and len(page2["tasks"]) == 7
    assert not {t["cid"] for t in page1["tasks"]} & {t["cid"] for t in page2["tasks"]}


def test_datasets_create_write_and_read(daemon: Daemon) -> None:
    r = daemon.post("/v1/datasets", {"name": "fib", "value": {"split/input": {"n": 10}}})
    assert r.status_code in (200, 201)
    ds = r.json()["cid"]
    assert daemon.get(f"/v1/datasets/{ds}/split/input").json()["value"] == {"n": 10}
    r = daemon.put(f"/v1/datasets/{ds}/map/results", {"value": 5, "action": "append"})
    assert r.status_code == 200, r.text
    daemon.put(f"/v1/datasets/{ds}/map/results", {"value": 3, "action": "append"})
    assert daemon.get(f"/v1/datasets/{ds}/map/results").json()["value"] == [3, 5]
    assert daemon.get(f"/v1/datasets/{ds}/nothing/here").status_code == 404


def test_task_reads_its_input_from_a_dataset_and_writes_its_result_to_one(daemon: Daemon) -> None:
    engine = daemon.add_echo_engine()
    ds = daemon.post("/v1/datasets", {"name": "io", "value": {"in": [1, 2, 3]}}).json()["cid"]
    task = {"input": {"dataset": {"/": ds}, "path": "in"},
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}},
            "result": {"action": "set", "destination": {"dataset": {"/": ds}, "path": "out"}}}
    cid = daemon.post("/v1/tasks", task).json()["cid"]
    daemon.wait_state(cid, "completed")
    assert daemon.get(f"/v1/datasets/{ds}/out").json()["value"] == [1, 2, 3]


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "malformed_json"),
        (b'{"input": {"value": 1}}', None, None),
        (json.dumps(echo_task("bafyreigbjrsondbb6jiqe2js6thni3fhren6uf5c6d6mjv34nwy4omju4u", 1)).encode(), 400, "unknown_engine"),
        (json.dumps(echo_task("bafyNOTACID", 1)).encode(), 400, "bad_cid"),
        (json.dumps(echo_task("zdpuGARBAGE0", 1)).encode(), 400, "bad_cid"),
    ],
)
def test_bad_requests_get_clear_4xx_errors(daemon: Daemon, body: bytes, status, code) -> None:
    r = httpx.post(daemon.url + "/v1/tasks", content=body, timeout=10, headers=daemon.headers(json_body=True))
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["message"]
    if status is not None:
        assert r.status_code == status and err["code"] == code
    assert daemon.get("/v1/health").status_code == 200


def test_unknown_task_and_garbage_cid_in_the_path(daemon: Daemon) -> None:
    assert daemon.get("/v1/tasks/bafyreigbjrsondbb6jiqe2js6thni3fhren6uf5c6d6mjv34nwy4omju4u").status_code == 404
    r = daemon.get("/v1/tasks/not-a-cid")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_cid"


def test_oversized_body_gets_413_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    huge = b'{"tasks": [' + b"1," * (5 * 1024 * 1024) + b"1]}"
    r = httpx.post(daemon.url + "/v1/tasks", content=huge, timeout=30, headers=daemon.headers(json_body=True))
    assert r.status_code == 413
    assert r.json()["error"]["code"]
    assert daemon.get("/v1/health").status_code == 200


def test_hanging_garbage_and_failing_engines_end_as_failed_tasks(daemon: Daemon) -> None:
    hang = daemon.add_script_engine("hang", HANG, resources={"timeout_s": 1.0})
    garbage = daemon.add_script_engine("garbage", GARBAGE)
    fails = daemon.add_script_engine("fails", FAILS)
    cids = {}
    for name, engine in (("hang", hang), ("garbage", garbage), ("fails", fails)):
        t = echo_task(engine, name, max_attempts=2)
        cids[name] = daemon.post("/v1/tasks", t).json()["cid"]
    for name, cid in cids.items():
        st = daemon.wait_state(cid, "failed", timeout=90)
        assert len(st["attempts"]) == 2, st
        assert st["reason"]
        assert all(a["ok"] is False for a in st["attempts"])
    assert "timeout" in daemon.get(f"/v1/tasks/{cids['hang']}").json()["reason"].lower()
    assert "json" in daemon.get(f"/v1/tasks/{cids['garbage']}").json()["reason"].lower()
    fails_st = daemon.get(f"/v1/tasks/{cids['fails']}").json()
    assert "boom on stderr" in fails_st["attempts"][0]["stderr"]
    assert daemon.get("/v1/health").status_code == 200
    # And a good task still runs afterwards.
    echo = daemon.add_echo_engine()
    ok = daemon.post("/v1/tasks", echo_task(echo, "after")).json()["cid"]
    daemon.wait_state(ok, "completed")


def test_openapi_schema_lists_the_v1_routes(daemon: Daemon) -> None:
    schema = daemon.get("/openapi.json").json()
    for path in ("/v1/tasks", "/v1/tasks/{cid}", "/v1/results/{task_cid}", "/v1/queue", "/v1/node", "/v1/engines"):
        assert path in schema["paths"], path
    node = daemon.get("/v1/node").json()
    assert node["peer_id"].startswith("12D3KooW")
    assert {"os", "arch", "cpus", "memory"} <= set(node["inventory"])


def test_a_second_daemon_on_the_same_home_is_refused(daemon: Daemon) -> None:
    out = daemon.cli("run", "--home", str(daemon.home), "--api", "127.0.0.1:0", check=False)
    assert out.returncode != 0
    assert "another meshd is running" in (out.stderr + out.stdout)
