"""``meshd owner``, ``meshd drain [--deadline S]`` and ``meshd resume``: the owner policy and drains.

Thin clients of ``GET /v1/owner``, ``POST /v1/node/drain`` and ``POST
/v1/node/resume`` (see :mod:`meshd.owner.api`); ``--json`` prints the raw answer.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .commands import _client, _closing, _emit


def format_owner(answer: dict[str, Any]) -> str:
    gate = answer.get("gate")
    if gate is None:
        return "this node runs no runner"
    if gate.get("draining"):
        state = "draining"
    elif gate.get("owner_closed"):
        state = "yielding to the owner"
    else:
        state = "open"
    lines = [f"runner: {state}" + (f" ({gate.get('reason')})" if gate.get("reason") else ""),
             f"running {gate.get('running')}, released {gate.get('released')}, vacated {gate.get('vacated')}"]
    policy = answer.get("policy")
    if policy:
        lines.append(f"owner policy {policy.get('preset')}: {policy.get('state')} since "
                     f"{policy.get('since_s', 0):.0f} s; why: {policy.get('why')}")
        for name, value in sorted((policy.get("readings") or {}).items()):
            lines.append(f"  {name}: {'unreadable' if value is None else value}")
    else:
        lines.append("owner policy: none (the server preset: always run)")
    return "\n".join(lines)


def cmd_owner(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.owner()
    _emit(args, answer, format_owner, out)
    return 0


def cmd_drain(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.drain(args.deadline)
    _emit(args, answer, format_owner, out)
    return 0


def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.resume()
    _emit(args, answer, format_owner, out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    """Add ``owner``, ``drain`` and ``resume`` to the ``meshd`` parser (see ``cli.EXTENSIONS``)."""
    p = sub.add_parser("owner", parents=[client], help="the owner policy's state and why")
    p.set_defaults(func=cmd_owner)
    p = sub.add_parser("drain", parents=[client],
                       help="stop claiming, release claimed tasks, vacate running ones after the deadline")
    p.add_argument("--deadline", type=float, default=None, metavar="S",
                   help="seconds running tasks may finish before they are vacated (default 600)")
    p.set_defaults(func=cmd_drain)
    p = sub.add_parser("resume", parents=[client], help="end a drain: claim tasks again")
    p.set_defaults(func=cmd_resume)
