"""``GET /v1/peers``: the mesh as this node sees it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def router(node: Any) -> APIRouter:
    r = APIRouter(tags=["mesh"])

    @r.get("/v1/peers")
    async def peers() -> dict[str, Any]:
        """Connected peers: addresses, roles, inventory, last head announcements."""
        mesh = node.mesh
        if mesh is None:
            return {"peer_id": node.peer_id, "p2p": False, "peers": []}
        return {"peer_id": node.peer_id, "p2p": True, "addresses": list(getattr(node, "p2p_addrs", [])),
                "live_runners": mesh.live_runners(), "peers": mesh.peer_list()}

    return r
