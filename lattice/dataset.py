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

import bisect
from typing import Any

from .errors import DatasetTooLarge
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
#: Most keys one read walks (a value of more keys is refused, see :class:`DatasetTooLarge`).
MAX_READ_KEYS = 100_000


def _own(state: Any, path: str) -> Any:
    """The value stored at exactly ``path`` (register, appended elements or both), or _MISSING."""
    reg = state.register(path) if state.register_entry(path) is not None else _MISSING
    if state.count(path):
        items = state.members_sorted(path)
        return items if reg is _MISSING else [reg, *items]
    return reg


def get(replica: Replica, path: str, *, max_keys: int = MAX_READ_KEYS) -> Any:
    """The value at ``path`` (the whole dataset for ``""``), or None when nothing is there.

    Linear in the keys under ``path``: they are found by bisection in the
    sorted key list and the object of children is built in one pass (the
    recursive walk this replaces rescanned every key at every level, so 4,000
    nested keys took 4 s).  A key that has a value of its own hides the keys
    below it, as before.

    Raises:
        ValueError: ``path`` is not a dataset path.
        DatasetTooLarge: more than ``max_keys`` keys lie under ``path``.
    """
    state = replica.state
    if path.strip("/"):
        path = _clean(path)
        own = _own(state, path)
        if own is not _MISSING:
            return own
        prefix = path + "/"
    else:
        prefix = ""
    keys = state.keys()  # sorted
    lo = bisect.bisect_left(keys, prefix)
    hi = bisect.bisect_left(keys, path + "0") if prefix else len(keys)  # "0" follows "/"
    if hi - lo > max_keys:
        raise DatasetTooLarge(f"{hi - lo} keys under {path!r} exceed the read budget of {max_keys}")
    below = keys[lo:hi]
    if not below:
        return None
    present = set(below)
    out: dict[str, Any] = {}
    for key in below:
        parts = key[len(prefix):].split("/")
        node, full = out, prefix
        for i, part in enumerate(parts):
            full += part
            if full in present:  # a value of its own: a leaf that hides what is below
                if part not in node or type(node[part]) is dict:
                    node[part] = _own(state, full)
                break
            child = node.get(part)
            if type(child) is not dict:
                if child is not None:
                    break  # under a leaf
                child = node[part] = {}
            node, full = child, full + "/"
    return out


def paths(replica: Replica) -> list[str]:
    return replica.state.keys()
