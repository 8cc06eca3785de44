"""Roles plug into the daemon: each is a trio service started from the node's nursery.

A role is any object with a ``name`` and
``async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED)``; the
daemon starts the roles named in ``[node] roles`` with ``nursery.start``.
"""

from __future__ import annotations

from typing import Protocol

import trio


class Role(Protocol):
    """A pluggable node role."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...
