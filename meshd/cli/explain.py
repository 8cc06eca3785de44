"""``meshd explain CID [--depth N]``: the lineage of a task, result, dataset version or engine.

Renders ``GET /v1/explain/{cid}`` (see :mod:`meshd.api.lineage`) as an
indented tree: the engine with its signatures, the inputs with their
versions and the tasks that wrote them (recursively), the runners, the
results, the verdict, and the job stage whose rule made the task.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .commands import _client, _closing, _emit
from .format import _compact, when


def _short(peer: Any) -> str:
    return f"…{peer[-8:]}" if isinstance(peer, str) and len(peer) > 12 else str(peer)


def _engine(e: dict[str, Any] | None, pad: str) -> list[str]:
    if not e:
        return [f"{pad}engine: none named"]
    lines = [f"{pad}engine {e.get('name') or '?'} {e['cid']} ({e.get('type') or 'not available here'})"]
    for s in e.get("signatures", []):
        if "error" in s:
            lines.append(f"{pad}  signature {s['cid']}: unreadable ({s['error']})")
            continue
        ok = "valid" if s.get("valid") else "INVALID"
        trust = "trusted here" if s.get("trusted_here") else "not trusted here"
        lines.append(f"{pad}  signed by {s.get('peer_id')} (key {s['publisher'][:16]}…): {ok}, {trust}")
    if not e.get("signatures"):
        lines.append(f"{pad}  no signatures")
    return lines


def _writers(w: dict[str, Any] | None, pad: str) -> list[str]:
    if not w or not w.get("total"):
        return [f"{pad}written by: no task of this node's queue"]
    lines = [f"{pad}written by {w['total']} task(s)" + (f", {len(w['tasks'])} shown" if len(w["tasks"]) < w["total"]
                                                         else "") + ":"]
    for t in w["tasks"]:
        lines += render(t, pad + "  ") if "state" in t else [f"{pad}  task {t['cid']} (--depth to expand)"]
    return lines


def render(x: dict[str, Any], pad: str = "") -> list[str]:
    """The lines of one explained node, indented by ``pad``."""
    kind = x.get("kind")
    if kind == "engine":
        return _engine(x, pad)
    if kind == "result":
        lines = [f"{pad}output {x['cid']}: {x['total']} result record(s)"]
        for r in x["results"]:
            lines.append(f"{pad}  by {r['runner']} at {when(r['at'])}"
                         + (f" ({r['duration_s']} s)" if r.get("duration_s") is not None else "") + " for:")
            lines += render(r["task"], pad + "    ")
        return lines
    if kind in ("dataset", "dataset_version"):
        lines = [f"{pad}{'dataset' if kind == 'dataset' else 'version ' + x['cid'] + ' of dataset'} "
                 f"{x.get('name')} {x['dataset']}", f"{pad}  version now: {', '.join(x.get('version') or []) or '-'}"]
        if kind == "dataset_version":
            lines.append(f"{pad}  written by peer {x.get('author')} at height {x.get('height')}: "
                         f"{', '.join(x.get('paths') or []) or 'no paths'}")
        if x.get("job"):
            lines.append(f"{pad}  job {x['job']['name']} (stages {', '.join(map(str, x['job']['stages']))})")
        return lines + _writers(x.get("writers"), pad + "  ")
    # a task
    head = f"{pad}task {x['cid']}" + (f" {x['name']!r}" if x.get("name") else "") + f" {x.get('state') or 'unknown'}"
    lines = [head]
    pad2 = pad + "  "
    if x.get("error"):
        return lines + [f"{pad2}{x['error']}"]
    if x.get("reason"):
        lines.append(f"{pad2}failed: {x['reason']}")
    made = x.get("made_by")
    lines.append(f"{pad2}made by job {made['job_name']} ({made['job']}) stage {made['stage']}, rule: {made['rule']}"
                 if made else f"{pad2}made by: enqueued directly (no job rule fires it)")
    lines += _engine(x.get("engine"), pad2)
    inp = x.get("input")
    if inp is None:
        lines.append(f"{pad2}input: none")
    elif "value" in inp:
        lines.append(f"{pad2}input value {_compact(inp['value'], 120)}")
    else:
        lines.append(f"{pad2}input dataset {inp.get('dataset_name') or ''} {inp['dataset']} path {inp['path']!r}")
        lines.append(f"{pad2}  version now: {', '.join(inp.get('version') or []) or 'not followed here'}")
        lines += _writers(inp.get("writers"), pad2 + "  ")
    dest = x.get("destination")
    if dest:
        lines.append(f"{pad2}output {dest['action']}s {dest['dataset']} path {dest['path']!r}")
    for a in x.get("attempts", []):
        ok = {True: "ok", False: f"failed: {a.get('error')}", None: "running"}[a.get("ok")]
        lines.append(f"{pad2}attempt {a.get('attempt')} on {a.get('runner')} "
                     f"{when(a.get('started'))} → {when(a.get('finished'))}: {ok}")
    for r in x.get("results", []):
        lines.append(f"{pad2}result {r['output']} by {_short(r['runner'])} at {when(r['at'])}")
    v = x.get("verdict")
    if v:
        lines.append(f"{pad2}verdict by {v.get('verifier') or v.get('by') or '?'}: "
                     f"valid {', '.join(map(_short, v.get('valid', [])))}; "
                     f"invalid {', '.join(map(_short, v.get('invalid', []))) or 'none'}")
    return lines


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.explain(args.cid, depth=args.depth)
    _emit(args, answer, lambda a: "\n".join(render(a)), out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    p = sub.add_parser("explain", parents=[client],
                       help="the lineage of a task, result, dataset version or engine")
    p.add_argument("cid")
    p.add_argument("--depth", type=int, default=1, help="levels of inputs to explain (0-5, default 1)")
    p.set_defaults(func=cmd_explain)
