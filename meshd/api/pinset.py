"""``/v1/pinset``: pin a CID or a dataset on N archivists, unpin it, and see who holds what.

The pinset is the mesh's ``pinset`` GOHO (:mod:`lattice.pinset`); any node
may add to it, and the archivists keep it (:mod:`meshd.roles.pinholder`).
These routes exist on every node, archivist or not::

    GET    /v1/pinset            every live pin, its allocation and each archivist's report
    POST   /v1/pinset            {"target": "<cid> | <dataset>[/<path>]", "replicas"?, "name"?, "expire_s"?}
    GET    /v1/pinset/{cid}      one pin (``state: removed`` with the last reports once unpinned)
    DELETE /v1/pinset/{cid}      unpin

A target that is a dataset's genesis pins the dataset (its whole delta DAG,
followed as it grows); ``<dataset>/<path>`` pins the block the value at
``path`` links to (a value stored inline in the dataset is refused: pin the
dataset instead).
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import trio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lattice import dataset, pinset
from lattice.cid import CID
from lattice.errors import BadCID, BadInput

from ..errors import BadRequest, NotFound
from .models import ErrorOut
from ..roles.pinholder import archivist_weights

if TYPE_CHECKING:
    from ..roles import RoleContext

__all__ = ["pin_json", "router"]

#: How long a node that had not followed the pinset waits for a peer's copy.
_FIRST_SYNC_S = 3.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def pin_json(pin: pinset.Pin, reports: dict[str, pinset.Held], weights: dict[str, int]) -> dict[str, Any]:
    """A pin as the API shows it: its allocation on the live archivists and each archivist's report.

    ``state`` is ``held`` when every allocated archivist reports the DAG held
    and there are ``replicas`` of them, ``under-replicated`` when they all
    hold it but the mesh has fewer live archivists than ``replicas``, else
    ``pinning``.
    """
    alloc = pinset.allocate(pin.cid, pin.replicas, weights)
    status = {a: {"held": r.held, "blocks": r.blocks, "bytes": r.bytes, "at": r.at,
                  "allocated": a in alloc, "live": a in weights}
              for a, r in sorted(reports.items())}
    for a in alloc:
        status.setdefault(a, {"held": False, "blocks": 0, "bytes": 0, "at": None, "allocated": True, "live": True})
    held = sum(1 for a in alloc if status[a]["held"])
    state = "pinning"
    if alloc and held == len(alloc):
        state = "held" if len(alloc) >= pin.replicas else "under-replicated"
    return {"cid": str(pin.cid), "name": pin.name, "replicas": pin.replicas, "expire": pin.expire,
            "dataset": pin.dataset, "by": pin.by, "at": pin.at, "allocations": alloc, "held": held,
            "state": state, "status": status}


def router(ctx: RoleContext) -> APIRouter:
    """The pinset routes over the node in ``ctx``."""
    r = APIRouter(tags=["pinset"])
    node = ctx.node

    async def pinset_obj() -> Any:
        fresh = pinset_genesis[0] is None or node.objects.get(pinset_genesis[0]) is None
        obj = await node.objects.follow_async(pinset.PINSET, ctx.config.node.mesh)
        pinset_genesis[0] = obj.genesis
        if fresh and node.mesh is not None and not obj.replica.heads:
            await node.mesh.query(obj)
            with trio.move_on_after(_FIRST_SYNC_S):
                await node.wait_changed(obj, _FIRST_SYNC_S)
        return obj

    pinset_genesis: list[CID | None] = [None]

    def one(obj: Any, cid: CID, *, live_only: bool = False) -> dict[str, Any]:
        pin = pinset.pins(obj.replica.state, _now_ms()).get(cid)
        reports = pinset.reports(obj.replica.state).get(cid, {})
        if pin is not None:
            return pin_json(pin, reports, archivist_weights(node))
        if not reports or live_only:
            raise NotFound(f"{cid} is not pinned", code="pin_not_found")
        # Removed or expired: the archivists' last reports say whether they let go.
        return {"cid": str(cid), "state": "removed",
                "status": {a: {"held": r.held, "blocks": r.blocks, "bytes": r.bytes, "at": r.at}
                           for a, r in sorted(reports.items())}}

    def parse(text: str, what: str) -> CID:
        try:
            return CID.parse_untrusted(text)
        except BadCID as exc:
            raise BadRequest(f"{what} is not a CID: {exc}", code="bad_cid") from None

    errors: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut} for c in (400, 404, 422, 503)}

    @r.get("/v1/pinset", responses=errors)
    async def list_pins() -> JSONResponse:
        """Every live pin: allocation, each archivist's signed report, and the live archivists."""
        obj = await pinset_obj()
        weights = archivist_weights(node)
        reports = pinset.reports(obj.replica.state)
        pins = pinset.pins(obj.replica.state, _now_ms())
        return JSONResponse({"pins": [pin_json(p, reports.get(c, {}), weights) for c, p in sorted(pins.items())],
                             "archivists": weights})

    @r.get("/v1/pinset/{cid}", responses=errors)
    async def get_pin(cid: str) -> JSONResponse:
        """One pin."""
        return JSONResponse(one(await pinset_obj(), parse(cid, "cid")))

    @r.post("/v1/pinset", status_code=201, responses=errors)
    async def add_pin(request: Request) -> JSONResponse:
        """Pin a CID or a dataset on ``replicas`` archivists."""
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None
        if not isinstance(body, dict) or set(body) - {"target", "replicas", "name", "expire_s"}:
            raise BadRequest("body must be {target, replicas?, name?, expire_s?}", code="bad_request")
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise BadRequest("target must be '<cid>' or '<dataset>/<path>'", code="bad_request")
        replicas = body.get("replicas", 1)
        if type(replicas) is not int or not 1 <= replicas <= pinset.MAX_REPLICAS:
            raise BadRequest(f"replicas must be an integer in 1..{pinset.MAX_REPLICAS}", code="bad_request")
        name = body.get("name") or ""
        if not isinstance(name, str) or len(name) > 256:
            raise BadRequest("name must be a string of at most 256 characters", code="bad_request")
        expire_s = body.get("expire_s")
        if expire_s is not None and (isinstance(expire_s, bool) or not isinstance(expire_s, (int, float))
                                     or not math.isfinite(expire_s) or not 0 < expire_s <= 10 * 365 * 86_400):
            raise BadRequest("expire_s must be a positive number of seconds (at most 10 years)", code="bad_request")
        head, _, path = target.partition("/")
        cid = parse(head, "target")
        followed = node.objects.get(cid)
        is_dataset = followed is not None and followed.kind == "dataset"
        if path:
            if not is_dataset:
                raise NotFound(f"{cid} is not a dataset this node follows", code="dataset_not_found")
            try:
                value = dataset.get(followed.replica, path)
            except (ValueError, BadInput) as exc:
                raise BadRequest(str(exc), code="bad_path") from None
            if type(value) is not CID:
                raise BadRequest(f"the value at {path!r} is stored inline in the dataset, not linked: "
                                 "pin the dataset itself", code="not_a_link")
            cid, is_dataset, name = value, False, name or path
        now = _now_ms()
        expire = None if expire_s is None else now + int(expire_s * 1000)
        try:
            op = pinset.pin_op(cid, replicas, node.peer_id, now, name=name, expire_ms=expire, dataset=is_dataset)
        except BadInput as exc:
            raise BadRequest(str(exc), code="bad_request") from None
        obj = await pinset_obj()
        await node.objects.commit(obj, [op])
        return JSONResponse({"cid": str(cid), "replicas": replicas, "name": name, "expire": expire,
                             "dataset": is_dataset}, status_code=201)

    @r.delete("/v1/pinset/{cid}", responses=errors)
    async def remove_pin(cid: str) -> JSONResponse:
        """Unpin: the archivists let go of it and report so."""
        c = parse(cid, "cid")
        obj = await pinset_obj()
        one(obj, c, live_only=True)  # 404 when not pinned
        await node.objects.commit(obj, [pinset.unpin_op(c, node.peer_id, _now_ms())])
        return JSONResponse({"cid": str(c), "removed": True})

    return r
