"""The node's optional Docker backend: a service that opens a DockerRunner.

:func:`serve_docker` is started from the daemon's nursery.  It reports the
open :class:`engines.docker.DockerRunner` through ``task_status`` (the daemon
hands it to :class:`engines.host.EngineHost` as its ``docker`` backend), or
``None`` when Docker is off or its daemon does not answer within
``connect_timeout_s``.  Without a backend the node still runs every native
engine; a ``docker-json-runner`` task fails with "docker runner unavailable
on this node".  Start-up never waits longer than ``connect_timeout_s`` for an
absent dockerd.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import trio
from docker.errors import DockerException

from engines.docker import DockerOptions, DockerRunner
from engines._docker_io import TaskFailed
from engines.errors import EngineError

from .logs import get_logger

log = get_logger("meshd.docker")

#: The socket probed when no host is configured.
DEFAULT_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class DockerBackendOptions:
    """Where the Docker engine is and how long to wait for it.

    Attributes:
        host: ``[docker] host``: a URL, ``"off"``, or ``""`` for the default
            socket (``unix:///var/run/docker.sock``, used only if it exists).
        connect_timeout_s: Longest wait for dockerd to answer at start-up; default 10.
        task_timeout_s: Default per-task timeout of the runner; default 60.
        owner: Label value marking this daemon's containers (a hash of the
            home; see ``engines.docker.DockerOptions.owner``); default "",
            unlabelled, and no leftovers are removed at start.
        max_cpus: The most CPUs one container may use (``[owner]
            engine_cpu_pct`` of the machine); default None (no cap).
    """

    host: str = ""
    connect_timeout_s: float = 10.0
    task_timeout_s: float = 60.0
    owner: str = ""
    max_cpus: float | None = None

    def __post_init__(self) -> None:
        if self.host not in ("", "off") and "://" not in self.host:
            raise ValueError(f"host must be empty, 'off' or a URL, got {self.host!r}")
        for name in ("connect_timeout_s", "task_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")

    def resolved_host(self) -> str | None:
        """The URL to connect to, or None when Docker is off or absent."""
        if self.host == "off":
            return None
        if self.host:
            return self.host
        return f"unix://{DEFAULT_SOCKET}" if os.path.exists(DEFAULT_SOCKET) else None


async def serve_docker(options: DockerBackendOptions, *,
                       task_status: trio.TaskStatus[DockerRunner | None] = trio.TASK_STATUS_IGNORED) -> None:
    """Open the Docker runner and hold it open until cancelled.

    Reports the runner, or None (and returns at once) when Docker is off or
    unreachable.  Cancellation removes every warm container the runner
    started (shielded).
    """
    host = options.resolved_host()
    if host is None:
        log.info("docker_disabled", reason="off" if options.host == "off" else f"no {DEFAULT_SOCKET}")
        task_status.started(None)
        return
    runner = DockerRunner(DockerOptions(docker_host=host, timeout_s=options.task_timeout_s, owner=options.owner,
                                       max_cpus=options.max_cpus))
    try:
        with trio.fail_after(options.connect_timeout_s):
            await runner.open()
    except (EngineError, TaskFailed, DockerException, OSError, trio.TooSlowError) as exc:
        # docker-py raises DockerException when the version handshake fails,
        # and the runner maps an API error answer to ping to TaskFailed.
        log.warning("docker_unavailable", host=host, error=str(exc) or f"no answer within {options.connect_timeout_s:g} s")
        task_status.started(None)
        return
    try:
        try:
            # Containers a previous daemon on this home left (SIGKILL, crash).
            leftovers = await runner.remove_leftovers()
        except (EngineError, TaskFailed, DockerException) as exc:
            log.warning("orphaned_containers_not_removed", error=str(exc))
        else:
            if leftovers:
                log.warning("orphaned_containers_removed", containers=",".join(c[:12] for c in leftovers))
        log.info("docker_ready", host=host)
        task_status.started(runner)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await runner.aclose()
