"""What this machine offers: the inventory a node announces in its presence.

Task constraints and engine platforms are matched against it, and the
runner keeps its live fields (``free``, ``backlog``) current in place.  Kept
apart from :mod:`meshd.node` (which re-exports both functions): reading the
machine (CPUs, memory, a GPU, the platform key) is no part of the Manager
protocol.
"""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

import psutil

from engines.host import current_platform

__all__ = ["inventory", "node_inventory"]


def inventory(slots: int = 0) -> dict[str, Any]:
    """What this machine offers, announced in presence.

    Task constraints are matched against ``os``, ``arch``, ``memory``,
    ``gpu`` and ``labels``; an engine's builds against ``platform``
    (``engines.host.current_platform``).  ``slots`` is the runner's
    advertised capacity (0: not a runner), which the claim planner caps by
    the work a peer has been seen to complete; the runner keeps ``free``
    (idle slots) and ``backlog`` (claimed, not started) current.
    """
    return {
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "platform": current_platform(),
        "cpus": os.cpu_count() or 1,
        "memory": psutil.virtual_memory().total,
        "gpu": bool(shutil.which("nvidia-smi")),
        "slots": slots,
        "free": slots,
        "backlog": 0,
    }


def node_inventory(config: Any) -> dict[str, Any]:
    """This node's inventory: the machine's (:func:`inventory`) and ``[node] labels``.

    One dict, shared by the node and the mesh's presence (the runner keeps
    its live fields current in place).
    """
    runs = "runner" in getattr(config.node, "roles", ())
    inv = inventory(int(getattr(getattr(config, "runner", None), "slots", 1) or 1) if runs else 0)
    inv["labels"] = list(getattr(config.node, "labels", ()))
    return inv
