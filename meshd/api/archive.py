"""``/v1/archive`` and ``/v1/pins``: the Archivist's routes (:mod:`meshd.roles.archivist`).

Mounted whether or not the role runs: they answer 404 ``archivist_disabled``
when it is off, and 503 ``archivist_starting`` until it has started.  The
running archivist is looked up per request in ``RoleContext.roles``.  Reads
of the archive index and the block store run in worker threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from lattice.cid import CID
from lattice.errors import BadInput, StoreError

from ..errors import ApiError, NotFound
from ..store.archive_index import ArchiveError
from .pinset import router as pinset_router

if TYPE_CHECKING:
    from ..roles import RoleContext
    from ..roles.archivist import Archivist

__all__ = ["ArchiveUnavailable", "router"]


class ArchiveUnavailable(ApiError):
    """The archive cannot answer now (its block store is unreachable, or it is starting)."""

    status = 503
    default_code = "store_unavailable"


def router(ctx: RoleContext) -> APIRouter:
    """``/v1/archive`` and ``/v1/pins``; 404 ``archivist_disabled`` when the role is off."""
    r = APIRouter(tags=["archive"])

    def archivist() -> Archivist:
        a = ctx.roles.get("archivist")
        if a is not None:
            return a
        if "archivist" in ctx.config.node.roles:
            raise ArchiveUnavailable("the archivist is starting; try again", code="archivist_starting")
        raise NotFound('this node does not run the archivist role (add "archivist" to [node] roles)',
                       code="archivist_disabled")

    async def in_thread(fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except (StoreError, ArchiveError) as exc:
            raise ArchiveUnavailable(f"archive store unavailable: {exc}") from None

    @r.get("/v1/archive")
    async def list_archive() -> JSONResponse:
        """Archived objects with their pinned version, and the archivist's statistics."""
        a = archivist()
        return JSONResponse(await in_thread(a.objects_json))

    @r.get("/v1/archive/{genesis}")
    async def list_versions(genesis: str, limit: int = Query(default=1000, ge=1, le=100_000)) -> JSONResponse:
        """Captured versions of one object, oldest first, and who archives it."""
        a = archivist()
        return JSONResponse(await in_thread(a.versions_json, CID.parse_untrusted(genesis), limit))

    @r.get("/v1/archive/{genesis}/{version}")
    async def get_version(genesis: str, version: str) -> JSONResponse:
        """One version read back from the block store: heads and a summary of the state."""
        a = archivist()
        g, v = CID.parse_untrusted(genesis), CID.parse_untrusted(version)
        try:
            return JSONResponse(await in_thread(a.version_json_sync, g, v))
        except BadInput as exc:
            raise NotFound(f"{v} is not a version of {g}: {exc}", code="version_not_found") from None

    r.include_router(pinset_router(ctx))

    @r.get("/v1/pins")
    async def list_pins() -> JSONResponse:
        """Every pin this archivist holds (versions, result outputs, engine files)."""
        a = archivist()
        return JSONResponse(await in_thread(a.pins_json))

    return r
