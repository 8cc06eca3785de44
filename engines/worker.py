"""A warm pool worker: one long-lived sandboxed process hosting one engine.

Run by :class:`engines.pool.WarmPool` as::

    python -I engines/worker.py <endpoint> <identity-hex> <spec-json>

This file imports only the standard library, ``zmq`` and ``psutil`` (never the
meshd packages): it runs inside the engine sandbox with a clean environment,
so it must work without the repository on ``sys.path``.

``spec`` is ``{"mode": "python", "entry": "mod:fn", "cwd": dir,
"stdout_limit": n}`` (the function is imported in-process) or ``{"mode":
"jsonl", "argv": [...], "cwd": dir, "stdout_limit": n}`` (a long-lived engine
child speaking one JSON object per line), both with ``"parent": pid``, the
daemon's pid: the worker kills its own process group once that process is
gone, busy or not.

Wire protocol over a DEALER socket (the pool is a ROUTER; frames listed
without the identity frame the ROUTER adds).  Each message's first frame is
its type tag; the pool and its workers always come from the same source tree,
so the tag is also the version (a changed layout gets a new tag):

* worker → pool ``[b"R", pid]`` ready; ``[b"F", reason]`` failed to start (exits);
  ``[b"D", task_id, status, output JSON | error text, rss]`` a result, where
  status is ``b"1"`` ok, ``b"0"`` failed, ``b"X"`` failed and the worker is
  exiting (its engine child died or lost sync),
  where ``rss`` is the resident memory of the worker plus its engine child in
  bytes, decimal ASCII;
  ``[b"A", batch_id, rss, (status, seconds, output JSON | error text) × N]``
  the answers to a batch, in input order, each with its own status and the
  seconds it took (decimal ASCII).  After an ``b"X"`` the batch's later
  inputs are not run: they are ``b"0"`` "not run: ..." and the worker exits.
* pool → worker ``[b"T", task_id, input JSON]`` a task; ``[b"B", batch_id,
  input JSON × N]`` a batch of N ≥ 1 tasks, answered by one ``b"A"``;
  ``[b"S"]`` stop.

A worker handles one message at a time (a batch's inputs in order).  An
engine exception fails only its own input.  When its jsonl engine exits or
misbehaves (output over the limit, not one line) it reports the task as failed
and exits, because the engine's stream can no longer be trusted to be in
step; the pool then starts a replacement.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

#: How often the lifeline thread checks that the pool's process is alive.
_PARENT_CHECK_S = 0.25


def _rss(procs: list) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except Exception:  # noqa: BLE001 - a vanished child simply has no RSS
            pass
    return total


def _die_with(parent: int) -> None:
    """Kill this worker's process group (itself and its engine child) as soon
    as ``parent``, the daemon that runs the pool, is gone.

    It runs in a thread of its own because the main thread may be busy for
    the whole task (an engine call or a blocking read of the engine's
    output): a SIGKILLed daemon cleans nothing up, and a busy worker would
    otherwise run until its task ends, however long.  ``getppid`` names the
    parent *process* (a dead daemon's children are reparented to init or a
    subreaper), so it is immune to the thread caveat of ``PR_SET_PDEATHSIG``,
    which fires when the forking *thread* exits: the pool forks from trio's
    thread cache, whose threads come and go (see :mod:`engines.ledger`).
    """
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os.killpg(0, signal.SIGKILL)


def _die_with_lifeline(fd: int, lost: threading.Event) -> None:
    """Like :func:`_die_with`, for a jailed worker: its pid namespace hides
    the daemon, so it waits for end-of-file on the lifeline pipe, whose write
    end only the daemon holds (the kernel closes it however the daemon dies)."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    lost.set()
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    import psutil
    import zmq

    endpoint, ident, spec_json = argv[1], bytes.fromhex(argv[2]), argv[3]
    spec = json.loads(spec_json)
    limit = int(spec.get("stdout_limit", 16 * 1024 * 1024))
    ctx = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, ident)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    # The pool passes its pid: a daemon that died before this line would
    # otherwise leave getppid() == 1 looking like the parent.
    parent = int(spec.get("parent", os.getppid()))
    lost = threading.Event()
    lifeline = spec.get("lifeline")
    jailed = lifeline is not None and os.getppid() != parent
    if jailed:
        threading.Thread(target=_die_with_lifeline, args=(int(lifeline), lost), name="lifeline", daemon=True).start()
    else:
        threading.Thread(target=_die_with, args=(parent,), name="lifeline", daemon=True).start()

    def orphaned() -> bool:
        return lost.is_set() if jailed else os.getppid() != parent
    child = None
    call = None
    try:
        os.chdir(spec["cwd"])
        if spec["mode"] == "python":
            sys.path.insert(0, spec["cwd"])
            mod, _, fn = spec["entry"].partition(":")
            call = getattr(importlib.import_module(mod), fn)
        elif spec["mode"] == "jsonl":
            child = subprocess.Popen(spec["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=sys.stderr.fileno(), cwd=spec["cwd"], close_fds=True)
        else:
            raise ValueError(f"unknown worker mode {spec['mode']!r}")
    except BaseException as exc:  # noqa: BLE001 - report any start failure to the pool, then exit
        traceback.print_exc()
        sock.send_multipart([b"F", f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4000]])
        sock.close()
        ctx.term()
        return 3
    procs = [psutil.Process()] + ([psutil.Process(child.pid)] if child is not None else [])

    def one(payload: bytes) -> tuple[bytes, bytes]:
        """Run one input: (status, output JSON | error text)."""
        if call is not None:
            try:
                return b"1", json.dumps(call(json.loads(payload)), allow_nan=False).encode()
            except Exception as exc:  # noqa: BLE001 - engine errors become failed outcomes
                traceback.print_exc()
                return b"0", f"engine raised {type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4000]
        assert child is not None and child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(payload + b"\n")
            child.stdin.flush()
            line = child.stdout.readline(limit + 1)
        except (BrokenPipeError, OSError):
            line = b""
        if line.endswith(b"\n"):
            return b"1", line[:-1]
        if len(line) > limit:
            return b"X", f"output exceeds {limit} bytes".encode()
        rc = child.poll()
        return b"X", (b"engine exited" + (f" (status {rc})".encode() if rc is not None else b"")
                      if not line else b"engine wrote a partial line and closed stdout")

    sock.send_multipart([b"R", str(os.getpid()).encode()])
    code = 0
    while True:
        # Poll with a timeout only to notice an orphaned worker (the pool
        # process died); a message wakes the poll at once.
        if not sock.poll(1000):
            if orphaned():
                code = 4
                break
            continue
        frames = sock.recv_multipart()
        kind = frames[0]
        if kind == b"S":
            break
        status = b""
        if kind == b"T" and len(frames) == 3:
            status, result = one(frames[2])
            sock.send_multipart([b"D", frames[1], status, result, str(_rss(procs)).encode()])
        elif kind == b"B" and len(frames) >= 3:
            answers: list[bytes] = []
            for payload in frames[2:]:
                if status == b"X":
                    answers += [b"0", b"0", b"not run: the engine exited earlier in the batch"]
                    continue
                began = time.perf_counter()
                status, result = one(payload)
                answers += [status, f"{time.perf_counter() - began:.6f}".encode(), result]
            sock.send_multipart([b"A", frames[1], str(_rss(procs)).encode(), *answers])
        else:
            continue
        if status == b"X":
            code = 5
            break
        if orphaned():
            code = 4
            break
    if child is not None:
        child.kill()
        child.wait()
    sock.close()
    ctx.term()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
