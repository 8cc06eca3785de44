"""What a warm pool is built from: the engine its workers host, and how it keeps them.

:class:`WorkerSpec` names the engine (a Python entry point, or a command
speaking JSON lines) and its limits; :class:`PoolOptions` says how many
workers run, when one is recycled, and how long starts and stops may take.
Both are frozen and validated when built.  :mod:`engines.pool` (which
re-exports them) runs the pool; they are apart so that what a pool is asked
for can be read, and built by the engine host and the daemon's config,
without the ZeroMQ and process machinery that serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .manifest import Resources


@dataclass(frozen=True)
class PoolOptions:
    """Options of one warm pool.

    Attributes:
        workers: Worker processes kept running.  Default 2.
        recycle_after: Tasks after which a worker is replaced; None = never.
            Default 10,000.
        max_rss_mb: Replace a worker whose RSS (with its engine child) exceeds
            this many MiB after a task; None = no check.  Default None.
        start_timeout_s: How long a worker may take to report ready.  Default 60.
        max_start_failures: Consecutive failed worker starts after which the
            pool gives up and fails every task.  Default 3.
        stop_grace_s: How long a retiring worker may take to exit before it is
            killed.  Default 2.
    """

    workers: int = 2
    recycle_after: int | None = 10_000
    max_rss_mb: int | None = None
    start_timeout_s: float = 60.0
    max_start_failures: int = 3
    stop_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 1024:
            raise ValueError("workers must be in 1..1024")
        if self.recycle_after is not None and self.recycle_after < 1:
            raise ValueError("recycle_after must be positive or None")
        if self.max_rss_mb is not None and self.max_rss_mb < 1:
            raise ValueError("max_rss_mb must be positive or None")
        if not self.start_timeout_s > 0 or not self.stop_grace_s > 0 or self.max_start_failures < 1:
            raise ValueError("start_timeout_s, stop_grace_s and max_start_failures must be positive")


@dataclass(frozen=True)
class WorkerSpec:
    """The engine a pool's workers host.

    Attributes:
        mode: ``"python"`` (import ``entry`` in the worker) or ``"jsonl"``
            (run ``argv`` as a long-lived child speaking JSON lines).
        cwd: The engine directory (the working directory; on ``sys.path``
            for ``"python"``).
        entry: ``module:function`` for ``"python"``.
        argv: The engine command for ``"jsonl"``.
        resources: Limits; RLIMIT_CPU is not applied to long-lived workers
            (per-task ``timeout_s`` is enforced by the pool instead).
    """

    mode: Literal["python", "jsonl"]
    cwd: str
    entry: str | None = None
    argv: tuple[str, ...] = ()
    resources: Resources = Resources()

    def __post_init__(self) -> None:
        if self.mode == "python" and not self.entry:
            raise ValueError("mode 'python' needs entry")
        if self.mode == "jsonl" and not self.argv:
            raise ValueError("mode 'jsonl' needs argv")
        if self.mode not in ("python", "jsonl"):
            raise ValueError("mode must be 'python' or 'jsonl'")
