"""``meshd top``: a live terminal view of the mesh, over the API.

Each refresh reads four routes (``/v1/node``, ``/v1/peers``, ``/v1/queue``
and the assigned tasks from ``/v1/tasks``) into one *snapshot*, and
:func:`render` turns a snapshot (plus the previous one, for throughput) into
text.  Keeping the rendering a pure function of recorded API answers is what
lets it be tested without a terminal or a daemon.

Shown: the node and the mesh, the queue by state with the completion rate
since the last refresh, every peer with its roles and slots (free / total,
and tasks claimed but not started), and the tasks running now.

Usage: ``meshd top [--interval S] [--once]``; Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from ..errors import ClientError
from ..client import Client
from .commands import _client, _closing
from .format import _short, _table

#: Running tasks listed at most.
MAX_RUNNING = 15
_CLEAR = "\x1b[H\x1b[2J"


def snapshot(client: Client) -> dict[str, Any]:
    """One reading of the API: ``{"at", "node", "peers", "queue", "running"}`` (``at`` in epoch seconds)."""
    return {
        "at": time.time(),
        "node": client.node(),
        "peers": client.peers(),
        "queue": client.queue(),
        "running": client.tasks("assigned", limit=MAX_RUNNING),
    }


def _age(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _slots(inv: Any) -> tuple[str, str]:
    if not isinstance(inv, dict) or not inv.get("slots"):
        return "-", "-"
    return f"{inv.get('free', '?')}/{inv.get('slots')}", str(inv.get("backlog", 0))


def render(snap: dict[str, Any], prev: dict[str, Any] | None = None) -> str:
    """The text of one frame.

    Args:
        snap: A :func:`snapshot`.
        prev: The snapshot before it; with it, the throughput (completions
            per second between the two) is shown.
    """
    node, queue = snap.get("node") or {}, snap.get("queue") or {}
    now_ms = int(snap.get("at", 0) * 1000)
    me = node.get("peer_id", "?")
    lines = [f"meshd top  node {node.get('name') or '-'} ({_short(me)})  mesh {node.get('mesh', '?')}  "
             f"roles {','.join(node.get('roles') or []) or '-'}  up {_age(node.get('uptime_s'))}"]
    rate = "-"
    if prev is not None and snap.get("at", 0) > prev.get("at", 0):
        done = (queue.get("completed", 0) + queue.get("failed", 0)
                - (prev.get("queue") or {}).get("completed", 0) - (prev.get("queue") or {}).get("failed", 0))
        rate = f"{max(0, done) / (snap['at'] - prev['at']):.1f}/s"
    lines.append("queue  " + "  ".join(f"{k} {queue.get(k, 0)}" for k in
                                        ("available", "assigned", "completed", "failed", "total"))
                 + f"  throughput {rate}")
    peers = [p for p in (snap.get("peers") or {}).get("peers") or [] if isinstance(p, dict)]
    live = set((snap.get("peers") or {}).get("live_runners") or [])
    rows = [("peer", "roles", "slots", "backlog", "seen", "")]
    free, backlog = _slots(node.get("inventory"))
    rows.append((_short(me), ",".join(node.get("roles") or []) or "-", free, backlog, "-", "this node"))
    for p in sorted(peers, key=lambda p: str(p.get("peer_id"))):
        free, backlog = _slots(p.get("inventory"))
        state = "connected" if p.get("connected") else "not connected"
        if p.get("peer_id") in live:
            state += ", live runner"
        rows.append((_short(p.get("peer_id")), ",".join(p.get("roles") or []) or "-", free, backlog,
                     _age(p.get("last_seen_s")), state))
    lines += ["", f"peers ({len(peers) + 1} with this node)", _table(rows)]
    running = [t for t in (snap.get("running") or {}).get("tasks") or [] if isinstance(t, dict)]
    lines += ["", f"running ({queue.get('assigned', len(running))})"]
    if running:
        rows = [("task", "name", "runner", "for")]
        for t in running:
            attempts = [a for a in t.get("attempts") or [] if isinstance(a, dict)]
            last = attempts[-1] if attempts else {}
            started = last.get("started")
            since = (now_ms - started) / 1000 if type(started) is int else None
            rows.append((str(t.get("cid", "?"))[:20] + "…", str(t.get("name") or "-"), _short(last.get("runner")),
                         _age(since)))
        lines.append(_table(rows))
    else:
        lines.append("  nothing running")
    return "\n".join(lines)


def cmd_top(args: argparse.Namespace, out: TextIO) -> int:
    prev = None
    tty = out.isatty() and not args.once
    with _closing(_client(args)) as client:
        try:
            while True:
                snap = snapshot(client)
                frame = render(snap, prev)
                print((_CLEAR if tty else "") + frame, file=out, flush=True)
                if args.once:
                    return 0
                prev = snap
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    p = sub.add_parser("top", parents=[client], help="a live view of peers, slots, running tasks and throughput")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes (2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=cmd_top)
