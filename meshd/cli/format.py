"""Human-readable renderings of API answers for the CLI.

Each function takes the JSON the API returned and gives back text; the CLI's
``--json`` flag bypasses all of this and prints the raw answer.  Renderers
use ``.get`` throughout because a newer daemon may add or omit fields and a
display glitch must never become a crash.
"""

from __future__ import annotations

import json
import time
from typing import Any


def _compact(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("/"), str):
        return value["/"]
    return "-" if value is None else _compact(value)


def _table(rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def when(ms: Any) -> str:
    """Epoch milliseconds as local ``YYYY-MM-DD HH:MM:SS.mmm``; ``-`` for anything else."""
    if type(ms) is not int or not 0 < ms < 2**53:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def _short(peer: Any) -> str:
    """A peer id cut to its last 8 characters (``…abcdefgh``), as in most listings."""
    return f"…{peer[-8:]}" if isinstance(peer, str) and len(peer) > 12 else str(peer or "-")


def pretty_json(value: Any) -> str:
    """Indented JSON, the ``--json`` output."""
    return json.dumps(value, indent=2, sort_keys=True)


def format_enqueued(answer: dict[str, Any]) -> str:
    """``cid  state`` per enqueued task."""
    items = answer.get("tasks") if "tasks" in answer else [answer]
    return _table([(str(t.get("cid", "?")), str(t.get("state", "?"))) for t in items or []])


def format_status(status: dict[str, Any]) -> str:
    """A task's state, result link and attempts."""
    lines = [
        f"task:     {status.get('cid', '?')}",
        *([f"name:     {status['name']}"] if status.get("name") else []),
        f"state:    {status.get('state', '?')}",
        f"result:   {_link(status.get('result'))}",
    ]
    if status.get("reason"):
        lines.append(f"reason:   {status['reason']}")
    if status.get("rejected"):
        lines.append(f"rejected: {status['rejected']}")
    v = status.get("verification")
    if isinstance(v, dict):
        lines.append(f"verify:   {v.get('state', '?')}: {v.get('largest_agreement', 0)} of {v.get('results', 0)} "
                     f"results agree (quorum {v.get('quorum', '?')} of {v.get('replicas', '?')})")
        if v.get("warning"):
            lines.append(f"warning:  {v['warning']}")
    attempts = status.get("attempts") or []
    lines.append(f"attempts: {len(attempts)}")
    rows = [("  #", "runner", "started", "finished", "ok", "error")]
    for i, a in enumerate(attempts, 1):
        rows.append((
            f"  {i}",
            str(a.get("runner") or "-"),
            when(a.get("started")),
            when(a.get("finished")),
            {True: "yes", False: "no"}.get(a.get("ok"), "-"),
            str(a.get("error") or ""),
        ))
    if attempts:
        lines.append(_table(rows))
    cks = status.get("checkpoints") or []
    if cks:
        lines.append(f"checkpoints: {len(cks)} (the next runner resumes from the last)")
        ck_rows = [("  attempt", "runner", "saved", "bytes", "state")]
        for c in cks:
            ck_rows.append((f"  {c.get('attempt', '?')}", str(c.get("runner") or "-"), when(c.get("at")),
                            str(c.get("size", "?")), _link(c.get("state"))))
        lines.append(_table(ck_rows))
    for i, a in enumerate(attempts, 1):
        if a.get("stderr"):
            lines.append(f"--- stderr of attempt {i} ---\n{str(a['stderr']).rstrip()}")
    return "\n".join(lines)


def format_results(answer: dict[str, Any]) -> str:
    """Each runner's output for a task."""
    results = answer.get("results") or []
    if not results:
        if answer.get("state") == "failed":
            return f"task {answer.get('task', '?')} failed: {answer.get('reason') or 'no error message'}"
        if answer.get("state") == "cancelled":
            return f"task {answer.get('task', '?')} {answer.get('reason') or 'cancelled'}"
        return f"no results yet for {answer.get('task', 'this task')}"
    blocks = []
    for r in results:
        head = f"runner {r.get('runner', '?')} at {when(r.get('at'))}"
        if r.get("output_cid"):
            head += f"  (output {r['output_cid']})"
        blocks.append(head + "\n" + json.dumps(r.get("output"), indent=2, sort_keys=True))
    return "\n\n".join(blocks)


def format_queue(counts: dict[str, Any]) -> str:
    """Task counts by state, total last."""
    order = ["available", "assigned", "completed", "failed"]
    keys = order + sorted(k for k in counts if k not in order and k != "total") + ["total"]
    return _table([(k, str(counts[k])) for k in keys if k in counts])


def format_task_list(answer: dict[str, Any]) -> str:
    """One line per task (CID, state, name, last runner, last change), plus the cursor for the next page."""
    tasks = answer.get("tasks") or []
    rows = [("cid", "state", "name", "runner", "updated")]
    for t in tasks:
        attempts = [a for a in t.get("attempts") or [] if isinstance(a, dict)]
        last = attempts[-1] if attempts else {}
        rows.append((str(t.get("cid", "?")), str(t.get("state", "?")), str(t.get("name") or "-"),
                     _short(last.get("runner")), when(last.get("finished") or last.get("started"))))
    text = _table(rows) if tasks else "no tasks"
    if answer.get("next"):
        text += f"\n(more: --after {answer['next']})"
    return text


def format_engines(answer: dict[str, Any]) -> str:
    """Name, CID, type and protocol of each engine (``-`` where its manifest is not here)."""
    engines = answer.get("engines") or []
    if not engines:
        return "no engines"
    rows = [("name", "cid", "type", "protocol")]
    for e in engines:
        if isinstance(e, dict):
            rows.append((str(e.get("name") or "?"), str(e.get("cid", "?")), str(e.get("type") or "-"),
                         str(e.get("protocol") or "-")))
        else:
            rows.append((str(e), "", "", ""))
    return _table(rows)


def format_node(info: dict[str, Any]) -> str:
    """Peer id, roles, inventory, addresses and counters."""
    inv = info.get("inventory") or {}
    lines = [
        f"peer id:   {info.get('peer_id', '?')}",
        f"version:   {info.get('version', '?')}",
        f"roles:     {', '.join(info.get('roles') or []) or '-'}",
        "inventory: " + (", ".join(f"{k}={v}" for k, v in inv.items()) or "-"),
        "addresses:",
        *[f"  {a}" for a in info.get("addresses") or []],
    ]
    # The first p2p address is the one the node offers first (meshd.p2p.addresses):
    # what other nodes pass to --bootstrap.
    p2p = [a for a in info.get("addresses") or [] if isinstance(a, str) and "/p2p/" in a]
    if p2p:
        lines.append(f"bootstrap: {p2p[0]}")
    counters = info.get("counters") or {}
    if counters:
        lines.append("counters:")
        lines.append(_table([(f"  {k}", _compact(v)) for k, v in sorted(counters.items())]))
    return "\n".join(lines)


def format_peers(info: dict[str, Any]) -> str:
    """Connected peers as reported in ``/v1/node`` (key ``peers``)."""
    peers = info.get("peers")
    if peers is None:
        return "this daemon does not report peers"
    if not peers:
        return "no peers connected"
    rows = [("peer", "roles", "connected", "seen", "addresses")]
    for p in peers:
        if isinstance(p, dict):
            seen = p.get("last_seen_s")
            rows.append((str(p.get("peer_id", p.get("id", "?"))), ",".join(map(str, p.get("roles") or [])) or "-",
                         {True: "yes", False: "no"}.get(p.get("connected"), "-"),
                         f"{seen:.1f}s ago" if isinstance(seen, (int, float)) else "-",
                         ", ".join(map(str, p.get("addresses") or []))))
        else:
            rows.append((str(p), "-", "-", "-", ""))
    return _table(rows)

