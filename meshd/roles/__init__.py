"""Roles plug into the daemon: each is a trio service started from the node's nursery.

A role lives in ``meshd/roles/<name>.py`` and exposes::

    def create(ctx: RoleContext) -> Role          # no I/O
    def router(ctx: RoleContext) -> APIRouter     # optional: extra /v1 routes

The daemon starts the roles named in ``[node] roles`` with ``nursery.start``
(``manager`` is built in: it is the node's task API).  A role may also add
routes that exist whatever the roles (e.g. ``/v1/archive`` answers 404s with
a reason when the archivist is off) by being listed in :data:`ALWAYS_ROUTED`.

The package also holds what the roles share that is not a role: the
Protocols through which roles see the node and the mesh (``ports``), the
replication policy and output grouping (``verify``) and job records and
pipelines (``jobs``, ``pipeline``).  ``[node] roles`` accepts only the names
in :data:`meshd.config.ROLES`, so these modules are never started as roles.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from engines.host import EngineHost

    from ..config import Config
    from ..home import Home
    from ..node import Node
    from ..p2p.mesh import Mesh

#: Role modules whose ``router`` is mounted even when the role is not enabled.
ALWAYS_ROUTED: tuple[str, ...] = ("archivist", "evaluator", "verifier")


class Role(Protocol):
    """A pluggable node role."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


@dataclass
class RoleContext:
    """What a role may use: the node, the engine host, the config, the mesh.

    A role hands its parts on as the narrow Protocols it declares (e.g.
    ``meshd.roles.runner.RunnerNode``, :mod:`meshd.roles.ports`), which
    ``Node`` and ``Mesh`` satisfy structurally.
    """

    node: Node
    host: EngineHost
    config: Config
    home: Home
    mesh: Mesh | None = None
    roles: dict[str, Any] = field(default_factory=dict)  # started roles by name


def role_module(name: str) -> Any | None:
    """The module of role ``name``, or None when this build has no such role."""
    try:
        return importlib.import_module(f"meshd.roles.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"meshd.roles.{name}":
            raise
        return None
