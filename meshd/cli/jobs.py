"""``meshd job …``: submit pipelines and watch them run (a CLI extension module).

Commands::

    meshd job submit PIPELINE.json [--watch]   print the job id (or watch it)
    meshd job watch JOB [--timeout S]          progress on stderr, then the result
    meshd job status JOB                       one progress snapshot
    meshd job list                             jobs this node follows
    meshd job publish-examples                 publish the example engines by name

``watch`` redraws one progress line (``split 1/1  map 5/8  reduce 0/1``) on a
terminal, or writes a line whenever the progress changes otherwise; when the
job completes it prints the final value on stdout (the whole status with
``--json``) and exits 0; a failed job exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from ..errors import ClientError
from ..roles.jobs import progress_of, publish_examples
from . import format as fmt
from ..client import Client
from .commands import _client, _closing, _emit, _read_json_input


def progress_line(status: dict[str, Any]) -> str:
    """``split 1/1  map 3/8  reduce 0/1`` (``?`` for a total not known yet), plus failures."""
    return progress_of(status)


def format_status(status: dict[str, Any]) -> str:
    lines = [f"job:    {status.get('job')} ({status.get('name')})", f"state:  {status.get('state')}",
             f"stages: {progress_line(status)}"]
    if status.get("result") is not None:
        lines.append(f"result: {fmt.pretty_json(status['result'])}")
    for stage in status.get("stages", []):
        if stage.get("blocked"):
            lines.append(f"blocked: {stage.get('name')}: {stage['blocked']}")
    for error in status.get("errors", []):
        lines.append(f"error:  rule {error.get('index')} {error.get('rule') or ''}: {error.get('error')}")
    return "\n".join(lines)


def watch(client: Client, job: str, *, timeout: float, progress: TextIO) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{job}`` until it completes or fails; draw progress on ``progress``.

    Raises:
        ClientError: on timeout, or as the API reports.
    """
    start = time.monotonic()
    interval = 0.1
    tty = progress.isatty()
    last = None
    told = False
    try:
        while True:
            status = client.job(job)
            elapsed = time.monotonic() - start
            line = f"{progress_line(status)}  [{status.get('state')}]"
            if tty:
                progress.write(f"\r\x1b[K{line} {elapsed:5.1f}s")
                progress.flush()
            elif line != last:
                progress.write(f"{line} {elapsed:.1f}s\n")
                progress.flush()
            last = line
            if status.get("state") == "stalled" and not told:
                told = True  # said once; it may still resume if something writes the job's dataset
                reasons = "; ".join(f"{x.get('name')}: {x['blocked']}" for x in status.get("stages", []) if x.get("blocked"))
                progress.write(("\n" if tty else "") + f"job {job} is stalled: {reasons}\n")
                progress.flush()
            if status.get("state") in ("completed", "failed", "cancelled"):
                return status
            if elapsed >= timeout:
                raise ClientError(f"timed out after {timeout:g}s waiting for job {job} ({progress_line(status)})")
            # A local API: poll fast for short jobs, back off to once a second.
            time.sleep(min(interval, max(0.0, timeout - elapsed)))
            interval = min(interval * 1.5, 1.0)
    finally:
        if tty:
            progress.write("\n")
            progress.flush()


def _finish(args: argparse.Namespace, status: dict[str, Any], out: TextIO) -> int:
    if status.get("state") in ("failed", "cancelled"):
        print(format_status(status), file=sys.stderr)
        print(f"error: job {status.get('job')} {status.get('state')}", file=sys.stderr)
        return 1
    print(fmt.pretty_json(status if args.json else status.get("result")), file=out)
    return 0


def evaluator_hint(client: Client, answer: dict[str, Any]) -> str | None:
    """A line for stderr when this node runs no evaluator: whether any peer does (else the job cannot advance)."""
    if answer.get("evaluator"):
        return None
    try:
        peers = client.peers().get("peers") or []
    except ClientError:
        peers = []
    if any("evaluator" in (p.get("roles") or []) for p in peers if isinstance(p, dict)):
        return "note: this node runs no evaluator; a peer that does fires the next stages"
    return ("warning: no node of the mesh runs the evaluator role (this node does not, and no peer in "
            "`meshd peers` does): the job's stages after the first will not fire until one joins "
            "(add \"evaluator\" to [node] roles)")


def cmd_job_submit(args: argparse.Namespace, out: TextIO) -> int:
    body = _read_json_input(args.file)
    with _closing(_client(args)) as client:
        answer = client.submit_job(body)
        hint = evaluator_hint(client, answer)
        if not args.watch:
            _emit(args, answer, lambda a: a["job"], out)
            if hint:
                print(hint, file=sys.stderr)
            return 0
        print(answer["job"], file=sys.stderr)
        if hint:
            print(hint, file=sys.stderr)
        status = watch(client, answer["job"], timeout=args.timeout, progress=sys.stderr)
    return _finish(args, status, out)


def cmd_job_watch(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        status = watch(client, args.job, timeout=args.timeout, progress=sys.stderr)
    return _finish(args, status, out)


def cmd_job_status(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.job(args.job)
    _emit(args, answer, format_status, out)
    return 0


def cmd_job_list(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = {"jobs": client.jobs(limit=args.limit)}

    def render(a: dict[str, Any]) -> str:
        rows = []
        for j in a["jobs"]:
            rows.append(f"{j['job']}  {j['state']:<9}  {j['name']}  {j.get('stages') or ''}".rstrip())
            rows += [f"  blocked: {b}" for b in j.get("blocked") or []]
        return "\n".join(rows) if rows else "no jobs"

    _emit(args, answer, render, out)
    return 0


def cmd_job_cancel(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.cancel_job(args.job, args.reason or "")
    _emit(args, answer, lambda a: f"job {a['job']} cancelled ({a['tasks_cancelled']} open task(s) cancelled)", out)
    return 0


def cmd_job_publish_examples(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = publish_examples(client)
    _emit(args, answer, lambda a: "\n".join(f"{cid}  {name}" for name, cid in a.items()), out)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    """Add ``meshd job …`` to the CLI (called by ``meshd.cli``)."""
    job = sub.add_parser("job", help="pipelines: submit and watch jobs").add_subparsers(
        dest="job_command", required=True, metavar="ACTION")
    p = job.add_parser("submit", parents=[client], help="submit a pipeline file (- for stdin); prints the job id")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--watch", action="store_true", help="then watch it until it finishes")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up watching after S seconds")
    p.set_defaults(func=cmd_job_submit)
    p = job.add_parser("watch", parents=[client], help="show progress until the job finishes, then its result")
    p.add_argument("job")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up after S seconds")
    p.set_defaults(func=cmd_job_watch)
    p = job.add_parser("status", parents=[client], help="a job's progress now")
    p.add_argument("job")
    p.set_defaults(func=cmd_job_status)
    p = job.add_parser("cancel", parents=[client],
                       help="cancel a job: its rules stop firing everywhere, its open tasks are cancelled")
    p.add_argument("job")
    p.add_argument("--reason", default="", help="why (kept with the task cancels)")
    p.set_defaults(func=cmd_job_cancel)
    p = job.add_parser("list", parents=[client], help="jobs this node follows")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_job_list)
    p = job.add_parser("publish-examples", parents=[client],
                       help="publish the example engines (fibsum-*, wordcount-*) by name")
    p.set_defaults(func=cmd_job_publish_examples)
