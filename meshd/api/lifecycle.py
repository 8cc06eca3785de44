"""Task and job lifecycle routes: cancel, retry, and a stream of results as tasks end.

* ``POST /v1/tasks/{cid}/cancel`` (optional body ``{"reason": text}``) and
  ``POST /v1/tasks/{cid}/retry``: write the queue's cancel or retry record
  under this node's key (:mod:`meshd.roles.lifecycle`); the answer is the task's
  status.  Scope ``submit``, like enqueueing: the mesh cannot tell who asked
  a node, so this is where the authority is checked.
* ``POST /v1/jobs/{job}/cancel``: the job's rules stop firing everywhere and
  its open tasks are cancelled.
* ``GET /v1/results/stream?tasks=a,b,…``: Server-Sent Events, one ``result``
  event per task as it ends (completed, failed or cancelled; the data is the
  answer of ``GET /v1/results/{cid}``), a comment line every 15 s without
  news, and an ``end`` event once all have ended.  Clients need not poll.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..roles import lifecycle
from ..errors import BadRequest
from ..node import parse_cid
from ..roles.evaluator import EvaluatorOptions
from .models import ErrorOut

#: Most tasks one results stream may follow.
MAX_STREAM_TASKS = 1000
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut}, 404: {"model": ErrorOut},
                                            409: {"model": ErrorOut}, 422: {"model": ErrorOut}}


async def _reason_untrusted(request: Request) -> str:
    raw = await request.body()
    if not raw.strip():
        return ""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # deep nesting overflows the stdlib decoder (fuzzing found it)
        raise BadRequest("body must be JSON: {\"reason\": text} or empty", code="malformed_json") from None
    if not isinstance(body, dict) or set(body) - {"reason"} or not isinstance(body.get("reason", ""), str):
        raise BadRequest("body must be {\"reason\": text} or empty", code="bad_request")
    return body.get("reason", "")[:500]


def router(node: Any) -> APIRouter:
    r = APIRouter(tags=["tasks"])
    conditions = EvaluatorOptions().conditions

    @r.post("/v1/tasks/{cid}/cancel", responses=_ERRORS)
    async def cancel_task(cid: str, request: Request) -> JSONResponse:
        """Cancel a task: runners stop its engine, nothing claims it; 409 once it completed or failed."""
        reason = await _reason_untrusted(request)
        return JSONResponse(await lifecycle.cancel_task(node, parse_cid(cid, "task CID"), reason))

    @r.post("/v1/tasks/{cid}/retry", responses=_ERRORS)
    async def retry_task(cid: str) -> JSONResponse:
        """Make a failed or cancelled task available again, with fresh attempts."""
        return JSONResponse(await lifecycle.retry_task(node, parse_cid(cid, "task CID")))

    @r.post("/v1/jobs/{job}/cancel", tags=["jobs"], responses=_ERRORS)
    async def cancel_job(job: str, request: Request) -> JSONResponse:
        """Cancel a job: its rules stop firing on every evaluator, its open tasks are cancelled."""
        reason = await _reason_untrusted(request)
        return JSONResponse(await lifecycle.cancel_job(node, parse_cid(job, "job id"), options=conditions,
                                                       reason=reason))

    @r.get("/v1/results/stream", responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS})
    async def stream_results(tasks: str = Query(..., description="comma-separated task CIDs (at most 1,000)")
                             ) -> StreamingResponse:
        """Server-Sent Events: one ``result`` event per task as it ends, then ``end``."""
        cids = list(dict.fromkeys(parse_cid(t.strip(), "task CID") for t in tasks.split(",") if t.strip()))
        if not cids:
            raise BadRequest("tasks names no task CID", code="no_tasks")
        if len(cids) > MAX_STREAM_TASKS:
            raise BadRequest(f"at most {MAX_STREAM_TASKS} tasks per stream", code="too_many_tasks")
        for c in cids:
            await node.task_status(str(c))  # 404 task_not_found before the stream starts

        async def events() -> AsyncIterator[str]:
            async for answer in lifecycle.ended_results(node, cids):
                if answer is None:
                    yield ": still waiting\n\n"
                else:
                    yield f"event: result\ndata: {json.dumps(answer, separators=(',', ':'))}\n\n"
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return r
