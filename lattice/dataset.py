"""Datasets: GOHOs addressed by path (``split/results``), as in Computes.

A dataset is a GOHO whose keys are slash-separated paths.  Two writes exist,
matching a task's ``result.action``:

* ``set`` → op ``put``: a register; the value at the path is the write with
  the greatest ``(height, delta CID, index)`` — the same on every replica.
* ``append`` → op ``add``: a grow-only set at the path; read back as a list in
  canonical (encoded-bytes) order, so every replica lists it identically.

Reading a path with appended elements returns the list (plus the register's
value as its first element when both exist).  Reading a prefix that has no
value of its own but has children (``split`` when ``split/results`` exists)
returns an object of the children.
"""

from __future__ import annotations

from typing import Any

from .goho import Replica

SET = "set"
APPEND = "append"


def set_op(path: str, value: Any) -> list[Any]:
    return ["put", _clean(path), value]


def append_op(path: str, value: Any) -> list[Any]:
    return ["add", _clean(path), value]


def write_op(action: str, path: str, value: Any) -> list[Any]:
    if action == SET:
        return set_op(path, value)
    if action == APPEND:
        return append_op(path, value)
    raise ValueError(f"unknown dataset action {action!r}")


def _clean(path: str) -> str:
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid dataset path {path!r}")
    return "/".join(parts)


_MISSING = object()


def get(replica: Replica, path: str) -> Any:
    """The value at ``path``, or None when nothing is there."""
    path = _clean(path)
    state = replica.state
    reg = state.register(path) if state.register_entry(path) is not None else _MISSING
    if state.count(path):
        items = state.members_sorted(path)
        return items if reg is _MISSING else [reg, *items]
    if reg is not _MISSING:
        return reg
    prefix = path + "/"
    children = [k for k in state.keys() if k.startswith(prefix)]
    if not children:
        return None
    out: dict[str, Any] = {}
    for key in children:
        rest = key[len(prefix):].split("/", 1)[0]
        if rest not in out:
            out[rest] = get(replica, prefix + rest)
    return out


def paths(replica: Replica) -> list[str]:
    return replica.state.keys()
