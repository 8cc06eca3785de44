"""CPU time of whole process trees, for the benchmarks' ``cpu_ms_per_task``.

Take :func:`tree_cpu_s` before and after the measured phase and subtract.
Each process's user+system time is counted once, wherever it lives at that
moment: a live process's own counters, or, once it has exited and been
reaped, its parent's ``children_user``/``children_system``.  So a worker that
starts or exits during the phase is still counted.  Time is lost only for a
process that was reparented away from the tree (a double-forked daemon) and
exited before the second reading.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def tree_cpu_s(pids: Iterable[int | None]) -> float:
    """User+system CPU seconds of these processes and all their descendants.

    Args:
        pids: Root process ids; ``None`` and vanished processes are skipped.

    Returns:
        The sum over every process of the trees (each counted once), including
        the time of children they have already reaped.
    """
    seen: set[int] = set()
    total = 0.0
    for pid in pids:
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                t = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def self_cpu_s() -> float:
    """User+system CPU seconds of this process alone (not its children)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system
