"""``meshd pin add|rm|ls`` and ``meshd archive [GENESIS [VERSION]]``: the Archivist from the shell.

Thin clients of ``/v1/pinset`` (:mod:`meshd.api.pinset`), ``GET /v1/pins``
(``pin ls --local``) and ``GET /v1/archive...`` (see
:mod:`meshd.roles.archivist`); ``--json`` prints the raw answer.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from .commands import _client, _closing, _emit
from .format import _table


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def format_pins(answer: dict[str, Any]) -> str:
    pins = answer.get("pins") or []
    rows = [("CID", "PURPOSE", "OBJECT", "PINNED AT")]
    rows += [(str(p.get("cid")), str(p.get("purpose")), str(p.get("genesis") or "-"), _when(p.get("at")))
             for p in pins]
    return _table(rows) + f"\n{len(pins)} pin(s) in the {answer.get('store', '?')} store"


def format_archive(answer: dict[str, Any]) -> str:
    objs = answer.get("objects") or []
    rows = [("OBJECT", "KIND", "NAME", "VERSIONS", "PINNED VERSION", "AT")]
    rows += [(str(o.get("genesis")), str(o.get("kind")), str(o.get("name")), str(o.get("versions")),
              str(o.get("version")), _when(o.get("at"))) for o in objs]
    return _table(rows) if objs else "nothing archived yet"


def format_versions(answer: dict[str, Any]) -> str:
    head = f"{answer.get('kind')}/{answer.get('name')} {answer.get('genesis')}"
    rows = [("VERSION", "AT", "HEIGHT", "HEADS", "")]
    rows += [(str(v.get("version")), _when(v.get("at")), str(v.get("height")), str(len(v.get("heads") or [])),
              "pinned" if v.get("pinned") else "") for v in answer.get("versions") or []]
    holders = answer.get("archivists") or []
    tail = (f"archivists: {len(holders)} (blocks droppable by others at {answer.get('min_archivists')}): "
            + ("yes" if answer.get("droppable") else "no"))
    return "\n".join([head, _table(rows), tail])


def format_version(answer: dict[str, Any]) -> str:
    s = answer.get("summary") or {}
    lines = [f"version {answer.get('version')} of {answer.get('genesis')}",
             f"at {_when(answer.get('at'))}, height {answer.get('height')}, prev {answer.get('prev') or '-'}",
             f"deltas {s.get('deltas')}, elements {s.get('elements')}, missing blocks {s.get('missing')}",
             "heads:"] + [f"  {h}" for h in answer.get("heads") or []]
    for key, n in sorted((s.get("sets") or {}).items()):
        lines.append(f"  set {key}: {n}")
    return "\n".join(lines)


def format_pinset(answer: dict[str, Any]) -> str:
    pins = answer.get("pins") or []
    lines = []
    for p in pins:
        title = f"{p.get('cid')}" + (f" ({p.get('name')})" if p.get("name") else "") + (
            " dataset" if p.get("dataset") else "")
        lines.append(f"{title}: {p.get('state')}, held by {p.get('held')} of {p.get('replicas')} "
                     f"(expires {_when(p.get('expire')) if p.get('expire') else 'never'})")
        rows = [("  ARCHIVIST", "ALLOCATED", "LIVE", "HELD", "BLOCKS", "BYTES", "REPORTED")]
        rows += [(f"  {a}", "yes" if s.get("allocated") else "no", "yes" if s.get("live") else "no",
                  "yes" if s.get("held") else "no", str(s.get("blocks")), str(s.get("bytes")), _when(s.get("at")))
                 for a, s in (p.get("status") or {}).items()]
        lines.append(_table(rows))
    lines.append(f"{len(pins)} pin(s); {len(answer.get('archivists') or {})} live archivist(s)")
    return "\n".join(lines)


def cmd_pin_ls(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        if args.local:
            _emit(args, client.request("GET", "/v1/pins"), format_pins, out)
        else:
            _emit(args, client.request("GET", "/v1/pinset"), format_pinset, out)
    return 0


def cmd_pin_add(args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"target": args.target, "replicas": args.replicas}
    if args.name:
        body["name"] = args.name
    if args.expire is not None:
        body["expire_s"] = args.expire
    with _closing(_client(args)) as client:
        answer = client.request("POST", "/v1/pinset", body)
    _emit(args, answer, lambda a: f"pinned {a.get('cid')} on {a.get('replicas')} archivist(s)"
          + (" (dataset)" if a.get("dataset") else ""), out)
    return 0


def cmd_pin_rm(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.request("DELETE", f"/v1/pinset/{args.cid}")
    _emit(args, answer, lambda a: f"unpinned {a.get('cid')}", out)
    return 0


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 7d)") from None


def cmd_archive(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        if args.genesis is None:
            answer, render = client.request("GET", "/v1/archive"), format_archive
        elif args.version is None:
            answer, render = client.request("GET", f"/v1/archive/{args.genesis}"), format_versions
        else:
            answer, render = client.request("GET", f"/v1/archive/{args.genesis}/{args.version}"), format_version
    _emit(args, answer, render, out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    """Add ``pin`` and ``archive`` to the ``meshd`` parser (see ``cli.EXTENSIONS``)."""
    pin = sub.add_parser("pin", help="the mesh's pinset: keep CIDs and datasets on N archivists").add_subparsers(
        dest="pin_command", required=True, metavar="ACTION")
    p = pin.add_parser("add", parents=[client], help="pin a CID or a dataset on N archivists")
    p.add_argument("target", help="a CID, a dataset's genesis, or <dataset>/<path> (the block linked there)")
    p.add_argument("--replicas", type=int, default=1, help="archivists that keep it (default 1)")
    p.add_argument("--name", default="", help="a name shown by `pin ls`")
    p.add_argument("--expire", type=_seconds, default=None, help="unpin after this long (90s, 15m, 12h, 7d)")
    p.set_defaults(func=cmd_pin_add)
    p = pin.add_parser("rm", parents=[client], help="unpin a CID or dataset")
    p.add_argument("cid")
    p.set_defaults(func=cmd_pin_rm)
    p = pin.add_parser("ls", parents=[client], help="the pinset: each pin's state on each archivist")
    p.add_argument("--local", action="store_true",
                   help="instead, this archivist's own pins (versions, result outputs, engine files)")
    p.set_defaults(func=cmd_pin_ls)

    p = sub.add_parser("archive", parents=[client], help="archived objects, an object's versions, or one version")
    p.add_argument("genesis", nargs="?", help="object (genesis CID); omit to list archived objects")
    p.add_argument("version", nargs="?", help="version root CID; omit to list the object's versions")
    p.set_defaults(func=cmd_archive)
