"""``/v1/owner``, ``/v1/node/drain`` and ``/v1/node/resume``: the owner policy and drains over HTTP.

``GET /v1/owner`` shows the runner's gate (draining, held closed by the
owner policy), the policy's state and why, and the last signal readings.
``POST /v1/node/drain`` starts a drain in the background (``deadline_s``:
how long running tasks may finish before they are vacated) and answers at
once; ``POST /v1/node/resume`` ends it.  Both need the admin scope.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..api.models import ErrorOut

if TYPE_CHECKING:
    from ..roles import RoleContext

#: ``POST /v1/node/drain`` without a deadline: running tasks get this long.
DEFAULT_DRAIN_DEADLINE_S = 600.0


#: Error answers the drain and resume routes document (the schema test holds them to it).
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}}


class DrainRequest(BaseModel):
    # Strict: ``true`` is not a number of seconds, and unknown keys are refused.
    model_config = ConfigDict(extra="forbid", strict=True)

    deadline_s: float = Field(DEFAULT_DRAIN_DEADLINE_S, gt=0, le=86400,
                              description="How long running tasks may finish before they are vacated")


def owner_state(runner: Any, owner: Any) -> dict[str, Any]:
    """The answer of ``GET /v1/owner`` (also after a drain or resume)."""
    gate = dataclasses.asdict(runner.gate.statistics()) if runner is not None else None
    return {"runner": runner is not None, "gate": gate,
            "policy": owner.status() if owner is not None else None}


def router(ctx: "RoleContext") -> APIRouter:
    r = APIRouter(tags=["owner"])

    def runner() -> Any:
        run = ctx.roles.get("runner")
        if run is None:
            raise HTTPException(503, "the runner role is not running on this node")
        return run

    @r.get("/v1/owner")
    async def owner() -> dict[str, Any]:
        """The owner policy's state and why, the signal readings, and the runner's gate."""
        return owner_state(ctx.roles.get("runner"), ctx.roles.get("owner"))

    @r.post("/v1/node/drain", responses=_ERRORS)
    async def drain(body: DrainRequest | None = None) -> dict[str, Any]:
        """Stop claiming, release claimed-ahead tasks now, vacate running ones after ``deadline_s``."""
        run = runner()
        run.begin_drain((body or DrainRequest()).deadline_s)
        return owner_state(run, ctx.roles.get("owner"))

    @r.post("/v1/node/resume", responses=_ERRORS)
    async def resume() -> dict[str, Any]:
        """End a drain: claim again (unless the owner policy keeps the gate closed)."""
        run = runner()
        run.resume()
        return owner_state(run, ctx.roles.get("owner"))

    return r
