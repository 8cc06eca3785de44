"""``meshd trust``: trust scores and bans as this node computes them."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .commands import _client, _closing, _emit


def _format(answer: dict[str, Any]) -> str:
    lines = [f"banned: {', '.join(answer['banned']) or 'none'}"]
    t = answer.get("thresholds", {})
    lines.append(f"trusted after {t.get('trust_after')} consecutive valid results; banned after {t.get('ban_after')} invalid")
    if answer["scores"]:
        lines.append(f"{'peer':54}  {'valid':>5}  {'invalid':>7}  {'streak':>6}  trusted")
        for s in answer["scores"]:
            lines.append(f"{s['peer']:54}  {s['valid']:>5}  {s['invalid']:>7}  {s['streak']:>6}  {'yes' if s['trusted'] else 'no'}")
    return "\n".join(lines)


def cmd_trust(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.trust()
    _emit(args, answer, _format, out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    p = sub.add_parser("trust", parents=[client], help="trust scores and banned peers (the Verifier's view)")
    p.set_defaults(func=cmd_trust)
