"""The ``meshd`` command line.

``meshd init`` and ``meshd run`` manage the local node; every other command is
a thin client of the local HTTP API (``/v1``).  This is the only module in the
package that reads environment variables: ``MESHD_HOME`` picks the home when
``--home`` is not given (default ``~/.meshd``).

Exit codes: 0 success, 1 a failed request or a refused operation (message
on stderr, never a traceback), 2 bad usage or a missing optional component.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..api import address
from ..client import Client
from ..errors import ClientError, MeshdError
from ..home import DEFAULT_HOME, Home, init_home
from . import format as fmt
from .progress import Progress

BENCHES = ("lattice", "engines", "mesh", "spread", "membership", "ipfs", "owner")
DEFAULT_API = "127.0.0.1:7600"
_TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: Most tasks one results stream follows (``meshd.api.lifecycle.MAX_STREAM_TASKS``).
STREAM_MAX_TASKS = 1000
_SPINNER = "|/-\\"


# ----------------------------------------------------------------- client


def _follow(bar: Progress) -> Callable[[int, int], None]:
    """An upload callback that moves ``bar`` as the client sends the body."""
    def on_upload(sent: int, total: int) -> None:
        bar.total = total
        bar.update(sent)
    return on_upload


def _resolve_home(args: argparse.Namespace) -> Home:
    # The only place that reads the environment (STYLE: only the CLI does).
    raw = args.home or os.environ.get("MESHD_HOME") or DEFAULT_HOME
    return Home(Path(raw).expanduser())


def _client(args: argparse.Namespace) -> Client:
    """A client of the daemon: ``--api``, else the address a running daemon
    recorded in ``<home>/api``, else the config's ``[api] listen``."""
    home = _resolve_home(args)
    listen = args.api
    token = None
    running = address.read_live(home.path) if listen is None else None
    if home.config_path.exists():
        if listen is None and running is None:
            listen = home.load_config().api.listen
        if home.token_path.exists():
            try:
                token = home.read_token()
            except MeshdError:
                token = None  # the API's 401 (with a hint below) will explain
    url = running.url if running is not None else address.client_url(listen or DEFAULT_API)
    return Client(url, token, timeout=args.timeout_http)


def _emit(args: argparse.Namespace, answer: Any, render: Any, out: TextIO) -> None:
    print(fmt.pretty_json(answer) if args.json else render(answer), file=out)


# ----------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    home = _resolve_home(args)
    overrides: dict[str, dict[str, Any]] = {}
    if args.api:
        overrides["api"] = {"listen": args.api}
    if args.listen:
        overrides["p2p"] = {"listen": list(args.listen)}
    if args.preset == "auto":
        from ..owner.signals import detect_preset

        preset, why = detect_preset()
    else:
        preset, why = args.preset, "chosen with --preset"
    overrides["owner"] = {"preset": preset}
    init_home(home.path, force=args.force, **overrides)
    identity = home.load_identity()
    if args.json:
        print(fmt.pretty_json({"home": str(home.path), "peer_id": identity.peer_id, "owner_preset": preset,
                               "owner_preset_why": why}), file=out)
    else:
        print(f"initialised {home.path}\npeer id: {identity.peer_id}\n"
              f"owner preset: {preset} ({why}; change it in [owner] preset)", file=out)
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    home = _resolve_home(args)
    home.require_initialised()
    overrides: dict[str, dict[str, Any]] = {}
    if args.api:
        overrides["api"] = {"listen": args.api}
    if args.listen or args.bootstrap:
        overrides["p2p"] = {}
        if args.listen:
            overrides["p2p"]["listen"] = list(args.listen)
        if args.bootstrap:
            overrides["p2p"]["bootstrap"] = list(args.bootstrap)
    config = home.load_config(overrides)  # fail fast, before importing the daemon
    if os.environ.get("DOCKER_HOST") and not config.docker.host:
        # Only the CLI reads the environment: hand DOCKER_HOST to the daemon as config.
        overrides["docker"] = {"host": os.environ["DOCKER_HOST"]}
        config = home.load_config(overrides)
    from ..runtime.logs import configure_logging

    configure_logging(config.log.level)
    try:
        daemon = importlib.import_module("meshd.daemon")
    except ModuleNotFoundError as exc:
        if exc.name != "meshd.daemon":
            raise
        print("error: this meshd build has no daemon (meshd.daemon is missing)", file=sys.stderr)
        return 2
    result = daemon.run(home.path, overrides)
    return result if isinstance(result, int) else 0


def _read_json_input(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ClientError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(f"{source} is not valid JSON: {exc}") from None


def cmd_enqueue(args: argparse.Namespace, out: TextIO) -> int:
    body = _read_json_input(args.file)
    if isinstance(body, list):
        body = {"tasks": body}
    with _closing(_client(args)) as client:
        answer = client.request("POST", "/v1/tasks", body)  # the whole answer (states), not only the CIDs
        if args.wait:
            states = _wait_for_all(client, [t["cid"] for t in answer.get("tasks", [answer])], args.timeout, sys.stderr)
            for t in answer.get("tasks", [answer]):
                t["state"] = states[t["cid"]]
    _emit(args, answer, fmt.format_enqueued, out)
    failed = [t["cid"] for t in answer.get("tasks", [answer]) if t.get("state") in ("failed", "cancelled")]
    if args.wait and failed:
        print(f"error: {len(failed)} task(s) did not complete (see `meshd status CID`)", file=sys.stderr)
        return 1
    return 0


def _wait_for_all(client: Client, cids: list[str], timeout: float, progress: TextIO) -> dict[str, str]:
    """Follow the tasks until all are completed, failed or cancelled; a bar on ``progress`` (a TTY only).

    One results stream per 1,000 tasks (``Client.stream_results``), so a
    thousand tasks cost one request, not a thousand polls a second.
    """
    states: dict[str, str] = {}
    pending = list(dict.fromkeys(cids))
    deadline = time.monotonic() + timeout
    with Progress(progress, len(pending), "waiting") as bar:
        for i in range(0, len(pending), STREAM_MAX_TASKS):
            try:
                for answer in client.stream_results(pending[i:i + STREAM_MAX_TASKS],
                                                    timeout=max(0.1, deadline - time.monotonic())):
                    states[answer["task"]] = answer["state"]
                    failed = sum(1 for s in states.values() if s in ("failed", "cancelled"))
                    bar.update(len(states), f"{failed} failed" if failed else "")
            except ClientError as exc:
                if exc.code != "timeout":
                    raise
                raise ClientError(f"timed out after {timeout:g}s: {len(pending) - len(states)} task(s) "
                                  "still pending") from None
    return states


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.status(args.cid)
    _emit(args, answer, fmt.format_status, out)
    return 0


def cmd_tasks(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.tasks(args.state, limit=args.limit, after=args.after)
    _emit(args, answer, fmt.format_task_list, out)
    return 0


def _wait_for_task(client: Client, cid: str, timeout: float, progress: TextIO) -> dict[str, Any]:
    """Poll the task until it completes or fails, drawing a spinner on ``progress``."""
    start = time.monotonic()
    interval = 0.1
    tick = 0
    tty = progress.isatty()
    last_state = None
    try:
        while True:
            status = client.status(cid)
            state = status.get("state")
            elapsed = time.monotonic() - start
            if tty:
                progress.write(f"\r{_SPINNER[tick % 4]} {cid[:16]}… {state} {elapsed:5.1f}s ")
                progress.flush()
            elif state != last_state:
                progress.write(f"waiting: {cid} {state} after {elapsed:.1f}s\n")
            last_state, tick = state, tick + 1
            if state in _TERMINAL_STATES:
                return status
            if elapsed >= timeout:
                raise ClientError(f"timed out after {timeout:g}s waiting for {cid} (state: {state})")
            # Polling a local API: start fast for quick tasks, back off to 1s.
            time.sleep(min(interval, max(0.0, timeout - elapsed)))
            interval = min(interval * 1.5, 1.0)
    finally:
        if tty:
            progress.write("\r\x1b[K")
            progress.flush()


def cmd_result(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        status = None
        if args.wait:
            status = _wait_for_task(client, args.cid, args.timeout, sys.stderr)
        answer = client.results(args.cid)
    state = (status or answer).get("state")
    failed = state in ("failed", "cancelled")
    if failed and not answer.get("results") and not args.json:
        # Nothing to show but the error (no "no results yet" first).
        last = ((status or {}).get("attempts") or [{}])[-1]
        reason = (status or {}).get("reason") or answer.get("reason") or last.get("error") or "no error message"
        print(f"error: task {state}: {reason}" if state == "failed" else f"error: task {reason}", file=sys.stderr)
        return 1
    _emit(args, answer, fmt.format_results, out)
    if failed:
        last = ((status or {}).get("attempts") or [{}])[-1]
        print(f"error: task {state}: {(status or {}).get('reason') or answer.get('reason') or last.get('error')}",
              file=sys.stderr)
        return 1
    return 0


def cmd_queue(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.queue()
    _emit(args, answer, fmt.format_queue, out)
    return 0


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ClientError(f"{what} is not valid JSON ({exc}); quote strings, e.g. '\"text\"'") from None


def cmd_dataset(args: argparse.Namespace, out: TextIO) -> int:
    """``meshd dataset create|get|set|append``: the ``/v1/datasets`` routes."""
    with _closing(_client(args)) as client:
        if args.dataset_command == "create":
            body: dict[str, Any] = {}
            if args.name:
                body["name"] = args.name
            if args.value is not None:
                body["value"] = _json_arg(args.value, "--value")
            answer = client.request("POST", "/v1/datasets", body)
            _emit(args, answer, lambda a: str(a.get("cid", "?")), out)
        elif args.dataset_command == "get":
            path = "/".join(p for p in (args.path or "").split("/") if p)
            answer = client.request("GET", f"/v1/datasets/{args.cid}" + (f"/{path}" if path else ""))
            _emit(args, answer, lambda a: fmt.pretty_json(a.get("value")), out)
        else:
            body = {"value": _json_arg(args.value, "VALUE"), "action": args.dataset_command}
            answer = client.request("PUT", f"/v1/datasets/{args.cid}/{args.path.strip('/')}", body)
            _emit(args, answer, lambda a: f"{a.get('action')} {a.get('dataset')}/{a.get('path')}", out)
    return 0


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def _engine_files(path: Path) -> dict[str, bytes]:
    """Files of an engine: one file, a directory tree, or a tar/zip archive."""
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        }
    data = path.read_bytes()
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    if path.name.endswith(_ARCHIVE_SUFFIXES):
        files = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    extracted = archive.extractfile(member)
                    assert extracted is not None  # isfile() members always have data
                    files[member.name.removeprefix("./")] = extracted.read()
        return files
    return {path.name: data}


def cmd_engine_add(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.path)
    try:
        files = _engine_files(path)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise ClientError(f"cannot read engine {path}: {exc}") from None
    manifest: dict[str, Any] = {}
    if "manifest.json" in files:
        try:
            manifest = json.loads(files.pop("manifest.json"))
        except ValueError as exc:
            raise ClientError(f"{path}/manifest.json is not valid JSON: {exc}") from None
    if not files:
        raise ClientError(f"{path} holds no files")
    executable = args.executable or manifest.get("executable") or (next(iter(files)) if len(files) == 1 else None)
    if executable is None:
        raise ClientError(f"{path} holds several files; name the entry point with --executable")
    name = args.name or manifest.get("name") or path.name.split(".")[0]
    manifest.update({"name": name, "executable": executable})
    if args.interpreter:
        manifest["interpreter"] = args.interpreter
    if args.protocol:
        manifest["protocol"] = args.protocol
    if args.arg:
        manifest["args"] = list(args.arg)
    if args.serve_arg:
        manifest["serve_args"] = list(args.serve_arg)
    if args.entry:
        manifest["entry"] = args.entry
    if args.timeout:
        manifest.setdefault("resources", {})["timeout_s"] = args.timeout
    if args.deterministic:
        manifest["deterministic"] = True
    with _closing(_client(args)) as client, Progress(sys.stderr, 0, f"uploading {name}", bytes_=True) as bar:
        answer = client.publish_engine(manifest, files, on_upload=_follow(bar))
    _emit(args, answer, lambda a: f"engine {name}: {a.get('cid', '?')}", out)
    return 0


def cmd_engine_list(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = {"engines": client.engines()}
    _emit(args, answer, fmt.format_engines, out)
    return 0


def cmd_node(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.node()
    _emit(args, answer, fmt.format_node, out)
    return 0


def cmd_peers(args: argparse.Namespace, out: TextIO) -> int:
    with _closing(_client(args)) as client:
        answer = client.node()
    _emit(args, answer.get("peers", []), lambda _: fmt.format_peers(answer), out)
    return 0


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    module_name = f"meshd.bench.{args.bench}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, "meshd.bench"):
            raise
        print(f"error: benchmark {args.bench!r} is not available in this build ({module_name} is missing)",
              file=sys.stderr)
        return 2
    rest = list(args.rest) + (["--json"] if args.json else [])
    result = module.main(rest)
    return result if isinstance(result, int) else 0


class _closing:
    # contextlib.closing, typed for Client.
    def __init__(self, client: Client) -> None:
        self.client = client

    def __enter__(self) -> Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


# ----------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="meshd home (default: $MESHD_HOME or ~/.meshd)")
    common.add_argument("--json", action="store_true", help="print raw JSON")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--api", metavar="HOST:PORT", help="API address (default: from the home's config)")
    client.add_argument("--timeout-http", type=float, default=30.0, metavar="S", help=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(prog="meshd", description="A peer-to-peer mesh computer.")
    parser.add_argument("--version", action="version", version=f"meshd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help="create a home: config, identity, token")
    p.add_argument("--force", action="store_true", help="replace an existing home's identity and config")
    p.add_argument("--api", metavar="HOST:PORT", help="API listen address to write into config.toml")
    p.add_argument("--listen", action="append", metavar="MULTIADDR", help="p2p listen address (repeatable)")
    p.add_argument("--preset", choices=("auto", "server", "desktop"), default="auto",
                   help="[owner] preset: auto (default) picks desktop on a machine with a readable keyboard/mouse "
                        "or a battery, server otherwise")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    p.add_argument("--api", metavar="HOST:PORT", help="override [api] listen")
    p.add_argument("--listen", action="append", metavar="MULTIADDR", help="override [p2p] listen (repeatable)")
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR", help="override [p2p] bootstrap (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("enqueue", parents=[client], help="enqueue tasks from a JSON file (- for stdin)")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--wait", action="store_true",
                   help="wait until every task completes or fails (a progress bar on a terminal); exit 1 if any failed")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up waiting after S seconds")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("status", parents=[client], help="show a task's state and attempts")
    p.add_argument("cid")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tasks", parents=[client], help="list tasks")
    p.add_argument("--state", choices=["available", "assigned", "completed", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--after", metavar="CID")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("result", parents=[client], help="show a task's results")
    p.add_argument("cid")
    p.add_argument("--wait", action="store_true", help="wait until the task completes or fails")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up waiting after S seconds")
    p.set_defaults(func=cmd_result)

    p = sub.add_parser("queue", parents=[client], help="task counts by state")
    p.set_defaults(func=cmd_queue)

    engine = sub.add_parser("engine", help="manage engines").add_subparsers(
        dest="engine_command", required=True, metavar="ACTION"
    )
    p = engine.add_parser("add", parents=[client], help="add an engine: a file, a directory or a tar/zip")
    p.add_argument("path")
    p.add_argument("--name", help="engine name (default: the file name without extension)")
    p.add_argument("--interpreter", help="run the executable with this interpreter, e.g. python3")
    p.add_argument("--executable", help="entry point inside a directory or archive")
    p.add_argument("--protocol", help="engine protocol: json (default), jsonl or python")
    p.add_argument("--arg", action="append", default=[], help="argument passed to the executable (repeatable)")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="argument that makes a json engine serve JSON lines, for warm pools (e.g. --serve-arg=--jsonl)")
    p.add_argument("--entry", help="module:function for protocol python")
    p.add_argument("--timeout", type=float, help="per-task timeout in seconds (manifest resources.timeout_s)")
    p.add_argument("--deterministic", action="store_true",
                   help="same input, same output: tasks may complete from an earlier result (result cache)")
    p.set_defaults(func=cmd_engine_add)
    p = engine.add_parser("list", parents=[client], help="list engines")
    p.set_defaults(func=cmd_engine_list)

    dataset = sub.add_parser("dataset", help="create, read and write datasets").add_subparsers(
        dest="dataset_command", required=True, metavar="ACTION")
    p = dataset.add_parser("create", parents=[client], help="create a dataset; prints its CID")
    p.add_argument("--name", help="a name (the same name on the same mesh is the same dataset)")
    p.add_argument("--value", metavar="JSON", help='initial value: an object of path -> value, e.g. \'{"n": 10}\'')
    p.set_defaults(func=cmd_dataset)
    p = dataset.add_parser("get", parents=[client], help="read a dataset, or the value at PATH")
    p.add_argument("cid")
    p.add_argument("path", nargs="?", default="")
    p.set_defaults(func=cmd_dataset)
    for action, doc in (("set", "set the value at PATH"), ("append", "append a value to the list at PATH")):
        p = dataset.add_parser(action, parents=[client], help=doc)
        p.add_argument("cid")
        p.add_argument("path")
        p.add_argument("value", metavar="VALUE", help="a JSON value")
        p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("node", parents=[client], help="this node's identity and inventory")
    p.set_defaults(func=cmd_node)
    p = sub.add_parser("peers", parents=[client], help="connected peers")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("bench", parents=[common], help="run a benchmark")
    p.add_argument("bench", choices=BENCHES)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=cmd_bench)
    _register_extensions(sub, common, client)
    return parser


#: CLI modules that add their own commands: each has ``register(sub, common,
#: client)``.  Keeps this file small and lets each feature own its commands.
EXTENSIONS = ("meshd.cli.jobs", "meshd.cli.lifecycle", "meshd.cli.engines", "meshd.cli.archive", "meshd.cli.mesh",
              "meshd.cli.owner", "meshd.cli.top", "meshd.cli.dashboard",
              "meshd.cli.explain")


def _register_extensions(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub, common, client)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, sys.stdout))
    except MeshdError as exc:  # every expected failure; anything else is a bug worth a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

