"""``/v1/pinset`` on a real node without a mesh: what it pins, and what it refuses.

The routes of :mod:`meshd.api.pinset` run in process over a real
:class:`meshd.node.Node` (in-memory block store, no p2p).  A dataset pins as
a dataset; ``<dataset>/<path>`` pins the block linked there and refuses an
inline value; malformed bodies are refused with the one error shape; an
unpinned CID answers ``removed`` only once an archivist reported on it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from lattice import codec, dataset, pinset
from lattice.blockstore import MemoryBlockStore
from lattice.signing import Signer, peer_id_of
from meshd.api.pinset import router
from meshd.errors import ApiError

SEED = b"\x55" * 32


def _node(tmp_path: Path) -> Any:
    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import CommitOptions, ObjectHost

    signer = Signer.from_seed(SEED)
    objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / "heads.db"), signer,
                         CommitOptions(io_in_threads=False))
    config = SimpleNamespace(node=SimpleNamespace(mesh="pin-mesh", labels=(), name="n", roles=("manager",)),
                             verify=VerifyConfig())
    return Node(objects=objects, peer_id=peer_id_of(signer.public), identity_seed=SEED, config=config)


def _app(node: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router(SimpleNamespace(node=node, config=node.config)))

    async def on_api_error(request: Any, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    return app


async def test_pins_datasets_and_linked_blocks_and_refuses_the_rest(tmp_path: Path) -> None:
    node = _node(tmp_path)
    linked = codec.cid_of({"big": "value"})
    ds = await node.objects.follow_async("dataset", "fib")
    await node.objects.commit(ds, [dataset.set_op("split/input", {"n": 10}), dataset.set_op("blob", linked)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(node)), base_url="http://t") as c:
        r = await c.post("/v1/pinset", json={"target": str(ds.genesis), "replicas": 2, "name": "fib"})
        assert r.status_code == 201, r.text
        assert r.json() == {"cid": str(ds.genesis), "replicas": 2, "name": "fib", "expire": None, "dataset": True}

        r = await c.post("/v1/pinset", json={"target": f"{ds.genesis}/blob", "expire_s": 3600})
        assert r.status_code == 201, r.text
        assert r.json()["cid"] == str(linked) and r.json()["name"] == "blob" and not r.json()["dataset"]
        assert r.json()["expire"] > 0

        listing = (await c.get("/v1/pinset")).json()
        assert {p["cid"] for p in listing["pins"]} == {str(ds.genesis), str(linked)}
        assert all(p["state"] == "pinning" and p["allocations"] == [] for p in listing["pins"])  # no archivists

        bad = [({"target": f"{ds.genesis}/split/input"}, 400, "not_a_link"),
               ({"target": "not-a-cid"}, 400, "bad_cid"),
               ({"target": str(ds.genesis), "replicas": 0}, 400, "bad_request"),
               ({"target": str(ds.genesis), "replicas": pinset.MAX_REPLICAS + 1}, 400, "bad_request"),
               ({"target": str(ds.genesis), "expire_s": -1}, 400, "bad_request"),
               ({"target": str(ds.genesis), "colour": "red"}, 400, "bad_request"),
               ({"target": f"{linked}/path"}, 404, "dataset_not_found")]
        for body, status, code in bad:
            r = await c.post("/v1/pinset", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), body

        r = await c.delete(f"/v1/pinset/{linked}")
        assert r.status_code == 200 and r.json() == {"cid": str(linked), "removed": True}
        assert (await c.get(f"/v1/pinset/{linked}")).status_code == 404  # nobody ever reported on it
        assert (await c.delete(f"/v1/pinset/{linked}")).status_code == 404

        # Once an archivist reported, a removed pin shows its last word.
        archivist = Signer.from_seed(b"\x66" * 32)
        obj = await node.objects.follow_async(pinset.PINSET, "pin-mesh")
        await node.objects.commit(obj, [pinset.held_op(pinset.held_record(archivist, linked, False, 0, 0, 5))])
        gone = (await c.get(f"/v1/pinset/{linked}")).json()
        assert gone["state"] == "removed" and gone["status"][peer_id_of(archivist.public)]["held"] is False

