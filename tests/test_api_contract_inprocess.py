"""The /v1 HTTP contract: happy paths, the one error shape, limits and auth.

Most tests drive the ASGI app in process through ``httpx.ASGITransport``;
``test_real_server_*`` start Hypercorn on port 0 and talk TCP.  The node is
:class:`FakeNode`, an in-memory implementation of ``NodeService`` (no patching).
Clients send the admin token and ``Content-Type: application/json``, as the
CLI does; the gate itself (Host, Origin, scopes, content type) is tested in
``test_api_refuses_web_pages.py``.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice.cid import CID
from lattice.codec import cid_of
from lattice.task import task_from_json_untrusted
from meshd.api.app import NodeService, create_app
from meshd.api.server import BoundAddress, serve
from meshd.config import ApiOptions
from meshd.errors import BadRequest, NotFound

TOKEN = "t" * 32  # admin
SUBMIT_TOKEN = "s" * 32
READ_TOKEN = "r" * 32
BASE_URL = "http://127.0.0.1:7600"  # a Host the API answers to (loopback, the port the request came in on)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def api_options(**kw: Any) -> ApiOptions:
    """Loopback options with all three tokens; ``kw`` overrides."""
    base: dict[str, Any] = {"listen": "127.0.0.1:0", "max_body_bytes": 4096, "token": TOKEN,
                            "submit_token": SUBMIT_TOKEN, "read_token": READ_TOKEN}
    return ApiOptions(**{**base, **kw})
DATASET = str(cid_of({"genesis": "fixture"}))
ENGINE = str(cid_of({"engine": "fixture"}))


def listing2_task(n: int = 0, dataset: str = DATASET) -> dict[str, Any]:
    """The whitepaper's Listing 2 task, with real CIDs."""
    return {
        "input": {"dataset": {"/": dataset}, "path": f"split/input/{n}"},
        "taskDefinition": {
            "runner": {"type": "docker-json-runner", "metadata": {"image": "computes/fibonacci-sum-split:latest"}},
        },
        "result": {"action": "set", "destination": {"dataset": {"/": dataset}, "path": "split/results"}},
    }


class FakeNode:
    """An in-memory ``NodeService``; ``fail`` makes every call raise RuntimeError."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.result_log: dict[str, list[dict[str, Any]]] = {}
        self.datasets: dict[str, dict[str, Any]] = {DATASET: {}}
        self.engines: dict[str, dict[str, Any]] = {}
        self.fail = False
        self._counter = itertools.count()

    def _check(self) -> None:
        if self.fail:
            raise RuntimeError("disk on fire")

    def complete(self, cid: str, output: Any, *, ok: bool = True) -> None:
        """What a runner would do: record an attempt and its output."""
        status = self.tasks[cid]
        status["attempts"].append({"runner": "12D3KooWfake", "started": 1.0, "finished": 2.0, "ok": ok,
                                   "error": None if ok else "engine exited 1", "stderr": ""})
        status["state"] = "completed" if ok else "failed"
        if ok:
            out_cid = str(cid_of({"output": output}))
            status["result"] = {"/": out_cid}
            self.result_log.setdefault(cid, []).append(
                {"runner": "12D3KooWfake", "output": output, "output_cid": out_cid, "signature": "00", "at": 2.0})

    def start(self, cid: str) -> None:
        """Mark a task as claimed by a runner."""
        self.tasks[cid]["state"] = "assigned"

    async def enqueue(self, tasks: list[dict]) -> list[dict]:
        self._check()
        out = []
        for task in tasks:
            # The real node's validator: the API schema must never let through
            # less than it accepts, so every valid test task passes both.
            cid = str(task_from_json_untrusted(task)[0])
            self.tasks.setdefault(cid, {"cid": cid, "state": "available", "attempts": [], "result": None,
                                        "task": task})
            out.append({"cid": cid, "state": self.tasks[cid]["state"]})
        return out

    async def task_status(self, cid: str) -> dict:
        self._check()
        if cid not in self.tasks:
            raise NotFound(f"no task {cid}")
        return self.tasks[cid]

    async def list_tasks(self, state: str | None, limit: int, after: str | None) -> dict:
        cids = list(self.tasks)
        if after is not None:
            cids = cids[cids.index(after) + 1:] if after in cids else []
        chosen = [self.tasks[c] for c in cids if state is None or self.tasks[c]["state"] == state]
        page = chosen[:limit]
        return {"tasks": page, "next": page[-1]["cid"] if len(chosen) > limit else None}

    async def results(self, task_cid: str, wait_s: float = 0.0) -> dict:
        if task_cid not in self.tasks:
            raise NotFound(f"no task {task_cid}")
        return {"task": task_cid, "results": self.result_log.get(task_cid, [])}

    async def queue_counts(self) -> dict:
        self._check()
        counts = {s: 0 for s in ("available", "assigned", "completed", "failed")}
        for status in self.tasks.values():
            counts[status["state"]] += 1
        return {**counts, "total": len(self.tasks)}

    async def create_dataset(self, name: str | None, value: dict | None) -> dict:
        cid = str(cid_of({"name": name, "n": next(self._counter)}))
        self.datasets[cid] = dict(value or {})
        return {"cid": cid}

    def _lookup(self, dataset: str) -> dict[str, Any]:
        if dataset not in self.datasets:
            raise NotFound(f"no dataset {dataset}")
        return self.datasets[dataset]

    async def dataset_get(self, dataset: str, path: str) -> dict:
        data = self._lookup(dataset)
        if path and path not in data:
            raise NotFound(f"nothing at {path}")
        return {"dataset": dataset, "path": path, "value": data[path] if path else data}

    async def dataset_put(self, dataset: str, path: str, value: object, action: str) -> dict:
        data = self._lookup(dataset)
        if action == "append":
            if not isinstance(data.setdefault(path, []), list):
                raise BadRequest(f"{path} is not a list", code="not_a_list")
            data[path].append(value)
        else:
            data[path] = value
        return {"dataset": dataset, "path": path, "value": data[path]}

    async def add_engine(self, name: str, files: dict[str, bytes], executable: str, manifest: dict) -> dict:
        assert all(isinstance(v, bytes) for v in files.values())
        cid = str(cid_of({"manifest": manifest, "files": files}))
        self.engines[cid] = {"name": name, "cid": cid, "executable": executable, "files": sorted(files)}
        return {"cid": cid}

    async def list_engines(self) -> dict:
        return {"engines": list(self.engines.values())}

    async def node_info(self) -> dict:
        return {"peer_id": "12D3KooWfake", "version": "0.1.0", "roles": ["manager", "runner"],
                "inventory": {"os": "linux", "arch": "x86_64", "cpus": 2, "memory": 1 << 30},
                "addresses": ["/ip4/127.0.0.1/tcp/4601"], "counters": {"enqueued": len(self.tasks)},
                "peers": [{"peer_id": "12D3KooWother", "addresses": ["/ip4/10.0.0.2/tcp/4601"]}]}

    async def health(self) -> dict:
        return {"ok": True}


def _typed(node: FakeNode) -> NodeService:
    return node  # static check that FakeNode satisfies the protocol


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


def _client(node: FakeNode, options: ApiOptions | None = None,
            headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    app = create_app(_typed(node), options or api_options())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL,
                             headers=AUTH if headers is None else headers)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# ----------------------------------------------------------------- happy paths


async def test_listing2_task_is_enqueued_and_reported(node: FakeNode) -> None:
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json=listing2_task())
        assert r.status_code == 201
        cid = r.json()["cid"]
        assert r.json() == {"cid": cid, "state": "available"}
        # The node got the client's JSON as sent, links and all.
        assert node.tasks[cid]["task"] == listing2_task()
        status = (await c.get(f"/v1/tasks/{cid}")).json()
        assert status["state"] == "available" and status["attempts"] == [] and status["result"] is None


async def test_bulk_enqueue_returns_one_entry_per_task_in_order(node: FakeNode) -> None:
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json={"tasks": [listing2_task(i) for i in range(3)]})
    assert r.status_code == 201
    cids = [t["cid"] for t in r.json()["tasks"]]
    assert cids == list(node.tasks)


async def test_inline_value_input_and_engine_link_are_accepted(node: FakeNode) -> None:
    task = {"input": {"value": [1, 2, 3], "index": 0},
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": ENGINE}}, "conditions": [],
                               "constraints": [{"type": "arch", "value": "x86_64"}]},
            "verify": {"replicas": 3, "quorum": 2}, "constraints": [{"type": "gpu", "value": False}],
            "max_attempts": 5, "name": "fib", "nonce": "1"}
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json=task)
    assert r.status_code == 201, r.text


async def test_linked_task_definition_is_accepted(node: FakeNode) -> None:
    task = {"input": {"dataset": {"/": DATASET}, "path": "a"}, "taskDefinition": {"/": ENGINE}}
    async with _client(node) as c:
        assert (await c.post("/v1/tasks", json=task)).status_code == 201


async def test_base58_links_from_the_whitepaper_are_accepted(node: FakeNode) -> None:
    zdpu = CID.parse_untrusted(DATASET).encode("base58btc")
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json=listing2_task(dataset=zdpu))
        assert r.status_code == 201, r.text
        # Path CIDs may be base58 too; the node receives canonical base32.
        cid = r.json()["cid"]
        r = await c.get(f"/v1/tasks/{CID.parse_untrusted(cid).encode('base58btc')}")
    assert r.status_code == 200 and r.json()["cid"] == cid


async def test_task_list_pages_and_filters_by_state(node: FakeNode) -> None:
    async with _client(node) as c:
        cids = [t["cid"] for t in (await c.post("/v1/tasks", json={"tasks": [listing2_task(i) for i in range(5)]}))
                .json()["tasks"]]
        node.complete(cids[0], 1)
        first = (await c.get("/v1/tasks", params={"limit": 2})).json()
        second = (await c.get("/v1/tasks", params={"limit": 2, "after": first["next"]})).json()
        done = (await c.get("/v1/tasks", params={"state": "completed"})).json()
    assert [t["cid"] for t in first["tasks"] + second["tasks"]] == cids[:4]
    assert [t["cid"] for t in done["tasks"]] == [cids[0]] and done["next"] is None


async def test_results_and_queue_reflect_completed_work(node: FakeNode) -> None:
    async with _client(node) as c:
        cid = (await c.post("/v1/tasks", json=listing2_task())).json()["cid"]
        assert (await c.get(f"/v1/results/{cid}")).json() == {"task": cid, "results": []}
        node.complete(cid, {"sum": 55})
        results = (await c.get(f"/v1/results/{cid}")).json()
        queue = (await c.get("/v1/queue")).json()
    assert results["results"][0]["output"] == {"sum": 55}
    assert queue == {"available": 0, "assigned": 0, "completed": 1, "failed": 0, "total": 1}


async def test_dataset_create_put_get_round_trip(node: FakeNode) -> None:
    async with _client(node) as c:
        r = await c.post("/v1/datasets", json={"name": "fib", "value": {"a": 1}})
        assert r.status_code == 201
        ds = r.json()["cid"]
        assert (await c.put(f"/v1/datasets/{ds}/split/results", json={"value": 5})).status_code == 200
        await c.put(f"/v1/datasets/{ds}/log", json={"value": "x", "action": "append"})
        r = await c.put(f"/v1/datasets/{ds}/log", json={"value": "y", "action": "append"})
        assert r.json()["value"] == ["x", "y"]
        got = (await c.get(f"/v1/datasets/{ds}/split/results")).json()
        root = (await c.get(f"/v1/datasets/{ds}")).json()
    assert got == {"dataset": ds, "path": "split/results", "value": 5}
    assert root["value"]["a"] == 1


async def test_engine_upload_decodes_base64_files(node: FakeNode) -> None:
    body = {"manifest": {"name": "fib", "executable": "fib.py", "interpreter": "python3", "protocol": "json-lines",
                         "resources": {"memory": 64}},
            "files": {"fib.py": base64.b64encode(b"print(1)\n").decode(), "lib/util.py": ""}}
    async with _client(node) as c:
        r = await c.post("/v1/engines", json=body)
        assert r.status_code == 201, r.text
        engines = (await c.get("/v1/engines")).json()["engines"]
    assert engines == [{"name": "fib", "cid": r.json()["cid"], "executable": "fib.py",
                        "files": ["fib.py", "lib/util.py"]}]


async def test_health_node_and_openapi_are_served(node: FakeNode) -> None:
    async with _client(node) as c:
        assert (await c.get("/v1/health")).json()["ok"] is True
        assert (await c.get("/v1/node")).json()["peer_id"] == "12D3KooWfake"
        schema = (await c.get("/openapi.json")).json()
    assert {"/v1/tasks", "/v1/tasks/{cid}", "/v1/results/{task_cid}", "/v1/queue", "/v1/datasets",
            "/v1/datasets/{cid}/{path}", "/v1/engines", "/v1/health", "/v1/node"} <= set(schema["paths"])
    assert "TaskIn" in schema["components"]["schemas"]


# ----------------------------------------------------------------- bad input is 4xx


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b""])
async def test_malformed_json_is_400(node: FakeNode, body: bytes) -> None:
    async with _client(node, api_options(max_body_bytes=1 << 20)) as c:
        for path in ("/v1/tasks", "/v1/datasets", "/v1/engines"):
            assert_error(await c.post(path, content=body), 400, "malformed_json")
        assert_error(await c.put(f"/v1/datasets/{DATASET}/x", content=body), 400, "malformed_json")


@pytest.mark.parametrize("bad", ["", "bafy", "zzzz", "Bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                                 "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "b" + "a" * 200])
async def test_malformed_cids_are_400_bad_cid(node: FakeNode, bad: str) -> None:
    async with _client(node) as c:
        if bad:
            for path in (f"/v1/tasks/{bad}", f"/v1/results/{bad}", f"/v1/datasets/{bad}/x"):
                assert_error(await c.get(path), 400, "bad_cid")
            assert_error(await c.put(f"/v1/datasets/{bad}/x", json={"value": 1}), 400, "bad_cid")
        assert_error(await c.get("/v1/tasks", params={"after": bad or "b"}), 400, "bad_cid")
        assert_error(await c.post("/v1/tasks", json=listing2_task(dataset=bad)), 400, "bad_cid")
        task = listing2_task()
        task["taskDefinition"]["runner"]["engine"] = {"/": bad}
        assert_error(await c.post("/v1/tasks", json=task), 400, "bad_cid")


@pytest.mark.parametrize("mutate", [
    lambda t: t.pop("input"),
    lambda t: t.pop("taskDefinition"),
    lambda t: t.__setitem__("extra", 1),
    lambda t: t["result"].__setitem__("action", "delete"),
    lambda t: t["taskDefinition"]["runner"].pop("type"),
    lambda t: t["input"].__setitem__("dataset", "not-a-link"),
    lambda t: t.__setitem__("max_attempts", 0),
    lambda t: t.__setitem__("max_attempts", 101),
    lambda t: t["taskDefinition"]["runner"].__setitem__("type", "wasm"),
    lambda t: t["taskDefinition"].__setitem__("color", "red"),
    lambda t: t.__setitem__("constraints", {"gpu": True}),
    lambda t: t.__setitem__("constraints", [{"type": "moon_phase", "value": 1}]),
    lambda t: t.__setitem__("verify", {"replicas": 17}),
    lambda t: t["input"].__setitem__("path", "/abs"),
    lambda t: t.__setitem__("input", {"value": 1, "dataset": {"/": DATASET}}),
])
async def test_schema_violations_are_422_with_details(node: FakeNode, mutate: Any) -> None:
    task = listing2_task()
    mutate(task)
    async with _client(node) as c:
        r = await c.post("/v1/tasks", json=task)
    assert_error(r, 422, "validation_failed")
    assert r.json()["error"]["details"]
    assert node.tasks == {}


@pytest.mark.parametrize("path,body", [
    ("/v1/tasks", []), ("/v1/tasks", 42), ("/v1/tasks", {"tasks": [1]}),
    ("/v1/datasets", {"value": [1]}), ("/v1/datasets", {"nme": "x"}),
    ("/v1/engines", {"manifest": {"name": "x", "executable": "a"}, "files": {"a": "!!!"}}),
    ("/v1/engines", {"manifest": {"name": "x", "executable": "../a"}, "files": {"../a": ""}}),
    ("/v1/engines", {"manifest": {"name": "x", "executable": "b"}, "files": {"a": ""}}),
    ("/v1/engines", {"manifest": {"name": "../x", "executable": "a"}, "files": {"a": ""}}),
])
async def test_wrong_body_shapes_are_422(node: FakeNode, path: str, body: Any) -> None:
    async with _client(node) as c:
        assert_error(await c.post(path, json=body), 422, "validation_failed")


async def test_an_empty_task_list_is_400_no_tasks(node: FakeNode) -> None:
    async with _client(node) as c:
        assert_error(await c.post("/v1/tasks", json={"tasks": []}), 400, "no_tasks")
    assert node.tasks == {}


async def test_bad_query_and_dataset_action_are_422(node: FakeNode) -> None:
    async with _client(node) as c:
        assert_error(await c.get("/v1/tasks", params={"state": "sleeping"}), 422, "validation_failed")
        assert_error(await c.get("/v1/tasks", params={"limit": "0"}), 422, "validation_failed")
        assert_error(await c.get("/v1/tasks", params={"limit": "lots"}), 422, "validation_failed")
        assert_error(await c.put(f"/v1/datasets/{DATASET}/x", json={"value": 1, "action": "drop"}),
                     422, "validation_failed")
        assert_error(await c.put(f"/v1/datasets/{DATASET}/x", json={"action": "set"}), 422, "validation_failed")


async def test_unknown_objects_are_404(node: FakeNode) -> None:
    other = str(cid_of({"unknown": 1}))
    async with _client(node) as c:
        assert_error(await c.get(f"/v1/tasks/{other}"), 404, "not_found")
        assert_error(await c.get(f"/v1/results/{other}"), 404, "not_found")
        assert_error(await c.get(f"/v1/datasets/{other}/x"), 404, "not_found")
        assert_error(await c.get(f"/v1/datasets/{DATASET}/missing"), 404, "not_found")
        assert_error(await c.get("/v2/tasks"), 404, "not_found")
        assert_error(await c.delete("/v1/queue"), 405, "method_not_allowed")


async def test_node_raised_bad_request_keeps_its_code(node: FakeNode) -> None:
    async with _client(node) as c:
        await c.put(f"/v1/datasets/{DATASET}/x", json={"value": 1})
        assert_error(await c.put(f"/v1/datasets/{DATASET}/x", json={"value": 2, "action": "append"}),
                     400, "not_a_list")


async def test_node_failure_is_500_with_the_error_shape(node: FakeNode, caplog: pytest.LogCaptureFixture) -> None:
    node.fail = True
    async with _client(node) as c:
        r = await c.get("/v1/queue")
    assert_error(r, 500, "internal_error")
    assert "disk on fire" not in r.text  # internals stay in the log
    assert any("node_call_failed" in rec.getMessage() for rec in caplog.records)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from([DATASET, "zdpu", "bafy", "set", "append", "docker-json-runner", "/", "value"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["input", "taskDefinition", "runner", "type", "result", "action",
                                       "destination", "dataset", "path", "value", "/", "tasks", "engine",
                                       "manifest", "files", "name", "executable", "constraints", "verify"]),
                      children, max_size=5),
    max_leaves=30,
)


_FUZZ_APP = create_app(FakeNode(), api_options(max_body_bytes=8 * 1024 * 1024))  # built once: examples are many


@settings(max_examples=100, deadline=None)
@given(body=_json, path=st.sampled_from(["/v1/tasks", "/v1/datasets", "/v1/engines", f"/v1/datasets/{DATASET}/p"]))
async def test_arbitrary_json_bodies_never_cause_a_5xx(body: Any, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_FUZZ_APP), base_url=BASE_URL, headers=AUTH) as c:
        method = c.put if path.startswith("/v1/datasets/") else c.post
        r = await method(path, content=json.dumps(body))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error"}


async def test_deeply_nested_values_are_4xx(node: FakeNode) -> None:
    async with _client(node, api_options(max_body_bytes=1 << 20)) as c:
        for depth in (200, 900, 5000):
            nested = "[" * depth + "]" * depth
            r = await c.post("/v1/tasks", content='{"input": {"value": %s}, "taskDefinition": '
                             '{"runner": {"type": "bin-json-runner"}}}' % nested)
            assert 400 <= r.status_code < 500, r.text
            assert len(r.json()["error"]["message"]) < 1000


# ----------------------------------------------------------------- limits


async def test_body_over_limit_with_honest_length_is_413(node: FakeNode) -> None:
    async with _client(node) as c:
        assert_error(await c.post("/v1/tasks", content=b"x" * 5000), 413, "payload_too_large")
    assert node.tasks == {}


async def test_body_over_limit_without_length_is_413(node: FakeNode) -> None:
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async with _client(node) as c:
        r = await c.post("/v1/tasks", content=chunks())
        assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


async def test_body_over_limit_with_lying_length_is_413(node: FakeNode) -> None:
    async with _client(node) as c:
        r = await c.post("/v1/tasks", content=b"x" * 5000, headers={"Content-Length": "10"})
    assert_error(r, 413, "payload_too_large")


async def test_body_at_the_limit_is_accepted(node: FakeNode) -> None:
    body = json.dumps(listing2_task()).encode()
    body += b" " * (4096 - len(body))
    async with _client(node) as c:
        assert (await c.post("/v1/tasks", content=body)).status_code == 201


# ----------------------------------------------------------------- auth


async def test_every_route_but_health_requires_the_bearer_token_on_loopback_too(node: FakeNode) -> None:
    async with _client(node, headers={"Content-Type": "application/json"}) as c:
        assert_error(await c.get("/v1/node"), 401, "unauthorized")
        assert_error(await c.get("/v1/node", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(await c.post("/v1/tasks", json=listing2_task()), 401, "unauthorized")
        assert_error(await c.get("/openapi.json"), 401, "unauthorized")
        assert (await c.get("/v1/health")).status_code == 200
        assert (await c.get("/v1/node", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    assert node.tasks == {}


def test_api_without_an_admin_token_is_refused_even_on_loopback(node: FakeNode) -> None:
    from meshd.errors import ConfigError

    for listen in ("127.0.0.1:7600", "192.168.1.5:7600"):
        with pytest.raises(ConfigError, match="token"):
            create_app(node, ApiOptions(listen=listen))


# ----------------------------------------------------------------- real server


async def test_real_server_serves_http_over_tcp_on_an_ephemeral_port(node: FakeNode) -> None:
    app = create_app(node, api_options())
    async with trio.open_nursery() as nursery:
        bound: BoundAddress = await nursery.start(serve, app, ApiOptions(listen="127.0.0.1:0"))
        assert bound.port != 0
        async with httpx.AsyncClient(base_url=bound.url, headers=AUTH) as c:
            r = await c.post("/v1/tasks", json=listing2_task())
            assert r.status_code == 201
            assert (await c.get(f"/v1/tasks/{r.json()['cid']}")).json()["state"] == "available"
            assert_error(await c.post("/v1/tasks", content=b"{"), 400, "malformed_json")
            assert_error(await c.get("/v1/tasks/nope"), 400, "bad_cid")
            assert_error(await c.post("/v1/tasks", content=b"x" * 5000), 413, "payload_too_large")

            async def chunks():
                for _ in range(10):
                    yield b"x" * 1000

            assert_error(await c.post("/v1/tasks", content=chunks()), 413, "payload_too_large")
        nursery.cancel_scope.cancel()


async def test_real_server_on_non_loopback_requires_token(node: FakeNode) -> None:
    options = api_options(listen="0.0.0.0:0")
    async with trio.open_nursery() as nursery:
        bound: BoundAddress = await nursery.start(serve, create_app(node, options), options)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound.port}") as c:
            assert_error(await c.get("/v1/queue"), 401, "unauthorized")
            assert (await c.get("/v1/health")).status_code == 200
            r = await c.get("/v1/queue", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
        nursery.cancel_scope.cancel()
