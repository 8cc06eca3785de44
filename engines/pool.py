"""A warm pool: long-lived sandboxed workers that take tasks over ZeroMQ.

In the spirit of ShockWaves microkernels, each worker process hosts one
engine (see :mod:`engines.worker`) and the pool routes tasks to idle workers
over a ROUTER socket bound to ``ipc://<private temp dir>/pool``.  A task costs
one message each way plus the engine call, instead of a process start; a
batch (:meth:`WarmPool.run_batch`) costs one message per worker each way.

Bridging ZeroMQ to trio: the pool waits on the ROUTER socket's ``ZMQ_FD`` with
``trio.lowlevel.wait_readable`` and receives with ``NOBLOCK``.  We chose this
over a helper thread because a thread would add two cross-thread hand-offs to
every task (tens of microseconds each, plus GIL contention), and a zmq socket
may only be used from one thread anyway; here every socket call happens on
the trio thread.  The catch is that ``ZMQ_FD`` is edge-triggered: it signals
"the socket's state may have changed", and any socket call (a send included)
can consume that signal.  The invariants that keep us from sleeping on queued
messages:

* the reader drains until ``ZMQ_EVENTS`` lacks ``POLLIN`` before each wait;
* after every send made outside the reader, we read ``ZMQ_EVENTS`` and, if a
  message is waiting, cancel the reader's wait so that it drains again.

Workers handle one message (a task or a batch: its inputs count as tasks) at
a time.  A worker is recycled after ``recycle_after`` tasks or when its RSS
(worker + engine child, measured with psutil in the worker after each
message) exceeds ``max_rss_mb``.  A worker that dies mid-task fails that task
(all of its batch) with ``"worker died"`` and is replaced.  A task that
overruns its timeout kills its worker (the engine cannot be interrupted
otherwise) and gets ``"timeout after ... s"``.

Workers run in the engine jail (:mod:`engines.jail`) like cold runs: the
jail's cost (a few milliseconds) is paid once per worker, never per task.
Inside it a worker sees only its home, the engine directory, the Python
prefixes, ``worker.py`` and the pool's socket.  Its pid namespace hides the
daemon's pid, so a worker learns that the daemon died from a lifeline pipe
instead: the pool holds the write end, and the read end reaches end-of-file
when the daemon's process is gone, however it died.

What a pool is built from, :class:`WorkerSpec` and :class:`PoolOptions`, is
in :mod:`engines.pool_spec` (re-exported here).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import trio
import zmq

from .errors import EngineError
from .ledger import GroupLedger
from .native import NativeOptions, SandboxChoice, choose_sandbox, jailed
from .seccomp import open_filter
from .outcome import Outcome
from .pool_spec import PoolOptions, WorkerSpec
from .sandbox import SandboxLimits, clean_env, describe_exit, kill_group, make_preexec

_WORKER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_STDERR_TAIL = 4096


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a :class:`WarmPool`."""

    workers: int
    idle: int
    busy: int
    pending: int
    tasks_ok: int
    tasks_failed: int
    workers_started: int
    workers_recycled: int
    workers_died: int
    network_isolated: bool
    broken: str | None


class _Task:
    """What one message to a worker carries: one input (``T``), or a batch's inputs (``B``)."""
    __slots__ = ("id", "payloads", "batch", "event", "outcomes", "worker")

    def __init__(self, tid: bytes, payloads: list[bytes], batch: bool) -> None:
        self.id = tid
        self.payloads = payloads
        self.batch = batch
        self.event = trio.Event()
        self.outcomes: list[Outcome] | None = None
        self.worker: _Worker | None = None


class _Worker:
    __slots__ = ("id", "proc", "state", "task", "done", "stderr_path", "ready", "fail_reason")

    def __init__(self, wid: bytes, stderr_path: str) -> None:
        self.id = wid
        self.proc: trio.Process | None = None
        self.state = "starting"  # starting | idle | busy | retiring | dead
        self.task: _Task | None = None
        self.done = 0
        self.stderr_path = stderr_path
        self.ready = trio.Event()  # set when ready, or when it died/failed before that
        self.fail_reason: str | None = None


class WarmPool:
    """A pool of warm workers for one engine.  Start with ``nursery.start(pool.serve)``."""

    def __init__(self, spec: WorkerSpec, options: PoolOptions = PoolOptions(),
                 sandbox: NativeOptions = NativeOptions(), *, ledger: GroupLedger | None = None) -> None:
        self.spec = spec
        self.ledger = ledger  # records each worker's group while it lives (see engines.ledger)
        self.options = options
        self.sandbox = sandbox
        self._sock: zmq.Socket | None = None
        self._nursery: trio.Nursery | None = None
        self._workers: dict[bytes, _Worker] = {}
        self._idle: deque[_Worker] = deque()
        self._pending: deque[_Task] = deque()
        self._queued = 0  # inputs in _pending
        self._wait_scope: trio.CancelScope | None = None
        self._ids = itertools.count(1)
        self._tids = itertools.count(1)
        self._home = ""
        self._endpoint = ""
        self._closing = False
        self._broken: str | None = None
        self._start_failures = 0
        self._netns = False
        self._choice: SandboxChoice | None = None
        self._lifeline = -1  # write end of the workers' lifeline pipe, held while serving
        self._lifeline_r = -1
        self._ok = self._failed = self._started = self._recycled = self._died = 0

    def statistics(self) -> PoolStatistics:
        busy = sum(1 for w in self._workers.values() if w.state == "busy")
        return PoolStatistics(len(self._workers), len(self._idle), busy, self._queued, self._ok,
                              self._failed, self._started, self._recycled, self._died, self._netns, self._broken)

    def process_groups(self) -> tuple[int, ...]:
        """Process groups of the live workers (each worker leads its own group,
        which holds its engine child): for a forced shutdown.

        Safe to call from another thread (it only copies and reads).
        """
        return tuple(w.proc.pid for w in tuple(self._workers.values())
                     if w.proc is not None and w.proc.returncode is None)

    async def serve(self, *, task_status: trio.TaskStatus[WarmPool] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, report ready, and route tasks until cancelled.

        ``task_status.started(self)`` is called once every initial worker has
        reported ready.

        Raises:
            EngineError: no initial worker could start (the reason is the
                worker's own, e.g. the engine's import error).

        Cancellation kills every worker's process group, fails tasks still
        queued or in flight with ``"pool stopped"``, closes the socket and
        removes the pool's temporary directory.
        """
        choice = self._choice = await trio.to_thread.run_sync(choose_sandbox, self.sandbox)
        if choice.refusal is not None:
            raise EngineError(choice.refusal)
        self._netns = choice.network_isolated
        self._home = tempfile.mkdtemp(prefix="meshd-pool-", dir=self.sandbox.work_root)
        self._lifeline_r, self._lifeline = os.pipe()  # both close-on-exec; passed to workers by pass_fds
        ctx = zmq.Context(io_threads=1)
        try:
            sock = ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._endpoint = f"ipc://{self._home}/pool"
            sock.bind(self._endpoint)
            if choice.jailed and os.geteuid() == 0:
                # Workers connect as the engine uid.  The socket sits in this
                # pool's 0700 directory, which only the jails bind.
                os.chmod(os.path.join(self._home, "pool"), 0o666)
            self._sock = sock
            failure: str | None = None
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                initial = [await self._spawn() for _ in range(self.options.workers)]
                with trio.move_on_after(self.options.start_timeout_s):
                    for w in initial:
                        await w.ready.wait()
                if not any(w.state in ("idle", "busy") for w in initial):
                    reasons = [w.fail_reason for w in initial if w.fail_reason] or ["timed out"]
                    failure = f"engine failed to start: {reasons[0]}"
                    nursery.cancel_scope.cancel()
                else:
                    task_status.started(self)
                    await trio.sleep_forever()
            # Raised outside the nursery so callers see EngineError, not a group.
            raise EngineError(failure or "pool stopped")
        finally:
            self._closing = True
            for w in list(self._workers.values()):
                if w.proc is not None:
                    kill_group(w.proc.pid)
                self._finish(w.task, Outcome(ok=False, error="pool stopped", runner="native-warm"))
            while self._pending:
                self._finish(self._pending.popleft(), Outcome(ok=False, error="pool stopped", runner="native-warm"))
            self._queued = 0
            # Shielded but bounded: SIGKILLed workers exit at once, unless
            # stuck in the kernel; a stop must not wait on those forever.
            with trio.CancelScope(shield=True) as reap:
                reap.deadline = trio.current_time() + self.options.stop_grace_s
                for w in list(self._workers.values()):
                    if w.proc is not None:
                        await w.proc.wait()
                        self._forget(w)
            self._sock = None
            # destroy(), not term(): term() blocks until every socket is
            # closed, and a socket left open by a failed bind would hang the
            # stop forever; destroy closes them (linger 0) first.
            ctx.destroy(linger=0)
            for fd in (self._lifeline, self._lifeline_r):
                os.close(fd)
            self._lifeline = self._lifeline_r = -1
            shutil.rmtree(self._home, ignore_errors=True)

    async def run(self, task_input: Any, *, timeout_s: float | None = None) -> Outcome:
        """Run one task on a warm worker.

        Many calls may run concurrently; tasks queue for idle workers in
        submission order.  Engine failures, timeouts and dead workers become
        ``ok=False`` outcomes.

        Cancellation: a task still queued is dropped; a task already on a
        worker kills that worker (a replacement is started).
        """
        start = time.monotonic()
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            payload = json.dumps(task_input, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            return Outcome(ok=False, error=f"input is not JSON: {exc}", runner="native-warm")
        timeout = self.spec.resources.timeout_s if timeout_s is None else timeout_s
        (o,) = await self._submit([[payload]], False, timeout, f"timeout after {timeout:g} s")
        return replace(o, duration_s=time.monotonic() - start)

    async def run_batch(self, inputs: list[Any], *, timeout_s: float | None = None) -> list[Outcome]:
        """Run many tasks, one message per worker each way, to share the messaging cost.

        The batch is split into one contiguous chunk per idle worker (one if
        none is idle), each one message queued like a :meth:`run` task.
        Outcomes come in input order, each its own: an input that is not JSON
        or whose engine call raises fails alone.  ``duration_s`` is the
        input's time in the engine (the batch's wall time if unanswered).

        Timeout: ``timeout_s`` (default the spec's) is per input; the batch
        gets ``timeout_s × len(inputs)`` from submission, as if its inputs ran
        one after another.  A chunk's answers are one message, so a chunk
        unanswered by then, or whose worker dies, fails all of its inputs
        (the worker is killed and replaced); chunks answered keep theirs.

        Cancellation, as for :meth:`run`, per chunk: a queued chunk is
        dropped; a chunk on a worker kills that worker (a replacement is
        started).  Answered chunks still count in the statistics.
        """
        start = time.monotonic()
        refusal = self._refusal()
        if refusal is not None:
            return [refusal] * len(inputs)
        outcomes: list[Outcome | None] = [None] * len(inputs)
        payloads: list[bytes] = []
        for i, value in enumerate(inputs):
            try:
                payloads.append(json.dumps(value, allow_nan=False).encode())
            except (TypeError, ValueError) as exc:
                outcomes[i] = Outcome(ok=False, error=f"input is not JSON: {exc}", runner="native-warm")
        if payloads:
            timeout = self.spec.resources.timeout_s if timeout_s is None else timeout_s
            deadline = timeout * len(inputs)
            size = -(-len(payloads) // max(1, sum(w.state == "idle" for w in self._idle)))
            chunks = [payloads[i:i + size] for i in range(0, len(payloads), size)]
            answers = iter(await self._submit(chunks, True, deadline, f"timeout after {deadline:g} s "
                                              f"(a batch of {len(inputs)}, {timeout:g} s per input)"))
            outcomes = [o or next(answers) for o in outcomes]
        return [o if o.duration_s else replace(o, duration_s=time.monotonic() - start)
                for o in outcomes if o is not None]

    # -- internals ------------------------------------------------------------

    def _refusal(self) -> Outcome | None:
        stopped = self._sock is None or self._closing
        if stopped or self._broken is not None:
            return Outcome(ok=False, error="pool is not running" if stopped else self._broken, runner="native-warm")
        return None

    async def _submit(self, chunks: list[list[bytes]], batch: bool, timeout: float, expired: str) -> list[Outcome]:
        """Queue one message per chunk; the outcomes of every input, in order."""
        tasks = [_Task(next(self._tids).to_bytes(8, "little"), chunk, batch) for chunk in chunks]
        self._pending.extend(tasks)
        self._queued += sum(len(chunk) for chunk in chunks)
        self._dispatch()
        try:
            with trio.move_on_after(timeout):
                for task in tasks:
                    await task.event.wait()
        finally:
            for task in tasks:
                if task.outcomes is None:
                    self._abandon(task)
        for task in tasks:  # a task still without outcomes timed out (a cancellation raised above)
            self._finish(task, Outcome(ok=False, error=expired, runner="native-warm"))
        return [o for task in tasks for o in task.outcomes or ()]

    def _abandon(self, task: _Task) -> None:
        try:
            self._pending.remove(task)
            self._queued -= len(task.payloads)
            return
        except ValueError:
            pass
        w = task.worker
        if w is not None and w.task is task:
            # The engine cannot be interrupted mid-call: kill the worker.
            w.task = None
            w.state = "dead"
            if w.proc is not None:
                kill_group(w.proc.pid)

    def _finish(self, task: _Task | None, outcomes: list[Outcome] | Outcome) -> None:
        """Settle ``task``: one outcome per input, or one outcome for all of them."""
        if task is None or task.outcomes is not None:
            return
        task.outcomes = outcomes = [outcomes] * len(task.payloads) if isinstance(outcomes, Outcome) else outcomes
        ok = sum(o.ok for o in outcomes)
        self._ok += ok
        self._failed += len(outcomes) - ok
        task.event.set()

    def _send(self, frames: list[bytes]) -> bool:
        assert self._sock is not None
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
            ok = True
        except zmq.ZMQError:  # EHOSTUNREACH: the worker's pipe is gone
            ok = False
        # The send may have consumed the FD's edge: wake the reader if needed.
        if self._wait_scope is not None and self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._wait_scope.cancel()
        return ok

    def _dispatch(self) -> None:
        while self._pending and self._idle:
            w = self._idle.popleft()
            if w.state != "idle":
                continue
            task = self._pending.popleft()
            self._queued -= len(task.payloads)
            w.state = "busy"
            w.task = task
            task.worker = w
            if not self._send([w.id, b"B" if task.batch else b"T", task.id, *task.payloads]):
                w.task = None
                task.worker = None
                self._pending.appendleft(task)
                self._queued += len(task.payloads)
                self._kill(w)

    def _kill(self, w: _Worker) -> None:
        w.state = "dead"
        if w.proc is not None:
            kill_group(w.proc.pid)

    async def _reader(self) -> None:
        sock = self._sock
        assert sock is not None
        fd = sock.getsockopt(zmq.FD)
        while True:
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_message(frames)
            with trio.CancelScope() as scope:
                self._wait_scope = scope
                await trio.lowlevel.wait_readable(fd)
            self._wait_scope = None

    def _on_message(self, frames: list[bytes]) -> None:
        w = self._workers.get(frames[0])
        if w is None or len(frames) < 2:
            return
        kind = frames[1]
        if kind == b"D" and len(frames) == 6:
            self._answered(w, frames[2], [(frames[3], b"", frames[4])], frames[5], batch=False)
        elif kind == b"A" and len(frames) >= 7 and len(frames) % 3 == 1:
            answers = [(frames[i], frames[i + 1], frames[i + 2]) for i in range(4, len(frames), 3)]
            self._answered(w, frames[2], answers, frames[3], batch=True)
        elif kind == b"R":
            if w.state == "starting":
                w.state = "idle"
                self._start_failures = 0
                self._idle.append(w)
                w.ready.set()
                self._dispatch()
        elif kind == b"F":
            w.fail_reason = frames[2].decode("utf-8", "replace") if len(frames) > 2 else "unknown"

    def _answered(self, w: _Worker, tid: bytes, answers: list[tuple[bytes, bytes, bytes]], rss_frame: bytes,
                  batch: bool) -> None:
        """Take a worker's answers (see :func:`_outcome`) to task ``tid``; route the worker's next task."""
        task = w.task
        w.task = None
        w.done += len(answers)
        if task is not None and task.id == tid:
            if task.batch == batch and len(answers) == len(task.payloads):
                self._finish(task, [_outcome(*a) for a in answers])
            else:
                self._finish(task, Outcome(ok=False, error="worker answered out of protocol", runner="native-warm"))
        if w.state != "busy":
            return
        if any(a[0] == b"X" for a in answers):  # the worker is exiting: its engine died or lost sync
            self._died += 1
            w.state = "retiring"
            assert self._nursery is not None
            self._nursery.start_soon(self._replace_after_retire, w)
            return
        rss = int(rss_frame) if rss_frame.isdigit() else 0
        opts = self.options
        if (opts.recycle_after is not None and w.done >= opts.recycle_after) or (
                opts.max_rss_mb is not None and rss > opts.max_rss_mb * 1024 * 1024):
            self._retire(w)
        else:
            w.state = "idle"
            self._idle.append(w)
        self._dispatch()

    def _retire(self, w: _Worker) -> None:
        w.state = "retiring"
        self._recycled += 1
        self._send([w.id, b"S"])
        assert self._nursery is not None
        self._nursery.start_soon(self._replace_after_retire, w)

    async def _replace_after_retire(self, w: _Worker) -> None:
        await self._spawn()
        assert w.proc is not None
        with trio.move_on_after(self.options.stop_grace_s) as scope:
            await w.proc.wait()
        if scope.cancelled_caught:
            kill_group(w.proc.pid)

    async def _spawn(self) -> _Worker:
        n = next(self._ids)
        wid = b"w" + n.to_bytes(4, "big")
        w = _Worker(wid, os.path.join(self._home, f"worker-{n}.stderr"))
        spec = {"mode": self.spec.mode, "cwd": self.spec.cwd, "entry": self.spec.entry,
                "argv": list(self.spec.argv), "stdout_limit": self.sandbox.stdout_limit,
                "parent": os.getpid(), "lifeline": self._lifeline_r}
        res = self.spec.resources
        # RLIMIT_NPROC is the jail's (set inside its user namespace), never the node user's.
        limits = SandboxLimits(memory_mb=res.memory_mb, nofile=max(res.nofile, 64), cpu_s=None,
                               fsize_mb=self.sandbox.fsize_mb, nproc=None, idle=self.sandbox.idle,
                               cgroup_procs=self.sandbox.cgroup_procs or None)
        home = os.path.join(self._home, f"home-{n}")
        os.mkdir(home, 0o700)
        argv = [sys.executable, "-I", _WORKER_PY, self._endpoint, wid.hex(), json.dumps(spec)]
        assert self._choice is not None
        seccomp_fd = None
        if self._choice.jailed:
            if self._choice.seccomp is not None:
                seccomp_fd = open_filter(self._choice.seccomp)
            argv = jailed(self.sandbox, argv, home=home, cwd=self.spec.cwd,
                          ro=(_WORKER_PY, *program_files(self.spec.argv)), rw=(self._endpoint[len("ipc://"):],),
                          seccomp_fd=seccomp_fd)
        self._workers[wid] = w
        with open(w.stderr_path, "wb") as err:
            try:
                w.proc = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.spec.cwd,
                    env=clean_env(home, self.sandbox.path), start_new_session=True, close_fds=True,
                    pass_fds=(self._lifeline_r,) if seccomp_fd is None else (self._lifeline_r, seccomp_fd),
                    preexec_fn=make_preexec(limits, isolate_network=self._netns and not self._choice.jailed))
            except (OSError, subprocess.SubprocessError) as exc:
                del self._workers[wid]
                w.state = "dead"
                w.fail_reason = f"cannot start worker: {exc}"
                w.ready.set()
                self._start_failed(w.fail_reason)
                return w
            finally:
                if seccomp_fd is not None:
                    os.close(seccomp_fd)  # the worker has its own copy (bubblewrap reads it)
        if self.ledger is not None:
            self.ledger.record(w.proc.pid)
        self._started += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._monitor, w)
        return w

    async def _monitor(self, w: _Worker) -> None:
        assert w.proc is not None
        await w.proc.wait()
        kill_group(w.proc.pid)  # the worker's engine child, if it outlived it
        self._forget(w)
        self._workers.pop(w.id, None)
        was = w.state
        w.state = "dead"
        w.ready.set()
        if self._closing:
            return
        if was == "retiring":
            return
        if was == "starting":
            reason = w.fail_reason or f"worker {describe_exit(w.proc.returncode, jailed=self._jailed())}: {self._stderr_tail(w)}"
            w.fail_reason = reason
            self._start_failed(reason)
        elif w.task is not None or was == "busy":
            self._died += 1
            detail = describe_exit(w.proc.returncode, jailed=self._jailed())
            self._finish(w.task, Outcome(ok=False, error=f"worker died ({detail})", stderr=self._stderr_tail(w),
                                       runner="native-warm"))
            w.task = None
        else:
            self._died += 1
        if self._broken is None:
            await self._spawn()

    def _jailed(self) -> bool:
        return self._choice is not None and self._choice.jailed

    def _forget(self, w: _Worker) -> None:
        """Drop a reaped worker's group from the ledger."""
        if self.ledger is not None and w.proc is not None and w.proc.returncode is not None:
            self.ledger.forget(w.proc.pid)

    def _start_failed(self, reason: str) -> None:
        self._start_failures += 1
        if self._start_failures >= self.options.max_start_failures and self._broken is None:
            self._broken = f"engine failed to start: {reason}"
            while self._pending:
                self._finish(self._pending.popleft(), Outcome(ok=False, error=self._broken, runner="native-warm"))
            self._queued = 0

    def _stderr_tail(self, w: _Worker) -> str:
        try:
            with open(w.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _STDERR_TAIL))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def program_files(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The absolute paths a jsonl engine's command names (its program, and its
    script when an interpreter runs it): the jail binds them read-only."""
    return tuple(a for a in argv[:2] if os.path.isabs(a))


def _outcome(status: bytes, seconds: bytes, result: bytes) -> Outcome:
    """One answer of a worker (status, seconds or b"", output JSON | error text) as an outcome."""
    duration = float(seconds) if seconds.replace(b".", b"", 1).isdigit() else 0.0
    if status == b"1":
        try:
            return Outcome(ok=True, output=json.loads(result), duration_s=duration, runner="native-warm")
        except ValueError:
            result = b"output is not JSON"
    return Outcome(ok=False, error=result.decode("utf-8", "replace"), duration_s=duration, runner="native-warm")


__all__ = ["PoolOptions", "PoolStatistics", "WarmPool", "WorkerSpec"]
