"""The Docker runner's policy: what a container may use, and how its output is judged.

:class:`DockerOptions` holds the runner's defaults and sandbox settings,
validated once; :meth:`DockerOptions.limits` resolves a task's resources
against them into :class:`ContainerLimits`.  The outcome functions turn what
a container wrote and how it exited into an :class:`~engines.outcome.Outcome`.
No I/O here: :mod:`engines.docker` drives the containers (with the blocking
calls in :mod:`engines._docker_io`) and re-exports the public names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EngineError
from .outcome import Outcome

__all__ = ["ContainerLimits", "DockerOptions", "MiB", "encode_input", "judge_exit", "parse_output"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ContainerLimits:
    """Per-task limits. Any field left ``None`` takes the runner's default.

    Attributes:
        timeout_s: Wall-clock limit of one task (cold: of the whole container).
        memory_bytes: Memory limit of the container (swap is not allowed).
        cpus: CPU share, in CPUs (0.5 = half a CPU).
        pids: Maximum number of processes/threads in the container.
        cpu_s: CPU-time limit (RLIMIT_CPU) of each process, or None.
        nofile: Open-file limit (RLIMIT_NOFILE), or None.
    """

    timeout_s: float | None = None
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    cpu_s: int | None = None
    nofile: int | None = None


@dataclass(frozen=True)
class DockerOptions:
    """Options of :class:`DockerRunner`, validated once on construction.

    Attributes:
        docker_host: Daemon URL, e.g. ``unix:///run/docker.sock``. Passed in
            explicitly; only the CLI reads ``DOCKER_HOST``.
        timeout_s: Default task timeout (30 s).
        memory_bytes: Default container memory limit (256 MiB).
        cpus: Default CPU limit (1.0).
        pids: Default pid limit (64).
        tmpfs_bytes: Size of the writable tmpfs on /tmp (16 MiB).
        output_limit_bytes: Most stdout one task may produce (16 MiB); more is
            a failed task and the container is killed.
        stderr_limit_bytes: Stderr kept in the outcome (64 KiB). A container
            writing more than ``output_limit_bytes`` to stderr is killed too.
        user: ``uid:gid`` the engine runs as (``65534:65534``, nobody).
        max_warm_containers: Idle warm containers kept; the least recently
            used idle one is removed beyond this (8).
        api_timeout_s: Timeout of one Docker API request (60 s).
        cleanup_timeout_s: Longest wait to remove a container (15 s).
        owner: Value of the ``org.meshd.home`` label every container gets
            (the daemon passes a hash of its home; default "", no label).
            One daemon runs per home, so at start-up any container with its
            label is a leftover of a previous life that was SIGKILLed or
            crashed: :meth:`DockerRunner.remove_leftovers` removes them.
        max_cpus: The most CPUs one container may use whatever its engine
            asks (``nano_cpus``; the daemon's ``[owner] engine_cpu_pct``);
            default None (no cap beyond the engine's ``cpus``).
    """

    docker_host: str = "unix:///var/run/docker.sock"
    timeout_s: float = 30.0
    memory_bytes: int = 256 * MiB
    cpus: float = 1.0
    pids: int = 64
    tmpfs_bytes: int = 16 * MiB
    output_limit_bytes: int = 16 * MiB
    stderr_limit_bytes: int = 64 * 1024
    user: str = "65534:65534"
    max_warm_containers: int = 8
    api_timeout_s: float = 60.0
    cleanup_timeout_s: float = 15.0
    owner: str = ""
    max_cpus: float | None = None

    def __post_init__(self) -> None:
        if self.max_cpus is not None and not (math.isfinite(self.max_cpus) and self.max_cpus > 0):
            raise ValueError(f"max_cpus must be a positive number or None, got {self.max_cpus!r}")
        if not self.docker_host or "://" not in self.docker_host:
            raise ValueError(f"docker_host must be a URL, got {self.docker_host!r}")
        for name in ("timeout_s", "cpus", "api_timeout_s", "cleanup_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.memory_bytes < 6 * MiB:
            raise ValueError("memory_bytes must be at least 6 MiB (Docker's minimum)")
        for name in ("pids", "tmpfs_bytes", "output_limit_bytes", "stderr_limit_bytes"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive int")
        if self.max_warm_containers < 0:
            raise ValueError("max_warm_containers must be >= 0")
        if not isinstance(self.owner, str) or len(self.owner) > 64:
            raise ValueError(f"owner must be a string of at most 64 characters, got {self.owner!r}")
        if ":" not in self.user or self.user.split(":")[0] in ("0", "root"):
            raise ValueError(f"user must be a non-root uid:gid, got {self.user!r}")

    def limits(self, resources: Any = None) -> ContainerLimits:
        """Resolves a task's ``resources`` against these defaults.

        Args:
            resources: None, a :class:`ContainerLimits`, or any mapping or
                object with some of ``timeout_s``, ``memory_bytes`` (or
                ``memory_mb``), ``cpus``, ``pids``, ``cpu_s``, ``nofile``
                (so an ``engines.manifest.Resources`` works as is).

        Returns:
            Limits with every field set.

        Raises:
            ValueError: a limit is not a positive number.
        """

        def get(name: str) -> Any:
            if resources is None:
                return None
            if isinstance(resources, Mapping):
                return resources.get(name)
            return getattr(resources, name, None)

        memory = get("memory_bytes")
        if memory is None and get("memory_mb") is not None:
            memory = int(get("memory_mb") * MiB)
        limits = ContainerLimits(
            timeout_s=float(get("timeout_s") or self.timeout_s),
            memory_bytes=int(memory or self.memory_bytes),
            cpus=min(float(get("cpus") or self.cpus), self.max_cpus or math.inf),
            pids=int(get("pids") or self.pids),
            cpu_s=int(get("cpu_s")) if get("cpu_s") else None,
            nofile=int(get("nofile")) if get("nofile") else None,
        )
        if not (limits.timeout_s > 0 and limits.cpus > 0 and limits.pids > 0):
            raise ValueError(f"limits must be positive: {limits}")
        if limits.memory_bytes < 6 * MiB:
            raise ValueError("memory limit must be at least 6 MiB")
        return limits


# -- outcome building ----------------------------------------------------------------

def encode_input(value: Any) -> bytes:
    """A task input as compact JSON (EngineError when it is not JSON-serialisable)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EngineError(f"task input is not JSON-serializable: {exc}") from None


def parse_output(stdout: bytes, stderr: str, limit: int) -> Outcome:
    """The outcome of an engine's stdout: its JSON value, or why it is not one."""
    if len(stdout) > limit:
        return Outcome(ok=False, error=f"output exceeds {limit} bytes", stderr=stderr)
    try:
        return Outcome(ok=True, output=json.loads(stdout), stderr=stderr)
    except (ValueError, UnicodeDecodeError):
        return Outcome(ok=False, error="output is not JSON", stderr=stderr)


def judge_exit(stdout: bytes, stderr: str, status: int, oom: bool, limit: int) -> Outcome:
    """The outcome of a cold container that exited: OOM, a failing status, or its output."""
    if oom:
        return Outcome(ok=False, error=f"out of memory (OOM-killed, exit status {status})",
                       stderr=stderr)
    if status != 0:
        return Outcome(ok=False, error=f"exit status {status}", stderr=stderr)
    return parse_output(stdout, stderr, limit)

