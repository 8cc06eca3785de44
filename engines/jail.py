"""The namespace jail around every native engine process: bubblewrap's command line.

Why bubblewrap (Debian's ``bubblewrap``, ``/usr/bin/bwrap``) and not our own
``unshare``/``pivot_root`` code: building a private root, new pid, mount, ipc,
uts and network namespaces, a fresh ``/proc`` and a minimal ``/dev`` takes a
few hundred lines of careful C that bubblewrap already is (it is what Flatpak
runs every application in).  We only compute its arguments here (pure, no
I/O beyond ``os.path`` look-ups); :mod:`engines.native` and
:mod:`engines.pool` run them.

What an engine sees inside the jail:

* a tmpfs root holding read-only binds of ``/usr``, ``/etc`` (and the
  ``/bin``, ``/lib*``, ``/sbin`` links or directories), the Python prefixes
  the node's interpreters live in, the engine's own directory and program,
  plus the run's private home (read-write), a new ``/proc`` (its pid
  namespace only), a minimal ``/dev`` and an empty ``/tmp``.  Nothing else of
  the host's filesystem exists there, so the daemon's home (identity key,
  config, API token, blocks) cannot be opened; a home that lies under a bound
  directory is covered by an empty tmpfs (``hide``);
* new pid, mount, ipc, uts and (unless the node allows the network) network
  namespaces: no interface but a down loopback;
* a new user namespace in which the engine is an unprivileged uid with no
  capabilities, and ``RLIMIT_NPROC`` set *inside* that namespace, so it counts
  only the jail's own processes (the kernel keys the count on user namespace
  and uid): a fork bomb stops at ``nproc`` processes and no other engine or
  user is affected.  Killing the jail's outer process (its process group)
  ends its pid namespace, which the kernel then empties, even of children
  that called ``setsid``.

How the uid is dropped depends on who runs the node:

* an ordinary user: ``bwrap`` runs as that user and makes the user namespace
  itself (``--unshare-user``); the engine keeps the node's uid, mapped to
  itself, without capabilities;
* root: ``bwrap`` runs as root (so it can bind paths under ``/root`` or a
  0700 home that the engine uid could not reach), then ``setpriv`` switches
  to ``engine_uid``/``engine_gid`` (default nobody/nogroup) with no
  supplementary groups, an empty bounding set and ``no_new_privs``, and
  ``unshare --user`` maps that uid to itself in a new user namespace.
  Files the engine must read are made readable by that uid by the callers
  (engine directories are world-readable; the run's home is chowned).

``prlimit --nproc`` (util-linux) sets the process limit as the last step
before the engine, inside the new user namespace.  Each of these helpers is
a small C program that ``exec``s the next: the measured cost is a few
milliseconds per jail (see docs/security.md), paid per task by the cold
runner and once per worker by warm pools.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Host directories every jail gets read-only (those that exist).
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class JailSpec:
    """What one jailed process needs from the host (built by the runners).

    Attributes:
        bwrap: The bubblewrap program.
        home: The run's private directory (read-write; ``HOME``/``TMPDIR``).
        cwd: The working directory inside the jail (bound read-only when it
            is not ``home``).
        ro: Further host paths bound read-only at the same place.
        rw: Further host paths bound read-write at the same place.
        hide: Host directories that must not be visible even when they lie
            under a bound directory (the daemon's home).
        network: Keep the host's network namespace.
        nproc: ``RLIMIT_NPROC`` inside the jail's user namespace.
        as_root: The node runs as root: drop to ``uid``/``gid`` with setpriv.
        uid: Engine uid when ``as_root``.
        gid: Engine gid when ``as_root``.
        seccomp_fd: A file descriptor holding the compiled seccomp filter
            (:mod:`engines.seccomp`) that bubblewrap installs before the
            jail's first process, or None for no filter.
    """

    bwrap: str
    home: str
    cwd: str
    ro: tuple[str, ...] = ()
    rw: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    network: bool = False
    nproc: int = 256
    as_root: bool = False
    uid: int = 65534
    gid: int = 65534
    seccomp_fd: int | None = None


def python_paths() -> tuple[str, ...]:
    """The prefixes this node's Python and its packages live in (read-only in
    every jail: python engines and pool workers run this interpreter)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    paths |= {os.path.realpath(p) for p in paths if p}  # a venv reached through a symbolic link
    return tuple(sorted(p for p in paths if p and p != "/"))


def program_paths(argv: Sequence[str]) -> tuple[str, ...]:
    """The program of ``argv`` when it is an absolute path: the path itself and,
    when it is a symbolic link, what it points to (both must exist in the jail)."""
    if not argv or not os.path.isabs(argv[0]):
        return ()
    real = os.path.realpath(argv[0])
    return (argv[0],) if real == argv[0] else (argv[0], real)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def jail_argv(argv: Sequence[str], spec: JailSpec) -> list[str]:
    """The command line that runs ``argv`` jailed as ``spec`` says.

    Paths are made absolute and normalized; a path inside a system directory
    or bound twice is bound once.  Parents that the jail's tmpfs root lacks
    are created mode 0755 (bubblewrap's default, when root, is 0700, which
    the engine uid could not traverse).
    """
    out = [spec.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not spec.network:
        out.append("--unshare-net")
    if not spec.as_root:
        out.append("--unshare-user")
    else:
        # setpriv needs these two to switch to the engine uid; it clears the
        # bounding set before the engine runs.
        out += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    made: set[str] = {"/"}
    bound: list[str] = []
    hidden: list[str] = []  # hide directories covered by a tmpfs, in the order applied

    def covered(path: str) -> bool:
        """``path`` is already visible through a bind, not behind a hiding tmpfs."""
        return any(_under(path, b) and not any(_under(h, b) and h != b and _under(path, h) for h in hidden)
                   for b in bound)

    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            out += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            out += ["--ro-bind", d, d]
            bound.append(d)
        made.add(d)
    # Before the binds: the run's home usually lies under /tmp.
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    made.update(("/proc", "/dev", "/tmp"))

    def parents(path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        cur = ""
        for part in parts:
            cur += "/" + part
            if cur in made or covered(cur):
                continue
            out.extend(["--perms", "0755", "--dir", cur])
            made.add(cur)

    def bind(path: str, flag: str) -> None:
        if covered(path) or not os.path.lexists(path):
            return
        parents(path)
        out.extend([flag, path, path])
        bound.append(path)
        made.add(path)

    hides = [os.path.normpath(os.path.abspath(h)) for h in spec.hide]
    wanted = [(os.path.normpath(os.path.abspath(p)), "--bind") for p in (spec.home, *spec.rw)]
    wanted += [(os.path.normpath(os.path.abspath(p)), "--ro-bind") for p in (spec.cwd, *spec.ro)]
    # Three steps, so that a path the jail needs inside a hidden directory (an
    # engine's directory under the daemon's home, when an interpreter's
    # prefix binds a parent of that home) is bound *after* the tmpfs that
    # hides the rest, and stays visible:
    # 1. binds outside every hidden directory;
    for p, flag in wanted:
        if not any(_under(p, h) for h in hides):
            bind(p, flag)
    # 2. an empty tmpfs over each hidden directory that a bind made visible;
    for h in hides:
        if covered(h) and h not in bound:
            out += ["--tmpfs", h]
            hidden.append(h)
            made.add(h)
    # 3. binds inside hidden directories (their parents made 0755 in the tmpfs,
    #    since bubblewrap's own are 0700 and the engine uid could not pass).
    for p, flag in wanted:
        if any(_under(p, h) for h in hides):
            bind(p, flag)
    if spec.seccomp_fd is not None:
        out += ["--seccomp", str(spec.seccomp_fd)]
    out += ["--chdir", os.path.abspath(spec.cwd), "--"]
    if spec.as_root:
        out += ["setpriv", f"--reuid={spec.uid}", f"--regid={spec.gid}", "--clear-groups", "--no-new-privs",
                "--bounding-set=-all", "--inh-caps=-all", "--",
                "unshare", f"--map-user={spec.uid}", f"--map-group={spec.gid}", "--"]
    out += ["prlimit", f"--nproc={spec.nproc}", "--", *argv]
    return out


def dedupe(paths: Iterable[str]) -> tuple[str, ...]:
    """``paths`` without repeats, in order."""
    return tuple(dict.fromkeys(paths))


__all__ = ["JailSpec", "SYSTEM_DIRS", "dedupe", "jail_argv", "program_paths", "python_paths"]
