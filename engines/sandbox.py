"""The process sandbox shared by the cold runner and the warm pool workers.

What an engine process gets:

* its own session and process group (``start_new_session=True``), so
  :func:`kill_group` reaches every child it forks (a child that calls
  ``setsid`` itself escapes; containing those needs cgroups, not done here);
* rlimits set in the child before ``exec``: RLIMIT_AS, RLIMIT_NOFILE,
  RLIMIT_CORE=0, RLIMIT_FSIZE and, for one-shot runs, RLIMIT_CPU (soft limit
  sends SIGXCPU, the hard limit one second later SIGKILL);
* an environment of exactly ``PATH``, ``HOME``, ``TMPDIR`` (both the run's
  private temporary directory) and ``LANG=C.UTF-8``;
* the lowest priority, so the machine's owner never waits for it
  (``SandboxLimits.idle``, default on): nice 19, the ``SCHED_IDLE``
  scheduling class (it runs only when a CPU would otherwise be idle) and the
  idle I/O class (``ioprio_set``, class 3); each is best effort (a kernel
  that refuses one leaves the others);
* with ``SandboxLimits.cgroup_procs``, membership of the engines' cgroup v2
  group and so its CPU and memory caps (:mod:`engines.cgroup`);
* when the node runs as root and the kernel allows it, a fresh network
  namespace (``unshare(CLONE_NEWNET)``: loopback only, down).  Unix sockets
  bound to filesystem paths still work, which is how pool workers talk to
  the pool.  :func:`network_isolation_available` probes this once.

These limits and priorities apply to every engine.  The namespaces, the
private root, the unprivileged uid and RLIMIT_NPROC come from the jail
(:mod:`engines.jail`, bubblewrap); :func:`jail_unavailable` probes once
whether this node can build one.  Without a jail (the operator's explicit
``weak_sandbox``) only what is listed here applies: RLIMIT_NPROC is then not
set, because outside a user namespace it counts every process of the node's
user, not of the engine.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from .jail import JailSpec, jail_argv

_CLONE_NEWNET = 0x40000000
_MiB = 1024 * 1024

_netns_probe: bool | None = None
_libc_unshare: Callable[[int], int] | None = None

#: ``ioprio_set`` system call numbers (no libc wrapper), by machine.
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273, "s390x": 282,
                   "riscv64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_IDLE = 3 << 13  # class IDLE (3) in the top bits, level 0


def _ioprio_fn() -> Callable[[], int] | None:
    """A call that puts the calling process in the idle I/O class, or None
    where the system call number is unknown."""
    nr = _SYS_IOPRIO_SET.get(os.uname().machine)
    if nr is None:
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    return lambda: syscall(nr, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_IDLE)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits applied in the child before exec.  ``None`` means "leave as is"."""

    memory_mb: int | None = 1024
    nofile: int | None = 256
    cpu_s: int | None = None
    fsize_mb: int | None = 1024
    nproc: int | None = None
    idle: bool = True  # nice 19, SCHED_IDLE, idle I/O class
    cgroup_procs: str | None = None  # a cgroup's cgroup.procs the engine joins (engines.cgroup)


def _unshare_fn() -> Callable[[int], int] | None:
    global _libc_unshare
    if _libc_unshare is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.unshare
            fn.argtypes = [ctypes.c_int]
            fn.restype = ctypes.c_int
            _libc_unshare = fn
        except (OSError, AttributeError):
            return None
    return _libc_unshare


def network_isolation_available() -> bool:
    """Whether children can be put in a new network namespace (probed once).

    The probe starts ``/bin/true`` (or ``sys.executable -c pass``) with the same
    ``unshare`` call the sandbox makes; it costs one fork the first time.
    """
    global _netns_probe
    if _netns_probe is None:
        fn = _unshare_fn()
        if fn is None or os.geteuid() != 0:
            _netns_probe = False
        else:
            def probe() -> None:
                if fn(_CLONE_NEWNET) != 0:
                    os._exit(97)
            import sys
            argv = ["/bin/true"] if os.path.exists("/bin/true") else [sys.executable, "-c", "pass"]
            try:
                rc = subprocess.run(argv, preexec_fn=probe, timeout=10, check=False).returncode
            except (OSError, subprocess.SubprocessError):
                rc = -1
            _netns_probe = rc == 0
    return _netns_probe


_jail_probes: dict[tuple[str, bool, int, int], str | None] = {}


def jail_unavailable(bwrap: str, *, uid: int = 65534, gid: int = 65534) -> str | None:
    """Why this node cannot jail engines (see :mod:`engines.jail`), or None when it can.

    Probed once per setting by jailing ``/usr/bin/true`` exactly as engines
    are jailed (a few milliseconds); the reason is bubblewrap's own message,
    e.g. that unprivileged user namespaces are disabled.
    """
    as_root = os.geteuid() == 0
    key = (bwrap, as_root, uid, gid)
    if key not in _jail_probes:
        program = shutil.which(bwrap)
        if program is None:
            _jail_probes[key] = f"{bwrap} (bubblewrap) is not installed"
        else:
            home = tempfile.mkdtemp(prefix="meshd-jail-probe-")
            try:
                if as_root:
                    os.chown(home, uid, gid)
                argv = jail_argv(["true"], JailSpec(bwrap=program, home=home, cwd=home, as_root=as_root,
                                                    uid=uid, gid=gid))
                proc = subprocess.run(argv, capture_output=True, timeout=30, check=False,
                                      env={"PATH": "/usr/bin:/bin"})
                reason = None if proc.returncode == 0 else (
                    f"bubblewrap failed ({describe_exit(proc.returncode)}): "
                    f"{proc.stderr.decode('utf-8', 'replace').strip()[:500]}")
            except (OSError, subprocess.SubprocessError) as exc:
                reason = f"bubblewrap cannot start: {exc}"
            finally:
                shutil.rmtree(home, ignore_errors=True)
            _jail_probes[key] = reason
    return _jail_probes[key]


def make_preexec(limits: SandboxLimits, *, isolate_network: bool) -> Callable[[], None]:
    """Build the ``preexec_fn`` that applies ``limits`` (and the netns) in the child.

    It runs between fork and exec, so it only makes system calls: any Python
    exception it raises makes ``Popen`` fail in the parent.
    """
    unshare = _unshare_fn() if isolate_network else None
    ioprio = _ioprio_fn() if limits.idle else None
    pairs: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    if limits.memory_mb is not None:
        n = limits.memory_mb * _MiB
        pairs.append((resource.RLIMIT_AS, n, n))
    if limits.nofile is not None:
        pairs.append((resource.RLIMIT_NOFILE, limits.nofile, limits.nofile))
    if limits.cpu_s is not None:
        pairs.append((resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1))
    if limits.fsize_mb is not None:
        n = limits.fsize_mb * _MiB
        pairs.append((resource.RLIMIT_FSIZE, n, n))
    if limits.nproc is not None:
        pairs.append((resource.RLIMIT_NPROC, limits.nproc, limits.nproc))

    cgroup_procs = limits.cgroup_procs

    def preexec() -> None:
        if cgroup_procs is not None:
            # Before anything else, so that every process the engine starts is
            # in the group; a refused write fails the start (the caps were asked for).
            fd = os.open(cgroup_procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        if unshare is not None and unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        for which, soft, hard in pairs:
            _, cur_hard = resource.getrlimit(which)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))
        os.umask(0o077)
        if limits.idle:
            # Best effort, each on its own: the run goes on at the priority
            # the kernel allows (no Python-level logging here, between fork and exec).
            try:
                os.setpriority(os.PRIO_PROCESS, 0, 19)
            except OSError:
                pass
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                pass
            if ioprio is not None:
                ioprio()

    return preexec


def clean_env(home: str, path: str) -> dict[str, str]:
    """The whole environment an engine sees."""
    return {"PATH": path, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


def kill_group(pgid: int) -> bool:
    """SIGKILL process group ``pgid``; False when it was already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(returncode: int, *, jailed: bool = False) -> str:
    """``"exit status 3"`` or ``"killed by SIGXCPU"``.

    A jailed engine's status comes through bubblewrap, which exits with
    128 + N when the engine was killed by signal N (as shells do); with
    ``jailed`` those read as the signal.
    """
    if jailed and 128 < returncode <= 128 + 64:
        returncode = 128 - returncode
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


__all__ = ["SandboxLimits", "clean_env", "describe_exit", "jail_unavailable", "kill_group", "make_preexec",
           "network_isolation_available"]
