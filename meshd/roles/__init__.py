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
replication policy and output grouping (``verify``), job records and
pipelines (``jobs``, ``pipeline``), the conditions' reads of datasets
(``resolver``) and the roles' ``config.toml`` tables (``config``).
``[node] roles`` accepts only the names in :data:`meshd.config.ROLES`, so
these modules are never started as roles.
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
    from .archivist import ArchivistNode
    from .evaluator import EvaluatorNode
    from .ports import PeerView
    from .runner import RunnerNode
    from .verifier import VerifierNode

    class RoleNode(RunnerNode, VerifierNode, ArchivistNode, EvaluatorNode, Protocol):
        """Every role's node port at once: what the daemon hands the roles (``meshd.node.Node``)."""

#: Role modules whose ``router`` is mounted even when the role is not enabled.
ALWAYS_ROUTED: tuple[str, ...] = ("archivist", "evaluator", "verifier")


class Role(Protocol):
    """A pluggable node role."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


@dataclass
class RoleContext:
    """What a role may use: the node, the engine host, the config, the mesh.

    Each role takes from it only the narrow Protocol it declares beside
    itself (``RunnerNode`` in :mod:`meshd.roles.runner`, ``VerifierNode``,
    ``ArchivistNode``, ``EvaluatorNode``; their parts are in
    :mod:`meshd.roles.ports`), which ``Node`` and ``Mesh`` satisfy
    structurally; ``node`` is typed as all of them at once.

    ``roles`` is the registry of *running* roles by name, filled by the
    daemon as each role reports started: a role's routes, mounted before the
    roles start, look their role up there per request.  It is state, not
    wiring: no role is handed another role.
    """

    node: RoleNode
    host: EngineHost
    config: Config
    home: Home
    mesh: PeerView | None = None
    roles: dict[str, Any] = field(default_factory=dict)  # running roles by name


def role_module(name: str) -> Any | None:
    """The module of role ``name``, or None when this build has no such role."""
    try:
        return importlib.import_module(f"meshd.roles.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"meshd.roles.{name}":
            raise
        return None
