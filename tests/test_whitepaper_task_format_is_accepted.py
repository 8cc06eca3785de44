"""The whitepaper's task JSON (Listings 2 and 3) is accepted as written.

Listing 2 names a ``docker-json-runner`` engine by ``metadata.image`` only,
Listing 3 writes ``result`` as ``{dataset, path}`` with no action, and the
Manager protocol's ``Status`` gives a task a ``status`` link.  These tests
check the record's rules (``lattice.task``) and how an image name resolves
to a published engine (``meshd.roles.images``).
"""

from __future__ import annotations

from typing import Any

import pytest

from engines.manifest import DockerImage, DockerManifest, encode_manifest
from lattice import codec, task
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, RAW
from lattice.errors import BadRecord
from meshd.roles.images import resolve_image

DS = codec.cid_of({"dataset": "split"})
OUT = codec.cid_of({"dataset": "results"})
STATUS = codec.cid_of({"dataset": "status"})


def _listing2(**extra: Any) -> dict[str, Any]:
    return {"input": {"dataset": {"/": str(DS)}, "path": "split/input"},
            "taskDefinition": {"runner": {"type": "docker-json-runner",
                                          "metadata": {"image": "computes/fibonacci-sum-split:latest"}}},
            "result": {"action": "set", "destination": {"dataset": {"/": str(OUT)}, "path": "split/results"}},
            **extra}


def test_listing2_with_a_status_link_is_accepted_and_keeps_the_status() -> None:
    _, _, rec = task.task_from_json_untrusted(_listing2(status={"/": str(STATUS)}))
    assert rec["status"] == STATUS
    _, _, rec = task.task_from_json_untrusted(_listing2(status={"dataset": {"/": str(STATUS)}, "path": "s/1"}))
    assert rec["status"] == {"dataset": STATUS, "path": "s/1"}


@pytest.mark.parametrize("status", ["text", 3, {"dataset": {"/": str(STATUS)}}, {"path": "x"},
                                    {"dataset": {"/": str(STATUS)}, "path": "/abs"}])
def test_a_status_that_is_not_a_link_or_location_is_refused(status: Any) -> None:
    with pytest.raises(BadRecord):
        task.task_from_json_untrusted(_listing2(status=status))


def test_listing3_result_without_action_means_set_at_that_location() -> None:
    body = _listing2(result={"dataset": {"/": str(OUT)}, "path": "split/results"})
    _, _, rec = task.task_from_json_untrusted(body)
    assert rec["result"] == {"action": "set", "destination": {"dataset": OUT, "path": "split/results"}}
    # Both spellings of the same destination are one task.
    assert task.task_from_json_untrusted(body)[0] == task.task_from_json_untrusted(_listing2())[0]


def test_the_definitions_result_applies_when_the_task_has_none() -> None:
    body = _listing2()
    del body["result"]
    body["taskDefinition"]["result"] = {"dataset": {"/": str(OUT)}, "path": "from/definition"}
    _, _, rec = task.task_from_json_untrusted(body)
    assert task.result_of(rec) == {"action": "set", "destination": {"dataset": OUT, "path": "from/definition"}}
    # The task's own result wins over its definition's.
    body["result"] = {"dataset": {"/": str(OUT)}, "path": "own"}
    _, _, rec = task.task_from_json_untrusted(body)
    assert task.result_of(rec)["destination"]["path"] == "own"
    # A linked definition's result is used when the caller resolved the link.
    linked = {"input": {"value": 1}, "taskDefinition": {"/": str(DS)}}
    _, _, rec = task.task_from_json_untrusted(linked)
    definition = {"runner": {"type": "bin-json-runner"},
                  "result": {"action": "append", "destination": {"dataset": OUT, "path": "p"}}}
    assert task.result_of(rec) is None
    assert task.result_of(rec, definition)["action"] == "append"


@pytest.mark.parametrize("result", [{"dataset": {"/": str(OUT)}}, {"dataset": "x", "path": "p"},
                                    {"action": "move", "destination": {"dataset": {"/": str(OUT)}, "path": "p"}},
                                    {"dataset": {"/": str(OUT)}, "path": "p", "action": "set"}])
def test_malformed_results_are_refused(result: Any) -> None:
    with pytest.raises(BadRecord):
        task.task_from_json_untrusted(_listing2(result=result))


def test_image_and_metadata_are_read_from_the_runner() -> None:
    _, _, rec = task.task_from_json_untrusted(_listing2())
    assert task.image_of(rec) == "computes/fibonacci-sum-split:latest"
    assert task.metadata_of(rec) == {"image": "computes/fibonacci-sum-split:latest"}
    engine = codec.cid_of({"engine": 1})
    fixed = task.with_engine(rec, engine)
    assert task.engine_of(fixed) == engine
    assert task.image_of(fixed) is None  # an engine CID wins: nothing left to resolve
    assert task.metadata_of(fixed) == task.metadata_of(rec)  # metadata still reaches the engine
    fixed_cid, _, again = task.task_from_json_untrusted(codec.to_json(fixed))
    assert again == fixed and fixed_cid != task.task_from_json_untrusted(_listing2())[0]


class Registry:
    """The engines GOHO's state as resolve_image reads it."""

    def __init__(self, names: dict[str, CID], engines: list[CID]) -> None:
        self.names, self.engines = names, engines

    def register(self, key: str) -> Any:
        return self.names.get(key)

    def set_keys(self) -> list[str]:
        return [str(e) for e in self.engines]


def _docker_engine(store: MemoryBlockStore, name: str, tag: str, digit: str) -> tuple[CID, str]:
    image_id = "sha256:" + digit * 64
    cid, data = encode_manifest(DockerManifest(name=name, image=DockerImage(CID.for_block(RAW, b""), image_id, tag)))
    store.put(cid, data)
    return cid, image_id


def test_an_image_resolves_by_registered_name_tag_or_digest() -> None:
    store = MemoryBlockStore()
    fib, fib_id = _docker_engine(store, "fib", "computes/fibonacci-sum-split:latest", "a")
    other, other_id = _docker_engine(store, "computes/other:2", "computes/other:2", "b")
    reg = Registry({"name/computes/other:2": other}, [fib, other])
    assert resolve_image("computes/other:2", reg, store) == other          # the registered name
    assert resolve_image("computes/fibonacci-sum-split:latest", reg, store) == fib  # the image tag
    assert resolve_image("computes/fibonacci-sum-split", reg, store) == fib  # no tag means :latest
    assert resolve_image(fib_id, reg, store) == fib                           # the digest
    assert resolve_image(f"computes/anything@{other_id}", reg, store) == other
    assert resolve_image("computes/fibonacci-sum-split:v2", reg, store) is None
    assert resolve_image("sha256:" + "c" * 64, reg, store) is None


def test_an_image_never_resolves_to_an_absent_or_native_engine() -> None:
    store = MemoryBlockStore()
    absent = codec.cid_of({"not": "stored"})
    native = codec.cid_of({"native": "manifest"})
    store.put(*codec.encode_block({"native": "manifest"}))
    reg = Registry({"name/img:1": absent, "name/img:2": native}, [absent, native])
    assert resolve_image("img:1", reg, store) is None
    assert resolve_image("img:2", reg, store) is None


def test_several_matching_engines_resolve_the_same_way_everywhere() -> None:
    store = MemoryBlockStore()
    a, _ = _docker_engine(store, "a", "same:1", "a")
    b, _ = _docker_engine(store, "b", "same:1", "b")
    assert resolve_image("same:1", Registry({}, [a, b]), store) == resolve_image("same:1", Registry({}, [b, a]), store)
