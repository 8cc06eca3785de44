"""Stopping the daemon: one SIGTERM (or SIGINT) always ends it, within a deadline.

Once the node is ready, the first signal *drains* it first (``divert``: the
daemon stops claiming, releases its claims to peers and vacates running
tasks within ``[runner] drain_deadline_s``, see :mod:`meshd.roles.gate`);
then, as before start-up ends, it cancels.

The graceful path is trio's: the first signal cancels the node's scope, every
service unwinds (engines are killed by their runners' cancellation, the API
and the transport close) and ``meshd run`` exits 0.  Whatever was
acknowledged is already on disk (see :mod:`meshd.store.objects`), so nothing the
graceful path skips can lose acknowledged work.

Defence in depth, because one task that does not honour cancellation (a
shielded wait on something that is gone, a thread that cannot be abandoned, a
library that swallows ``Cancelled``) would otherwise hold the process forever:

* the handlers are installed before start-up begins, so a signal during
  start-up (replaying a large store, opening the transport) stops it too;
* the handlers are plain Python signal handlers, not trio's receiver: they
  run between bytecodes on the main thread even while the event loop is
  stuck, and they only set flags, start a watchdog thread and ask the loop
  (``TrioToken.run_sync_soon``, signal-safe) to cancel;
* the watchdog thread waits ``grace_s``; if the process is still alive by
  then, or at once on a second signal, it *forces*: SIGKILLs every engine
  process group and Docker container the engine host owns, logs
  ``shutdown_forced`` naming the trio tasks and engines still running,
  flushes the log and calls ``os._exit(FORCED_EXIT_STATUS)``.  It runs off
  the event loop, so a blocked loop cannot stop it.

What a forced exit leaves: exactly what a crash leaves.  sqlite's WAL keeps
every committed transaction; leases held by runs that were cut short expire,
or are voided when the node starts again.

Not covered: a main thread blocked inside C code that never returns to
Python (signals are then not even seen); only SIGKILL ends such a process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .logs import get_logger

log = get_logger("meshd.daemon")

#: Exit status of a forced stop (the graceful one exits 0).
FORCED_EXIT_STATUS = 1

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EngineOwner(Protocol):
    """What the watchdog needs from the engine host (``engines.host.EngineHost``)."""

    docker: Any

    def process_groups(self) -> tuple[int, ...]:
        """Process groups of the engines running now (thread-safe)."""
        ...

    def kill_engines(self) -> tuple[int, ...]:
        """SIGKILL them; returns the groups killed (thread-safe)."""
        ...


@dataclass(frozen=True)
class ShutdownOptions:
    """How the daemon stops (from ``[node] shutdown_grace_s``).

    Attributes:
        grace_s: Longest the graceful stop may take after the first signal
            (and the drain) before the daemon forces; default 8.0 (so that
            one SIGTERM ends the daemon within 10 s, plus the drain).
        drain_s: How long the drain a first signal starts may take
            (``[runner] drain_deadline_s`` and the release records' time);
            the watchdog waits ``drain_s + grace_s``.  Default 0: no drain.
    """

    grace_s: float = 8.0
    drain_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.grace_s <= 600:
            raise ValueError("grace_s must be in (0, 600]")
        if not 0 <= self.drain_s <= 600:
            raise ValueError("drain_s must be in [0, 600]")


class Shutdown:
    """The daemon's stop sequence.  ``install`` from the main thread, before
    ``trio.run``; ``attach`` inside it once the node's cancel scope exists.

    Args:
        options: The grace period.
        exit: Called with the exit status to end the process (tests pass a
            fake; default ``os._exit``).
    """

    def __init__(self, options: ShutdownOptions = ShutdownOptions(),
                 exit: Callable[[int], Any] = os._exit) -> None:
        self.options = options
        self._exit = exit
        self._signals: list[str] = []
        self._force_now = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._root: trio.lowlevel.Task | None = None
        self._engines: EngineOwner | None = None
        self._previous: dict[int, Any] = {}
        self._on_first: Callable[[], None] | None = None

    @property
    def requested(self) -> str | None:
        """The name of the first stop signal, or None before any."""
        return self._signals[0] if self._signals else None

    # -- wiring ------------------------------------------------------------------

    def install(self) -> None:
        """Install the SIGTERM/SIGINT handlers (main thread only)."""
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def attach(self, scope: trio.CancelScope) -> None:
        """Tell the stopper which scope the first signal cancels (call from
        inside ``trio.run``).  A signal that arrived earlier cancels it now."""
        self._token = trio.lowlevel.current_trio_token()
        self._root = trio.lowlevel.current_root_task()
        self._scope = scope
        if self._signals:
            scope.cancel()

    def divert(self, on_first: Callable[[], None]) -> None:
        """From now on the first signal calls ``on_first`` (in the trio
        thread) instead of cancelling the node at once: the daemon drains,
        then cancels.  The watchdog still forces after ``drain_s + grace_s``.
        A signal that came earlier has already cancelled the node."""
        self._on_first = on_first

    def own(self, engines: EngineOwner) -> None:
        """Register the engine host whose processes a forced stop kills."""
        self._engines = engines

    def kill_engines_left(self) -> tuple[int, ...]:
        """After a graceful stop: SIGKILL engine groups still there (logged)."""
        engines = self._engines
        groups = engines.kill_engines() if engines is not None else ()
        if groups:
            log.warning("engines_killed_at_exit", engine_groups=",".join(map(str, groups)))
        return groups

    # -- the sequence -------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A Python-level handler: it runs on the main thread between
        # bytecodes, so it only records, wakes and delegates.
        self._signals.append(signal.Signals(signum).name)
        if len(self._signals) > 1:
            self._force_now.set()
            return
        self._watchdog = threading.Thread(target=self._watch, name="meshd-shutdown-watchdog", daemon=True)
        self._watchdog.start()
        token, scope = self._token, self._scope
        if token is not None and scope is not None:
            try:
                token.run_sync_soon(self._on_first or scope.cancel)
            except trio.RunFinishedError:
                pass  # trio.run already returned: the process is on its way out

    def _watch(self) -> None:
        bound = self.options.grace_s + (self.options.drain_s if self._on_first is not None else 0.0)
        log.info("shutting_down", signal=self._signals[0], grace_s=self.options.grace_s,
                 drain_s=self.options.drain_s if self._on_first is not None else 0)
        if self._force_now.wait(bound):
            reason = f"second signal ({self._signals[-1]})"
        else:
            reason = f"still running {bound:g} s after {self._signals[0]}"
        self.force(reason)

    def force(self, reason: str) -> None:
        """Kill owned engines, log what was still running, exit hard.  Any thread."""
        tasks = _live_tasks(self._root)
        groups: tuple[int, ...] = ()
        containers: tuple[str, ...] = ()
        engines = self._engines
        if engines is not None:
            try:
                groups = engines.kill_engines()
            except Exception as exc:  # noqa: BLE001 - the exit below must happen whatever fails here
                log.error("shutdown_kill_failed", what="engines", error=repr(exc))
            docker = getattr(engines, "docker", None)
            if docker is not None and hasattr(docker, "kill_containers"):
                try:
                    containers = docker.kill_containers()
                except Exception as exc:  # noqa: BLE001 - as above
                    log.error("shutdown_kill_failed", what="containers", error=repr(exc))
        log.error("shutdown_forced", reason=reason, tasks=",".join(tasks) or "-",
                  engine_groups=",".join(map(str, groups)) or "-", containers=",".join(containers) or "-")
        # A closed or broken log stream must not stop the exit below.
        for stream in [*(getattr(h, "stream", None) for h in logging.getLogger().handlers), sys.stdout, sys.stderr]:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()  # type: ignore[union-attr]
        self._exit(FORCED_EXIT_STATUS)


def _live_tasks(root: trio.lowlevel.Task | None, limit: int = 40) -> list[str]:
    """Names and current lines of the trio tasks still alive (best effort:
    read from another thread while the loop may be changing them)."""
    out: list[str] = []
    stack = [root] if root is not None else []
    try:
        while stack and len(out) < limit:
            task = stack.pop()
            if task is not root and not task.name.startswith("<"):
                out.append(f"{task.name}@{_where(task)}")
            for nursery in tuple(task.child_nurseries):
                stack.extend(tuple(nursery.child_tasks))
    except RuntimeError:  # a set changed size under us: report what we have
        pass
    return out


def _where(task: trio.lowlevel.Task) -> str:
    """``file:line`` of the innermost frame of ``task`` that is not trio's."""
    coro: Any = task.coro
    where = "?"
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        path = frame.f_code.co_filename
        if "/trio/" not in path:
            where = f"{os.path.basename(path)}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


__all__ = ["FORCED_EXIT_STATUS", "EngineOwner", "Shutdown", "ShutdownOptions"]
