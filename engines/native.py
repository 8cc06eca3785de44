"""The cold native runner: one sandboxed process per task.

``NativeRunner.run`` starts the engine in the sandbox of
:mod:`engines.sandbox`, writes the task input as JSON on stdin, reads JSON from
stdout and returns an :class:`~engines.outcome.Outcome`.  Engine misbehaviour
(non-zero exit, a signal, invalid or oversize output, a timeout) becomes
``Outcome(ok=False, error=...)``, never an exception.

Every run is jailed (:mod:`engines.jail`: bubblewrap namespaces, an
unprivileged uid, RLIMIT_NPROC, no network, no view of the daemon's home).
A node that cannot build the jail refuses native engines unless its operator
allowed the weak sandbox (``weak_sandbox``: rlimits and a umask only, plus a
network namespace when the node runs as root).

Every run gets a private temporary directory (its ``HOME`` and ``TMPDIR``),
removed when the run ends, and its whole process group is SIGKILLed when the
engine exits, times out, floods stdout or the caller is cancelled, so children
forked by the engine do not outlive the task.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .ledger import GroupLedger
from .manifest import Resources
from .outcome import Outcome
from .jail import JailSpec, dedupe, jail_argv, program_paths, python_paths
from .seccomp import filter_program, open_filter
from .sandbox import (SandboxLimits, clean_env, describe_exit, jail_unavailable, kill_group, make_preexec,
                      network_isolation_available)

_READ = 65536
#: Longest wait for a SIGKILLed engine to be reaped before giving up on it.
_REAP_S = 5.0

#: ``python -c`` shim that runs a protocol-"python" engine cold: argv[1] is
#: ``module:function``; the engine directory is the working directory.
PYTHON_SHIM = (
    "import sys, json, importlib\n"
    "sys.path.insert(0, '.')\n"
    "mod, _, fn = sys.argv[1].partition(':')\n"
    "f = getattr(importlib.import_module(mod), fn)\n"
    "out = f(json.load(sys.stdin))\n"
    "sys.stdout.write(json.dumps(out))\n"
)


@dataclass(frozen=True)
class NativeOptions:
    """Options of the cold runner (and of the sandbox pool workers use).

    Attributes:
        stdout_limit: Largest stdout accepted, bytes; more fails the run.
            Default 16 MiB.
        stderr_limit: Stderr kept in the outcome, bytes (the rest is read
            and dropped).  Default 64 KiB.
        path: ``PATH`` inside the sandbox.  Default ``/usr/local/bin:/usr/bin:/bin``.
        isolate_network: Engines get no network (a new network namespace).
            Default True.  False keeps the host's network in the jail (the
            ``[runner] engine_network`` switch).
        require_network_isolation: In the weak sandbox, refuse to run when
            isolation is wanted but unavailable (it needs root there).
            Default False.
        work_root: Parent of per-run temporary directories; None = system temp.
        fsize_mb: RLIMIT_FSIZE (largest file an engine may write).  Default 1024.
        nproc: RLIMIT_NPROC inside the jail's user namespace: the most
            processes and threads one engine may have.  Default 256.  Not
            applied in the weak sandbox (there it would count every process
            of the node's user).
        idle: Run engines (cold and warm) at the lowest CPU and I/O priority
            (nice 19, ``SCHED_IDLE``, idle I/O class); default true.
        cgroup_procs: The ``cgroup.procs`` file of the engines' cgroup v2
            group (:mod:`engines.cgroup`) every engine process joins before
            it starts; default "" (none: no CPU or memory cap).
        weak_sandbox: When the jail cannot be built (no bubblewrap, user
            namespaces disabled), run native engines anyway with rlimits only.
            Default False: they are refused, with the reason.
        bwrap: The bubblewrap program (looked up on the node's ``PATH``).
            Default ``"bwrap"``.
        engine_uid: The uid engines run as when the node runs as root.
            Default 65534 (nobody).  (A node run by a user keeps that uid,
            without capabilities, in its own user namespace.)
        engine_gid: Their gid when the node runs as root.  Default 65534.
        ro_paths: More host paths every jail sees, read-only (interpreters
            installed outside ``/usr`` and the node's Python).  Default none.
        hide: Host directories no jail may see even under a bound directory:
            the daemon passes its home.  Default none.
        seccomp: Jailed engines get the seccomp filter of
            :mod:`engines.seccomp` when it can be compiled.  Default on
            (off for an engine that needs a denied call, e.g. a profiler's
            ``perf_event_open``).
    """

    stdout_limit: int = 16 * 1024 * 1024
    stderr_limit: int = 64 * 1024
    path: str = "/usr/local/bin:/usr/bin:/bin"
    isolate_network: bool = True
    require_network_isolation: bool = False
    work_root: str | None = None
    fsize_mb: int | None = 1024
    nproc: int = 256
    idle: bool = True
    cgroup_procs: str = ""
    weak_sandbox: bool = False
    bwrap: str = "bwrap"
    engine_uid: int = 65534
    engine_gid: int = 65534
    ro_paths: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    seccomp: bool = True

    def __post_init__(self) -> None:
        if self.stdout_limit < 1 or self.stderr_limit < 0:
            raise ValueError("stdout_limit must be positive and stderr_limit non-negative")
        if not self.path or "\x00" in self.path:
            raise ValueError("path must be a non-empty PATH string")
        if self.fsize_mb is not None and self.fsize_mb < 1:
            raise ValueError("fsize_mb must be positive")
        if self.nproc < 1:
            raise ValueError("nproc must be positive")
        if not 1 <= self.engine_uid < 2**32 - 1 or not 1 <= self.engine_gid < 2**32 - 1:
            raise ValueError("engine_uid and engine_gid must be unprivileged ids (not 0)")
        if not self.bwrap:
            raise ValueError("bwrap must name a program")
        for p in (*self.ro_paths, *self.hide):
            if not os.path.isabs(p):
                raise ValueError(f"ro_paths and hide must be absolute paths, got {p!r}")


@dataclass(frozen=True)
class SandboxChoice:
    """How this node sandboxes native engines, decided once per options.

    Attributes:
        jailed: Engines run in the bubblewrap jail.
        refusal: Why native engines are refused (no jail, no weak sandbox
            allowed), or None.
        network_isolated: Engines have no network.
        seccomp: The compiled seccomp filter jailed engines get
            (:mod:`engines.seccomp`), or None.
    """

    jailed: bool
    refusal: str | None
    network_isolated: bool
    seccomp: bytes | None = None


def choose_sandbox(options: NativeOptions) -> SandboxChoice:
    """Probe (blocking, cached per setting) and decide the sandbox for ``options``."""
    reason = jail_unavailable(options.bwrap, uid=options.engine_uid, gid=options.engine_gid)
    if reason is None:
        return SandboxChoice(True, None, options.isolate_network, filter_program() if options.seccomp else None)
    if not options.weak_sandbox:
        return SandboxChoice(False, f"native engines are refused: the sandbox is unavailable ({reason}); "
                                    "set [runner] weak_sandbox = true to run them with rlimits only", False)
    isolated = options.isolate_network and network_isolation_available()
    if options.isolate_network and options.require_network_isolation and not isolated:
        return SandboxChoice(False, "network isolation is required but unavailable", False)
    return SandboxChoice(False, None, isolated)


def jailed(options: NativeOptions, argv: list[str], *, home: str, cwd: str, ro: tuple[str, ...] = (),
           rw: tuple[str, ...] = (), seccomp_fd: int | None = None) -> list[str]:
    """``argv`` wrapped in the jail for ``options`` (see :mod:`engines.jail`).

    ``home`` must exist; when the node runs as root it is handed to the
    engine uid here, since the engine runs as that uid.
    """
    as_root = os.geteuid() == 0
    if as_root:
        os.chown(home, options.engine_uid, options.engine_gid)
    spec = JailSpec(bwrap=shutil.which(options.bwrap) or options.bwrap, home=home, cwd=cwd,
                    ro=dedupe((*python_paths(), *program_paths(argv), *options.ro_paths, *ro)), rw=rw,
                    hide=options.hide, network=not options.isolate_network, nproc=options.nproc,
                    as_root=as_root, uid=options.engine_uid, gid=options.engine_gid, seccomp_fd=seccomp_fd)
    return jail_argv(argv, spec)


@dataclass(frozen=True)
class NativeStatistics:
    """Counters of a :class:`NativeRunner` since it was built."""

    runs: int
    ok: int
    failed: int
    timeouts: int
    running: int
    network_isolated: bool | None
    """True/False once probed (first run); None before."""
    jailed: bool | None = None
    """True when engines run in the namespace jail, once probed; None before."""


class NativeRunner:
    """Runs engines cold, one sandboxed process per task.  Safe to share between tasks.

    Args:
        options: Sandbox and output limits.
        ledger: Where each run's process group is recorded while it runs, so
            that the next daemon kills it if this one dies without clean-up
            (see :mod:`engines.ledger`); None records nothing.
    """

    def __init__(self, options: NativeOptions = NativeOptions(), *, ledger: GroupLedger | None = None) -> None:
        self.options = options
        self.ledger = ledger
        self._runs = self._ok = self._failed = self._timeouts = self._running = 0
        self._choice: SandboxChoice | None = None
        self._groups: set[int] = set()  # process groups of runs in flight

    def statistics(self) -> NativeStatistics:
        c = self._choice
        return NativeStatistics(self._runs, self._ok, self._failed, self._timeouts, self._running,
                                None if c is None else c.network_isolated, None if c is None else c.jailed)

    def process_groups(self) -> tuple[int, ...]:
        """Process groups of the engines running now (for a forced shutdown).

        Safe to call from another thread: one atomic copy of a set of ints.
        """
        return tuple(self._groups)

    async def sandbox(self) -> SandboxChoice:
        """How runs are sandboxed (probes once, in a thread)."""
        if self._choice is None:
            self._choice = await trio.to_thread.run_sync(choose_sandbox, self.options)
        return self._choice

    async def isolation(self) -> bool:
        """Whether runs get network isolation (probes once, in a thread)."""
        return (await self.sandbox()).network_isolated

    async def run(self, argv: Sequence[str], task_input: Any, *, resources: Resources = Resources(),
                  cwd: str | None = None, protocol: str = "json", timeout_s: float | None = None,
                  runner: str = "native-cold", env: dict[str, str] | None = None,
                  rw: tuple[str, ...] = ()) -> Outcome:
        """Run ``argv`` once with ``task_input`` as JSON on stdin.

        ``rw`` names host directories the engine may write, bound into the
        jail at the same place (the task's checkpoint directory).

        Args:
            argv: Program and arguments (the program path must be absolute or
                relative to ``cwd``).
            task_input: A JSON-serializable value.
            resources: Limits; ``resources.timeout_s`` unless ``timeout_s`` is given.
            cwd: Working directory (the engine's directory), default the run's
                temporary directory.
            protocol: ``"json"`` (whole stdout is one document) or ``"jsonl"``
                (one line in, the first line out).
            timeout_s: Overrides ``resources.timeout_s``.
            env: Variables added to the sandbox's clean environment (the
                task's metadata); they cannot replace ``PATH``, ``HOME`` or ``TMPDIR``.

        Returns:
            The outcome; failures of the engine are ``ok=False``.

        Cancellation kills the engine's process group and removes the
        temporary directory before ``Cancelled`` propagates.
        """
        start = time.monotonic()
        self._runs += 1
        timeout = resources.timeout_s if timeout_s is None else timeout_s
        try:
            payload = json.dumps(task_input, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            self._failed += 1
            return Outcome(ok=False, error=f"input is not JSON: {exc}", runner=runner)
        if protocol == "jsonl":
            payload += b"\n"
        choice = await self.sandbox()
        if choice.refusal is not None:
            self._failed += 1
            return Outcome(ok=False, error=choice.refusal, runner=runner)
        # RLIMIT_NPROC is the jail's (set inside its user namespace), never the node user's.
        limits = SandboxLimits(memory_mb=resources.memory_mb, nofile=resources.nofile, cpu_s=resources.cpu_s,
                               fsize_mb=self.options.fsize_mb, nproc=None, idle=self.options.idle,
                               cgroup_procs=self.options.cgroup_procs or None)
        home = tempfile.mkdtemp(prefix="meshd-run-", dir=self.options.work_root)
        self._running += 1
        seccomp_fd: int | None = None
        try:
            if choice.jailed and argv and os.path.isabs(argv[0]) and not os.access(argv[0], os.X_OK):
                # Inside the jail this would be prlimit's exec error; say it as a plain start would.
                outcome = Outcome(ok=False, error=f"cannot start engine: {argv[0]} is not an executable file",
                                  runner=runner)
            else:
                if choice.jailed:
                    if choice.seccomp is not None:
                        seccomp_fd = open_filter(choice.seccomp)
                    argv = jailed(self.options, list(argv), home=home, cwd=cwd or home, rw=rw, seccomp_fd=seccomp_fd)
                netns = choice.network_isolated and not choice.jailed
                outcome = await self._run_in(argv, payload, home, cwd or home, limits, netns, timeout, protocol,
                                             runner, choice.jailed, env or {}, seccomp_fd)
        finally:
            self._running -= 1
            if seccomp_fd is not None:
                os.close(seccomp_fd)
            # Sync rmtree on purpose: it must also run when we are cancelled.
            shutil.rmtree(home, ignore_errors=True)
        outcome = _with_duration(outcome, time.monotonic() - start)
        if outcome.ok:
            self._ok += 1
        else:
            self._failed += 1
            if outcome.error and outcome.error.startswith("timeout"):
                self._timeouts += 1
        return outcome

    async def _run_in(self, argv: Sequence[str], payload: bytes, home: str, cwd: str, limits: SandboxLimits,
                      isolated: bool, timeout: float, protocol: str, runner: str, jail: bool,
                      env: dict[str, str], seccomp_fd: int | None = None) -> Outcome:
        opts = self.options
        try:
            proc = await trio.lowlevel.open_process(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                env={**env, **clean_env(home, opts.path)}, start_new_session=True, close_fds=True,
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
                preexec_fn=make_preexec(limits, isolate_network=isolated))
        except (OSError, subprocess.SubprocessError) as exc:
            return Outcome(ok=False, error=f"cannot start engine: {exc}", runner=runner)
        # No checkpoint between the start and the try/finally below, so a
        # cancellation cannot leave the group unkilled.
        self._groups.add(proc.pid)
        if self.ledger is not None:
            self.ledger.record(proc.pid)
        out = bytearray()
        err = bytearray()
        flooded = False

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                await proc.stdin.send_all(payload)
                await proc.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the engine exited or closed stdin without reading: its exit status tells

        async def read_out() -> None:
            nonlocal flooded
            assert proc.stdout is not None
            while chunk := await proc.stdout.receive_some(_READ):
                out.extend(chunk)
                if len(out) > opts.stdout_limit:
                    flooded = True
                    kill_group(proc.pid)
                    return

        async def read_err() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.receive_some(_READ):
                room = opts.stderr_limit - len(err)
                if room > 0:
                    err.extend(chunk[:room])

        try:
            with trio.move_on_after(timeout) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    nursery.start_soon(read_out)
                    nursery.start_soon(read_err)
                    await proc.wait()
                    # Stragglers the engine forked would hold the pipes open.
                    kill_group(proc.pid)
        finally:
            # Shielded but bounded: after SIGKILL the group leader exits at
            # once (unless stuck in the kernel, in uninterruptible sleep).
            kill_group(proc.pid)
            with trio.CancelScope(shield=True) as reap:
                reap.deadline = trio.current_time() + _REAP_S
                await proc.wait()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
            if proc.returncode is not None:
                self._groups.discard(proc.pid)
                if self.ledger is not None:
                    self.ledger.forget(proc.pid)
        stderr = err.decode("utf-8", "replace")
        if proc.returncode is None:
            return Outcome(ok=False, error=f"engine did not exit within {_REAP_S:g} s of SIGKILL", stderr=stderr,
                           runner=runner)
        if scope.cancelled_caught:
            return Outcome(ok=False, error=f"timeout after {timeout:g} s", stderr=stderr, runner=runner)
        if flooded:
            return Outcome(ok=False, error=f"output exceeds {opts.stdout_limit} bytes", stderr=stderr, runner=runner)
        if proc.returncode != 0:
            return Outcome(ok=False, error=describe_exit(proc.returncode, jailed=jail), stderr=stderr, runner=runner)
        data = bytes(out)
        if protocol == "jsonl":
            data = data.split(b"\n", 1)[0]
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return Outcome(ok=False, error="output is not JSON", stderr=stderr, runner=runner)
        return Outcome(ok=True, output=value, stderr=stderr, runner=runner)


def _with_duration(outcome: Outcome, duration: float) -> Outcome:
    return Outcome(ok=outcome.ok, output=outcome.output, error=outcome.error, stderr=outcome.stderr,
                   duration_s=duration, runner=outcome.runner, extra=outcome.extra)


def check_timeout(value: float | None) -> None:
    """Validate a caller-supplied timeout."""
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValueError("timeout_s must be a positive finite number")


__all__ = ["PYTHON_SHIM", "NativeOptions", "NativeRunner", "NativeStatistics", "SandboxChoice", "choose_sandbox",
           "jailed"]
