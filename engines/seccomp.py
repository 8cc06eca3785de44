"""A seccomp filter for jailed native engines: system calls an engine never needs fail with EPERM.

Issue 14, finding 10 ("use seccomp if a maintained library fits").  The jail
(:mod:`engines.jail`) already takes away what namespaces can: the node's
files, its network, its processes, capabilities.  The filter narrows the
kernel surface that remains, the calls that have served container escapes
and need no privilege to reach: ``ptrace`` and ``process_vm_*`` (other
processes of the jail), ``keyctl``/``add_key``/``request_key`` (the kernel
keyring is not namespaced), ``bpf``, ``perf_event_open``, ``userfaultfd``
(a common exploitation primitive), ``mount`` and the new mount API,
``pivot_root``, ``setns``, module and kexec loading, ``open_by_handle_at``
and the like.  A deny list, not an allow list: engines are arbitrary
programs (interpreters, compilers), and an allow list would break them in
ways found only in production.  Calls for another ABI (i386, x32) kill the
process (libseccomp's default for a foreign architecture).

Why this way:

* The filter is compiled by **libseccomp**, the library every container
  runtime uses, through its own Python bindings as Debian ships them
  (``python3-seccomp``, built from libseccomp's source; ``scripts/setup.sh``
  installs it).  Those bindings are an extension module for the system's
  Python, not for the node's (a virtual environment, maybe another patch
  release), so the filter is compiled once by ``/usr/bin/python3`` in a
  subprocess and kept as bytes.  PyPI's ``pyseccomp`` (ctypes, last release
  2021) is unmaintained; hand-written BPF would be ours to maintain.
* bubblewrap installs it (``--seccomp FD``, the compiled program read from a
  file descriptor) as the last step before it runs the jail's first process,
  so it covers everything the engine runs, and ``no_new_privs`` (which
  bubblewrap sets) keeps it for good.
* Where the bindings are missing, engines still run jailed without the
  filter, and :func:`filter_unavailable` says why (``GET /v1/engines/policy``
  shows :func:`status`): the jail is the defence, the filter an extra layer.
"""

from __future__ import annotations

import os
import subprocess

#: System calls that fail with EPERM inside the jail.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "mount", "umount2", "pivot_root", "setns", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "iopl", "ioperm", "lookup_dcookie",
)
#: The interpreter that Debian's ``python3-seccomp`` belongs to.
SYSTEM_PYTHON = "/usr/bin/python3"

_COMPILE = """
import errno, sys, seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in sys.argv[1:]:
    try:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except (ValueError, RuntimeError):
        pass  # a call this kernel/library does not know: nothing to deny
f.export_bpf(sys.stdout.buffer)
"""

_compiled: dict[str, bytes | str] = {}


def _compile(python: str) -> bytes | str:
    """The BPF program, or why there is none."""
    if not os.access(python, os.X_OK):
        return f"{python} is missing, so libseccomp's bindings (python3-seccomp) cannot run"
    try:
        proc = subprocess.run([python, "-I", "-c", _COMPILE, *DENIED], capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot compile the seccomp filter: {exc}"
    if proc.returncode != 0 or not proc.stdout or len(proc.stdout) % 8:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return "cannot compile the seccomp filter (is python3-seccomp installed?): " + (err[-1] if err else
                                                                                           f"exit {proc.returncode}")
    return proc.stdout


def filter_program(python: str = SYSTEM_PYTHON) -> bytes | None:
    """The compiled filter (compiled once per interpreter; blocking), or None when unavailable."""
    if python not in _compiled:
        _compiled[python] = _compile(python)
    out = _compiled[python]
    return out if isinstance(out, bytes) else None


def filter_unavailable(python: str = SYSTEM_PYTHON) -> str | None:
    """Why engines run without the filter, or None when they get it."""
    filter_program(python)
    out = _compiled[python]
    return out if isinstance(out, str) else None


def status(python: str = SYSTEM_PYTHON) -> str:
    """``"on"``, ``"off: <why>"``, or ``"not decided yet"`` (no native engine
    ran yet); never compiles, so it is safe on the event loop."""
    out = _compiled.get(python)
    if out is None:
        return "not decided yet"
    return "on" if isinstance(out, bytes) else f"off: {out}"


def open_filter(program: bytes) -> int:
    """A file descriptor holding ``program`` at offset 0, for ``bwrap --seccomp FD``.

    One per process started: bubblewrap reads it to the end.  The caller
    passes it to the child (``pass_fds``) and closes its own copy after.
    """
    fd = os.memfd_create("meshd-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


__all__ = ["DENIED", "SYSTEM_PYTHON", "filter_program", "filter_unavailable", "open_filter", "status"]
