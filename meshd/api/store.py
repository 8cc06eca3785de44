"""``GET /v1/store``: the block store against its budget (``[store] max_bytes``).

Answers on every node, with or without a budget: ``enabled: false`` and the
store's size when none is set.  The figures are those of the collector's
last check (:class:`meshd.store.collector.StoreBudgetStatistics`), so the
route does no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter


def router(collector: Any) -> APIRouter:
    """The route, reading ``collector.statistics()``."""
    r = APIRouter(tags=["node"])

    @r.get("/v1/store")
    async def store() -> dict[str, Any]:
        """Used bytes, the budget, blocks and bytes collected, and blocks kept by reason."""
        return dataclasses.asdict(collector.statistics())

    return r
