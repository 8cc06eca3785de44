"""A cgroup v2 group for every engine of a node: a CPU cap and a memory cap that leaves the owner room.

Nice 19 and ``SCHED_IDLE`` (:mod:`engines.sandbox`) make engines yield the
CPU; they do not bound how much of it an idle machine's engines take, nor
their memory, which is what makes an owner's machine swap and stutter when
they come back.  Where the node may write a cgroup v2 hierarchy with the
``cpu`` and ``memory`` controllers, every engine process (cold runs and warm
pool workers, through the sandbox's ``preexec``) joins one group, and:

* ``cpu.max`` caps all engines together at ``cpu_pct`` percent of the
  machine (BOINC's "use at most X % of the CPU time");
* ``memory.max`` caps them at what the owner leaves free minus a headroom:
  ``MemAvailable + engines' current use - headroom`` (never below
  ``floor_mb``), recomputed on every :meth:`EngineCgroup.refresh`, so an
  owner who starts using memory shrinks the engines' share, and the kernel
  reclaims from, then OOM-kills, the engines rather than the owner's
  programs.  ``memory.high`` is set 10 % below it, so reclaim starts first.

cgroup v2 forbids processes in a group whose controllers are delegated to
its children ("no internal processes"), so when the daemon's own group has
processes the daemon first moves itself into a ``daemon`` leaf beside the
``engines`` leaf (as systemd's delegation documentation prescribes).

:func:`unavailable` says why a machine cannot (a cgroup v1 or hybrid
hierarchy without the controllers in v2, no write access, no cgroup2 mount);
the daemon then logs that reason once and runs engines without the caps.
Docker containers live in Docker's own groups: they get the CPU cap as
``nano_cpus`` and the idle weight as ``cpu_shares`` (:mod:`engines.docker`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

_MiB = 1024 * 1024
_PERIOD_US = 100_000
#: A memory cap that moved by less than this fraction is not rewritten.
_REWRITE_FRACTION = 0.05


@dataclass(frozen=True)
class CgroupOptions:
    """The engines' caps (``[owner] engine_cpu_pct`` and ``engine_memory_headroom_mb``).

    Attributes:
        cpu_pct: All engines together use at most this percentage of the
            machine's CPUs (``cpu.max``); 0: no CPU cap.
        memory_headroom_mb: Engines may use what the owner leaves free minus
            this many MiB (``memory.max``); 0: no memory cap.
        floor_mb: The memory cap never goes below this (MiB), so engines are
            throttled rather than killed the moment the owner fills memory.
        name: The group's directory name under the daemon's own group.
        refresh_s: How often :meth:`EngineCgroup.serve` recomputes the memory cap.
    """

    cpu_pct: float = 0.0
    memory_headroom_mb: int = 0
    floor_mb: int = 64
    name: str = "engines"
    refresh_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.cpu_pct <= 100:
            raise ValueError("cpu_pct must be in [0, 100]")
        if self.memory_headroom_mb < 0 or self.floor_mb < 1:
            raise ValueError("memory_headroom_mb must be >= 0 and floor_mb >= 1")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError("name must be one path component")
        if not self.refresh_s > 0:
            raise ValueError("refresh_s must be > 0")

    @property
    def wanted(self) -> bool:
        """Whether any cap is asked for."""
        return self.cpu_pct > 0 or self.memory_headroom_mb > 0


def cpu_max(cpu_pct: float, cpus: int) -> str:
    """The ``cpu.max`` line for ``cpu_pct`` percent of ``cpus`` CPUs (``"max 100000"`` for none)."""
    if cpu_pct <= 0:
        return f"max {_PERIOD_US}"
    quota = max(1000, round(_PERIOD_US * cpus * cpu_pct / 100))  # the kernel's minimum is 1 ms
    return f"{quota} {_PERIOD_US}"


def memory_cap_bytes(available_bytes: int, engines_bytes: int, headroom_mb: int, floor_mb: int) -> int:
    """What the engines may use: what the owner leaves free (available + the engines' own), less the headroom."""
    return max(floor_mb * _MiB, available_bytes + engines_bytes - headroom_mb * _MiB)


def _mem_available(meminfo: str) -> int:
    for line in Path(meminfo).read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _own_group(mount: Path, proc_cgroup: str = "/proc/self/cgroup") -> Path | None:
    """The calling process's cgroup v2 directory (the ``0::`` line), or None."""
    for line in Path(proc_cgroup).read_text().splitlines():
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def _cgroup2_mount(mounts: str = "/proc/self/mounts") -> Path | None:
    for line in Path(mounts).read_text().splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == "cgroup2":
            return Path(f[1])
    return None


def unavailable(options: CgroupOptions, *, mount: Path | None = None) -> str | None:
    """Why engines cannot get these caps here, or None when they can.

    Reads only; the group is made by :meth:`EngineCgroup.create`.
    """
    try:
        mount = mount or _cgroup2_mount()
        if mount is None:
            return "no cgroup2 file system is mounted"
        own = _own_group(mount)
        if own is None or not own.is_dir():
            return f"this process has no cgroup v2 group under {mount}"
        need = {"cpu"} if options.cpu_pct > 0 else set()
        need |= {"memory"} if options.memory_headroom_mb > 0 else set()
        have = set((own / "cgroup.controllers").read_text().split())
        if need - have:
            return (f"cgroup v2 group {own} lacks the controller(s) {sorted(need - have)} "
                    f"(it has {sorted(have) or 'none'}: a cgroup v1 or hybrid hierarchy holds them)")
        if not os.access(own, os.W_OK) or not os.access(own / "cgroup.subtree_control", os.W_OK):
            return f"cgroup v2 group {own} is not writable by this user (delegate it, e.g. systemd Delegate=yes)"
    except OSError as exc:
        return f"cannot read the cgroup v2 hierarchy: {exc}"
    return None


class EngineCgroup:
    """The engines' group: where engine processes go, and its caps.

    Args:
        path: The group's directory (``<daemon's group>/<name>``).
        options: The caps.
    """

    def __init__(self, path: Path, options: CgroupOptions) -> None:
        self.path, self.options = path, options
        self.memory_max: int | None = None

    @property
    def procs(self) -> str:
        """The ``cgroup.procs`` file an engine writes ``0`` to, to join (see ``SandboxLimits.cgroup_procs``)."""
        return str(self.path / "cgroup.procs")

    @classmethod
    def create(cls, options: CgroupOptions, *, mount: Path | None = None,
               meminfo: str = "/proc/meminfo") -> EngineCgroup:
        """Make the group under this process's own group, with its controllers and caps.

        Moves this process into a ``daemon`` leaf first when its group has
        processes (cgroup v2's no-internal-processes rule).  Check
        :func:`unavailable` first.

        Raises:
            OSError: A write the hierarchy refused.
        """
        mount = mount or _cgroup2_mount()
        if mount is None:
            raise OSError("no cgroup2 file system is mounted")
        own = _own_group(mount)
        if own is None:
            raise OSError("this process has no cgroup v2 group")
        controllers = ["cpu"] if options.cpu_pct > 0 else []
        controllers += ["memory"] if options.memory_headroom_mb > 0 else []
        enabled = set((own / "cgroup.subtree_control").read_text().split())
        if set(controllers) - enabled:
            if (own / "cgroup.procs").read_text().split():
                leaf = own / "daemon"
                leaf.mkdir(exist_ok=True)
                # Every process of the group: the daemon, and whatever it
                # already started (a warm pool, an IPFS child); each is moved as a whole.
                for pid in (own / "cgroup.procs").read_text().split():
                    try:
                        (leaf / "cgroup.procs").write_text(pid)
                    except ProcessLookupError:
                        continue
            (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in controllers))
        group = cls(own / options.name, options)
        group.path.mkdir(exist_ok=True)
        if options.cpu_pct > 0:
            (group.path / "cpu.max").write_text(cpu_max(options.cpu_pct, os.cpu_count() or 1))
        group.refresh(meminfo=meminfo)
        return group

    def engines_bytes(self) -> int:
        """The engines' memory use now (``memory.current``; 0 when not accounted)."""
        try:
            return int((self.path / "memory.current").read_text())
        except (OSError, ValueError):
            return 0

    def refresh(self, *, meminfo: str = "/proc/meminfo") -> int | None:
        """Recompute the memory cap from what the owner uses now; returns it (None: no memory cap).

        Rewrites ``memory.max`` and ``memory.high`` only when the cap moved
        by more than 5 %, so a steady machine costs two reads per call.
        """
        o = self.options
        if o.memory_headroom_mb <= 0:
            return None
        cap = memory_cap_bytes(_mem_available(meminfo), self.engines_bytes(), o.memory_headroom_mb, o.floor_mb)
        if self.memory_max is None or abs(cap - self.memory_max) > _REWRITE_FRACTION * self.memory_max:
            # high first when shrinking, max first when growing: memory.high <= memory.max at every moment.
            files = [("memory.high", int(cap * 0.9)), ("memory.max", cap)]
            for name, value in (files if self.memory_max is None or cap < self.memory_max else files[::-1]):
                (self.path / name).write_text(str(value))
            self.memory_max = cap
        return self.memory_max

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the owner's memory use every ``refresh_s`` until cancelled; then
        remove the group if no engine is left in it (a leftover group is harmless)."""
        task_status.started()
        try:
            while self.options.memory_headroom_mb > 0:
                await trio.sleep(self.options.refresh_s)
                try:
                    await trio.to_thread.run_sync(self.refresh)
                except OSError:
                    pass  # the cap stays as it was; the next round tries again
            await trio.sleep_forever()
        finally:
            try:
                self.path.rmdir()
            except OSError:
                pass

    def members(self) -> list[int]:
        """The processes in the group now."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []
