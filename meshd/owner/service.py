"""The owner policy's loop: read the signals, step the policy, act on the runner and its engines.

Every ``poll_s`` the service reads its sources (in a worker thread), steps
:class:`~meshd.owner.policy.OwnerMachine` and carries out what it decided:

* ``waiting`` and ``suspended`` close the runner's gate (no claims); a task
  claimed but not started is released to peers at once;
* ``suspend`` stops every engine process group with SIGSTOP (process state
  ``T``), and keeps stopping any that start while suspended; ``continue``
  sends SIGCONT;
* ``vacate`` continues the engines and vacates their runs (the runner kills
  them and releases the leases, so peers start the tasks at once);
* ``kill`` SIGKILLs every engine group still there.

Docker engine containers are paused (``docker pause``, the cgroup freezer)
on suspend and unpaused on continue and vacate.

Cancellation leaves the engines as they are: the daemon's stop kills them,
stopped or not (SIGKILL ends a stopped process).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Any, Protocol

import trio

from engines.errors import RunnerUnavailable
from lattice.cid import CID

from ..runtime.logs import get_logger
from .policy import CONTINUE, KILL, RUNNING, SUSPEND, SUSPENDED, VACATE, Decision, OwnerMachine, Readings
from .signals import Source, read_all

log = get_logger("meshd.owner")


class OwnedRunner(Protocol):
    """What the service uses of the runner (``meshd.roles.runner.Runner``)."""

    gate: Any

    def unstarted(self) -> list[CID]: ...

    async def release(self, tasks: Iterable[CID], reason: str) -> int: ...

    async def vacate(self, tasks: Iterable[CID] | None = None) -> int: ...


class OwnedEngines(Protocol):
    """What the service uses of the engine host (``engines.host.EngineHost``)."""

    def process_groups(self) -> tuple[int, ...]: ...

    def kill_engines(self) -> tuple[int, ...]: ...


class OwnedContainers(Protocol):
    """What the service uses of the Docker backend (``engines.docker.DockerRunner``)."""

    def container_ids(self) -> tuple[str, ...]: ...

    async def set_paused(self, paused: bool, ids: Iterable[str] | None = None) -> tuple[str, ...]: ...


class OwnerService:
    """Drives one runner's gate and engines from the owner policy.

    Args:
        runner: The runner whose gate and runs it controls.
        engines: The engine host whose process groups it stops.
        machine: The policy.
        sources: Where the readings come from.
        poll_s: Time between polls.
        containers: The Docker backend whose containers it pauses (None: no Docker).
    """

    name = "owner"

    def __init__(self, runner: OwnedRunner, engines: OwnedEngines, machine: OwnerMachine,
                 sources: list[Source], poll_s: float, containers: OwnedContainers | None = None) -> None:
        self.runner, self.engines, self.machine = runner, engines, machine
        self.containers = containers
        self.paused: set[str] = set()  # Docker containers we paused
        self.sources, self.poll_s = sources, poll_s
        self.readings = Readings()
        self.decision = Decision(machine.state, (), "not polled yet")
        self.stopped: set[int] = set()  # engine groups we SIGSTOPped
        self.counts = {"suspends": 0, "continues": 0, "vacates": 0, "kills": 0}

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/owner`` shows of the policy."""
        since = self.machine.since
        return {"preset": self.machine.options.preset, "state": self.decision.state, "why": self.decision.why,
                "since_s": round(trio.current_time() - since, 1) if since is not None else 0.0,
                "readings": {k: getattr(self.readings, k) for k in self.readings.__slots__},
                "stopped_engine_groups": sorted(self.stopped), "paused_containers": len(self.paused),
                **self.counts}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll and act until cancelled (see the module doc for what that leaves)."""
        task_status.started()
        if not self.machine.options.signals:
            await trio.sleep_forever()  # the server preset: nothing to read, always run
        while True:
            self.readings = await trio.to_thread.run_sync(read_all, self.sources)
            d = self.machine.step(self.readings, trio.current_time())
            if d.actions:
                log.info("owner_policy", state=d.state, actions=",".join(d.actions), why=d.why[:200])
            self.decision = d
            await self._apply(d)
            await trio.sleep(self.poll_s)

    async def _apply(self, d: Decision) -> None:
        gate = self.runner.gate
        if d.state == RUNNING:
            if gate.owner_closed:
                gate.set(owner_closed=False, reason="" if not gate.draining else None)
        elif not gate.owner_closed:
            gate.set(owner_closed=True, reason=f"owner: {d.why}"[:200])
            await self.runner.release(self.runner.unstarted(), "released: the machine's owner is using it")
        if SUSPEND in d.actions:
            self.counts["suspends"] += 1
        if d.state == SUSPENDED:
            self._signal(signal.SIGSTOP)  # again every poll: engines that started since stop too
            await self._pause(True)
        if CONTINUE in d.actions or VACATE in d.actions:
            self._signal(signal.SIGCONT)
            self.stopped.clear()
            await self._pause(False)
            self.counts["continues" if CONTINUE in d.actions else "vacates"] += 1
        if VACATE in d.actions:
            await self.runner.vacate()  # checkpoints first, where the tasks keep them
        if KILL in d.actions:
            self.counts["kills"] += 1
            groups = self.engines.kill_engines()
            if groups:
                log.warning("owner_killed_engines", engine_groups=",".join(map(str, groups)))

    async def _pause(self, paused: bool) -> None:
        """Pause the Docker containers not paused yet, or unpause the ones we paused."""
        if self.containers is None:
            return
        if paused:
            ids = set(self.containers.container_ids()) - self.paused
        else:
            ids, self.paused = self.paused, set()
        if not ids:
            return
        try:
            changed = await self.containers.set_paused(paused, ids)
        except RunnerUnavailable as exc:
            log.warning("owner_pause_failed", error=str(exc)[:200])
            return
        if paused:
            self.paused.update(changed)
            log.info("containers_paused", count=len(changed), at=round(time.time(), 3))

    def _signal(self, sig: int) -> None:
        for g in self.engines.process_groups():
            try:
                os.killpg(g, sig)
            except OSError:
                continue
            if sig == signal.SIGSTOP:
                if g not in self.stopped:
                    log.info("engines_suspended", engine_group=g, at=round(time.time(), 3))
                self.stopped.add(g)





def from_config(owner: Any, runner: OwnedRunner, engines: OwnedEngines) -> OwnerService:
    """The service for ``[owner]`` (:class:`meshd.config.OwnerConfig`)."""
    import dataclasses

    from .policy import PRESETS
    from .signals import FileSource, machine_sources

    options = PRESETS[owner.preset]
    if owner.windows:
        options = dataclasses.replace(options, windows=tuple(owner.windows),
                                      signals=tuple(dict.fromkeys((*options.signals, "window"))))
    sources: list[Source] = ([FileSource(owner.signal_file)] if owner.signal_file
                             else machine_sources(engines.process_groups))
    return OwnerService(runner, engines, OwnerMachine(options), sources, owner.poll_s,
                        containers=getattr(engines, "docker", None))


__all__ = ["OwnedEngines", "OwnedRunner", "OwnerService", "from_config"]
