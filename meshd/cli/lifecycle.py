"""``meshd cancel CID`` and ``meshd retry CID``: a task's lifecycle.

Thin clients of ``POST /v1/tasks/{cid}/cancel`` and ``/retry`` (see
:mod:`meshd.api.lifecycle`); ``--json`` prints the task's status after.
``meshd job cancel`` is in :mod:`meshd.cli.jobs`.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from . import format as fmt
from .commands import _client, _closing, _emit


def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.cancel(args.cid, args.reason or "")
    _emit(args, answer, fmt.format_status, out)
    return 0


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.retry(args.cid)
    _emit(args, answer, fmt.format_status, out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    """Add ``cancel`` and ``retry`` to the ``meshd`` parser (see ``cli.EXTENSIONS``)."""
    p = sub.add_parser("cancel", parents=[client],
                       help="cancel a task: its engine stops wherever it runs, nothing claims it again")
    p.add_argument("cid")
    p.add_argument("--reason", default="", help="why (shown in the task's status)")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("retry", parents=[client],
                       help="make a failed or cancelled task available again, with fresh attempts")
    p.add_argument("cid")
    p.set_defaults(func=cmd_retry)
