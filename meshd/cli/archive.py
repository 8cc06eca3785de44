"""``meshd pin ls`` and ``meshd archive [GENESIS [VERSION]]``: the Archivist from the shell.

Thin clients of ``GET /v1/pins`` and ``GET /v1/archive...`` (see
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


def cmd_pin_ls(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.request("GET", "/v1/pins")
    _emit(args, answer, format_pins, out)
    return 0


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
    pin = sub.add_parser("pin", help="the archivist's pins").add_subparsers(
        dest="pin_command", required=True, metavar="ACTION")
    p = pin.add_parser("ls", parents=[client], help="list pins (versions, result outputs, engine files)")
    p.set_defaults(func=cmd_pin_ls)

    p = sub.add_parser("archive", parents=[client], help="archived objects, an object's versions, or one version")
    p.add_argument("genesis", nargs="?", help="object (genesis CID); omit to list archived objects")
    p.add_argument("version", nargs="?", help="version root CID; omit to list the object's versions")
    p.set_defaults(func=cmd_archive)
