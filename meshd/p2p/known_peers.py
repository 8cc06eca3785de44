"""``<home>/peers.json``: the members a node last knew, so a restart rejoins without its bootstrap.

A node's ``[p2p] bootstrap`` peers may be long dead when it restarts (the
mesh outlived them).  Every ``SAVE_EVERY_S`` the node writes the live
peers' announced addresses (at most ``MAX_SAVED``, most recently heard
first), and at start it dials them all, at once, beside its bootstrap
peers: any one that answers brings it back into the mesh.

The file is ours, but read as untrusted (a torn or hand-edited file must not
stop a start)::

    {"t": "meshd/known-peers", "v": 1,
     "peers": {"12D3KooW…": ["/ip4/10.0.0.7/tcp/4601", …], …}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from ..runtime.logs import get_logger

__all__ = ["FILE_NAME", "load_untrusted", "save", "serve_known_peers"]

log = get_logger("meshd.p2p")

FILE_NAME: Final = "peers.json"
#: Peers written (the most recently heard first).
MAX_SAVED: Final = 64
#: Addresses kept per peer.
MAX_ADDRS: Final = 8
#: How often the live set is compared with the file, which is rewritten only when it changed
#: (soon after start: a node that crashes early must find its peers again too).
SAVE_EVERY_S: Final = 2.0
_TYPE: Final = "meshd/known-peers"


def load_untrusted(path: Path) -> dict[str, list[str]]:
    """The peers in ``path`` (peer id -> multiaddrs); {} when missing or malformed."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # deep nesting overflows the decoder (fuzzing found it)
        return {}
    if not isinstance(obj, dict) or obj.get("t") != _TYPE or obj.get("v") != 1 or not isinstance(obj.get("peers"), dict):
        return {}
    out: dict[str, list[str]] = {}
    for pid, addrs in list(obj["peers"].items())[:MAX_SAVED]:
        if isinstance(pid, str) and pid and isinstance(addrs, list):
            good = [a for a in addrs if isinstance(a, str) and a.startswith("/")][:MAX_ADDRS]
            if good:
                out[pid] = good
    return out


def save(path: Path, peers: Mapping[str, list[str]]) -> None:
    """Write ``peers`` to ``path`` crash-safely (a temporary file renamed over it)."""
    body = {"t": _TYPE, "v": 1, "peers": {p: list(a)[:MAX_ADDRS] for p, a in list(peers.items())[:MAX_SAVED]}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    # Renamed over the old file only once written: a crash leaves the old
    # file or the new one, never half of either.
    os.replace(tmp, path)


async def serve_known_peers(path: Path, *, me: str, known: Callable[[], Mapping[str, list[str]]],
                            dial: Callable[[str, list[str]], Awaitable[Any]],
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Dial the peers saved in ``path`` once, then keep the file current until cancelled.

    Args:
        path: ``<home>/peers.json``.
        me: Our peer id (never dialled, never saved).
        known: The live peers and their announced addresses, most recently
            heard first (called every ``SAVE_EVERY_S``).
        dial: Connects to one peer at the first of its addresses that
            answers (its failures are its own to log).

    Cancellation stops the dials under way; the file keeps its last write.
    """
    saved = {p: a for p, a in load_untrusted(path).items() if p != me}

    async with trio.open_nursery() as nursery:
        for peer, addrs in saved.items():
            nursery.start_soon(dial, peer, addrs)
        if saved:
            log.info("dialing_known_peers", peers=len(saved))
        task_status.started()
        last = saved
        while True:
            await trio.sleep(SAVE_EVERY_S)
            now = {p: list(a)[:MAX_ADDRS] for p, a in list(known().items())[:MAX_SAVED] if p != me and a}
            if now and now != last:
                try:
                    await trio.to_thread.run_sync(save, path, now)
                    last = now
                except OSError as exc:  # a full disk must not stop the node
                    log.warning("known_peers_not_saved", path=str(path), error=str(exc))
