"""Runs engines in Docker containers, cold (one container per task) or warm.

Cold: create, attach, start, feed the input JSON on stdin and close it, wait,
then read stdout from the container's log (``logs`` after ``wait``, never the
attach stream alone: dockerd 20.10 may drop the last chunk of an attach
stream, moby/moby#43860). The attach stream is still read while the container
runs, to count output bytes and kill a container that floods.

Warm: one long-lived container per (image, command, limits), started with
``MESHD_ENGINE_MODE=jsonl``; each task writes one JSON line to its stdin and
reads one JSON line back. Tasks on one container are serialized by a lock. A
warm container that dies, times out or breaks the protocol is removed, the task
in flight fails with a clear error, and the next task starts a fresh one.

Every container is sandboxed (no network, read-only root with a small tmpfs
on /tmp, uid 65534, all capabilities dropped, no-new-privileges, memory, CPU
and pid limits), labelled ``org.meshd.runner=docker``, and removed whatever
happens, cancellation included. Blocking docker-py calls run in threads;
docker-py and socket errors are mapped to :mod:`engines.errors` here.

The options and limits (what a container may use) and the judging of its
output live in :mod:`engines._docker_policy`, and are re-exported here; the
blocking container I/O is in :mod:`engines._docker_io`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import trio
from docker.types import LogConfig, Ulimit

from . import _docker_io as dio
from . import image as _image
from ._docker_policy import MiB, ContainerLimits, DockerOptions
from ._docker_policy import encode_input as _encode
from ._docker_policy import judge_exit as _judge
from ._docker_policy import parse_output as _parse
from .errors import EngineMissing, RunnerUnavailable
from .outcome import Outcome

__all__ = [
    "ContainerLimits",
    "DockerOptions",
    "DockerRunner",
    "DockerRunnerStatistics",
    "HOME_LABEL",
    "RUNNER_LABEL",
    "open_docker_runner",
]

RUNNER_LABEL = "org.meshd.runner"
#: Docker CPU weight of engine containers (2, the kernel's minimum; the default is 1024).
_IDLE_CPU_SHARES = 2
#: Label naming the daemon (home) that created a container (``DockerOptions.owner``).
HOME_LABEL = "org.meshd.home"


@dataclass(frozen=True)
class DockerRunnerStatistics:
    """A snapshot of a runner's counters."""

    cold_runs: int = 0
    warm_runs: int = 0
    failures: int = 0
    timeouts: int = 0
    warm_containers: int = 0
    warm_starts: int = 0
    containers_removed: int = 0


@asynccontextmanager
async def open_docker_runner(options: DockerOptions) -> AsyncIterator["DockerRunner"]:
    """Connects to the daemon and yields a ready :class:`DockerRunner`.

    Raises:
        RunnerUnavailable: the daemon does not answer.
    """
    runner = DockerRunner(options)
    await runner.open()
    try:
        yield runner
    finally:
        with trio.CancelScope(shield=True):
            await runner.aclose()


class DockerRunner:
    """The Docker backend of the engine host (``run_cold``, ``run_warm``,
    ``ensure_image``). Open it with :func:`open_docker_runner`."""

    def __init__(self, options: DockerOptions) -> None:
        self.options = options
        self._client: docker.DockerClient | None = None
        self._warm: OrderedDict[tuple, dio.WarmSlot] = OrderedDict()
        self._stats = DockerRunnerStatistics()
        self._live: set[str] = set()  # ids of containers created and not yet removed

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Connects to the daemon (negotiating the API version).

        Raises:
            RunnerUnavailable: the daemon does not answer.
        """
        if self._client is not None:
            return

        def connect() -> docker.DockerClient:
            client = docker.DockerClient(
                base_url=self.options.docker_host,
                version="auto",
                timeout=int(math.ceil(self.options.api_timeout_s)),
            )
            client.ping()
            return client

        self._client = await self._call(connect)

    async def aclose(self) -> None:
        """Removes every warm container and closes the client.

        Cancellation leaves the containers that were not yet removed running;
        :func:`open_docker_runner` shields this call for that reason.
        """
        slots, self._warm = list(self._warm.values()), OrderedDict()
        for slot in slots:
            if slot.container is not None:
                await self._discard_warm(slot)
        if self._client is not None:
            client, self._client = self._client, None
            await trio.to_thread.run_sync(client.close)

    async def remove_leftovers(self) -> tuple[str, ...]:
        """Force-remove the containers labelled with ``options.owner`` (call
        after :meth:`open`, before the first run: they are a previous
        daemon's).  Errors on one container are ignored.

        Returns:
            The ids removed.  Cancellation leaves the rest for the next start.
        """
        if not self.options.owner:
            return ()
        return await self._call(dio.remove_labelled, self.client.api, f"{HOME_LABEL}={self.options.owner}")

    def container_ids(self) -> tuple[str, ...]:
        """Containers this runner created and has not removed yet (cold runs
        in flight and warm containers).  Thread-safe (one atomic copy)."""
        return tuple(self._live)

    async def set_paused(self, paused: bool, ids: Iterable[str] | None = None) -> tuple[str, ...]:
        """Pause (freeze in place, ``docker pause``) or unpause the containers
        ``ids`` (default every one of :meth:`container_ids`): the owner
        policy's suspend and continue.

        A container already in the wanted state, or removed meanwhile, is
        skipped.  Cancellation leaves the containers handled so far as they are.

        Returns:
            The ids whose state changed.

        Raises:
            RunnerUnavailable: the daemon does not answer.
        """
        api = self.client.api
        changed = []
        for cid in self.container_ids() if ids is None else tuple(ids):
            try:
                await self._call(api.pause if paused else api.unpause, cid)
            except dio.TaskFailed:
                continue  # already (un)paused, or gone
            changed.append(cid)
        return tuple(changed)

    def kill_containers(self, timeout_s: float = 3.0) -> tuple[str, ...]:
        """Force-remove every container of :meth:`container_ids`, synchronously.

        For a forced shutdown, from any thread (the event loop may be stuck):
        it uses a client of its own, so it never waits on a docker-py call in
        flight.  Errors are ignored (best effort, bounded by ``timeout_s``
        per request).

        Returns:
            The ids it asked Docker to remove.
        """
        ids = self.container_ids()
        if not ids:
            return ()
        try:
            api = docker.APIClient(base_url=self.options.docker_host, timeout=max(1, int(math.ceil(timeout_s))))
        except docker.errors.DockerException:
            return ()
        try:
            for cid in ids:
                try:
                    api.remove_container(cid, force=True)
                except (docker.errors.DockerException, OSError, requests.exceptions.RequestException):
                    pass
        finally:
            api.close()
        return ids

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client (for image helpers and tests)."""
        if self._client is None:
            raise RunnerUnavailable("DockerRunner is not open")
        return self._client

    def statistics(self) -> DockerRunnerStatistics:
        """Returns a snapshot of the counters."""
        return replace(self._stats, warm_containers=sum(
            1 for s in self._warm.values() if s.container is not None))

    # -- images ----------------------------------------------------------------

    async def ensure_image(self, tar: "str | Path | bytes", image_id: str) -> str:
        """Loads ``tar`` (a ``docker save`` tarball) unless ``image_id`` is present.

        Returns:
            The image id (``sha256:...``), usable as ``image_ref``.

        Raises:
            EngineCorrupt: the tarball is not an image or not ``image_id``.
            RunnerUnavailable: the daemon does not answer.
        """
        client = self.client
        if await self._call(_image.has_image, client, image_id):
            return _image.normalize_id(image_id)
        return await self._call(_image.load_image, client, tar, image_id)

    # -- cold --------------------------------------------------------------------

    async def run_cold(self, image_ref: str, cmd: Sequence[str] | None, input: Any,
                       resources: Any = None, *, env: dict[str, str] | None = None,
                       binds: dict[str, str] | None = None) -> Outcome:
        """Runs one task in a fresh container, removed afterwards.

        ``env`` adds variables to the container's environment (the task's
        metadata); ``MESHD_ENGINE_MODE`` is always meshd's.  ``binds`` mounts
        host directories read-write (host path -> container path: the task's
        checkpoint directory, :mod:`engines.checkpoint`).

        Returns:
            The outcome; ``ok=False`` with a reason for a timeout, a non-zero
            exit, OOM, too much output or output that is not JSON.

        Raises:
            EngineMissing: ``image_ref`` is not loaded.
            RunnerUnavailable: the daemon does not answer.

        Cancellation kills and removes the container.
        """
        limits = self.options.limits(resources)
        payload = _encode(input)
        started = time.monotonic()
        self._bump(cold_runs=1)
        try:
            container = await self._create_shielded(image_ref, cmd, limits, "cold", env, binds)
        except dio.TaskFailed as exc:
            return self._finish(Outcome(ok=False, error=str(exc)), started, "docker-cold")
        try:
            with trio.move_on_after(limits.timeout_s) as scope:
                outcome = await self._drive_cold(container, payload, limits)
            if scope.cancelled_caught:
                self._bump(timeouts=1)
                outcome = Outcome(ok=False, error=f"timeout after {limits.timeout_s:g} s")
        except dio.TaskFailed as exc:
            outcome = Outcome(ok=False, error=str(exc))
        finally:
            with trio.CancelScope(shield=True):
                await self._remove(container)
        return self._finish(outcome, started, "docker-cold")

    async def _drive_cold(self, container: Any, payload: bytes,
                          limits: ContainerLimits) -> Outcome:
        stream = await self._call(dio.attach, container)
        try:
            await self._call(container.start)
            flooded = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._call, dio.send_and_close, stream, payload)
                counts = await self._call(dio.drain, stream, self.options.output_limit_bytes)
                flooded = counts is None
                if flooded:
                    nursery.cancel_scope.cancel()
            if flooded:
                raise dio.TaskFailed(
                    f"output exceeds {self.options.output_limit_bytes} bytes")
            status = await self._call(self._wait, container, limits.timeout_s)
            state = (await self._call(dio.inspect, container))["State"]
            stdout, stderr = await self._call(self._logs, container)
        finally:
            dio.close(stream)
        return _judge(stdout, stderr, status.get("StatusCode", -1),
                      bool(state.get("OOMKilled")), self.options.output_limit_bytes)

    # -- warm ------------------------------------------------------------------

    async def run_warm(self, image_ref: str, cmd: Sequence[str] | None, input: Any,
                       resources: Any = None) -> Outcome:
        """Runs one task on the warm container for (image, cmd, limits).

        Starts that container first when there is none. Tasks for one
        container run one at a time, in arrival order.

        Returns:
            The outcome; when the container dies, times out, floods or breaks
            the one-line protocol the task fails, the container is removed
            and the next task starts a fresh one.

        Raises:
            EngineMissing: ``image_ref`` is not loaded.
            RunnerUnavailable: the daemon does not answer.

        Cancellation kills and removes the container (its state is unknown).
        """
        limits = self.options.limits(resources)
        payload = _encode(input)
        key = (image_ref, tuple(cmd or ()), replace(limits, timeout_s=None))
        slot = self._warm.get(key)
        if slot is None:
            slot = self._warm[key] = dio.WarmSlot(key)
        self._warm.move_to_end(key)
        started = time.monotonic()
        self._bump(warm_runs=1)
        async with slot.lock:
            outcome: Outcome | None = None
            timed_out = False
            try:
                if slot.container is None:
                    await self._evict_idle()
                    await self._start_warm(slot, image_ref, cmd, limits)
                with trio.move_on_after(limits.timeout_s) as scope:
                    line, stderr = await self._call(
                        slot.exchange, payload, self.options.output_limit_bytes,
                        self.options.stderr_limit_bytes)
                    outcome = _parse(line, stderr, self.options.output_limit_bytes)
                if scope.cancelled_caught:
                    timed_out = True
                    self._bump(timeouts=1)
                    outcome = Outcome(ok=False, error=f"timeout after {limits.timeout_s:g} s")
            except dio.TaskFailed as exc:
                outcome = Outcome(ok=False, error=str(exc))
            except dio.WarmDied as exc:
                outcome = await self._died(slot, exc.stderr)
            finally:
                # An abandoned or failed exchange leaves the stream out of step.
                if outcome is None or timed_out or not slot.healthy:
                    with trio.CancelScope(shield=True):
                        await self._discard_warm(slot)
        return self._finish(outcome, started, "docker-warm")

    async def _start_warm(self, slot: "dio.WarmSlot", image_ref: str,
                          cmd: Sequence[str] | None, limits: ContainerLimits) -> None:
        container = await self._create_shielded(image_ref, cmd, limits, "jsonl")
        slot.container, slot.healthy = container, True
        try:
            slot.stream = await self._call(dio.attach, container)
            await self._call(container.start)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._discard_warm(slot)
            raise
        self._bump(warm_starts=1)

    async def _died(self, slot: "dio.WarmSlot", stderr: str) -> Outcome:
        """Explains why a warm container's stream ended."""
        reason = "warm container exited"
        with trio.move_on_after(self.options.cleanup_timeout_s):
            try:
                status = await self._call(self._wait, slot.container, 0)
                state = (await self._call(dio.inspect, slot.container))["State"]
                reason = (f"warm container exited with status {status.get('StatusCode')}"
                          + (" (out of memory: OOM-killed)" if state.get("OOMKilled") else ""))
            except (dio.TaskFailed, EngineMissing):
                pass
        return Outcome(ok=False, error=reason, stderr=stderr)

    async def _evict_idle(self) -> None:
        idle = [s for s in self._warm.values()
                if s.container is not None and not s.lock.locked()]
        excess = len([s for s in self._warm.values() if s.container is not None]) \
            - self.options.max_warm_containers + 1
        # Slots stay in the table (a task may hold a reference); only their
        # containers go.
        for slot in idle[:max(0, excess)]:
            with trio.CancelScope(shield=True):
                await self._discard_warm(slot)

    async def _discard_warm(self, slot: "dio.WarmSlot") -> None:
        container, slot.container, slot.healthy = slot.container, None, False
        stream, slot.stream = slot.stream, None
        slot.pending.clear()
        if container is not None:
            await self._remove(container)
        dio.close(stream)

    # -- shared helpers ----------------------------------------------------------

    async def _create_shielded(self, image_ref: str, cmd: Sequence[str] | None,
                               limits: ContainerLimits, mode: str, env: dict[str, str] | None = None,
                               binds: dict[str, str] | None = None) -> Any:
        # Shielded: a create abandoned half-way would leave a container
        # nobody knows the id of. It is one short API call.
        with trio.CancelScope(shield=True):
            container = await self._call(self._create, image_ref, cmd, limits, mode, env, binds)
        self._live.add(container.id)
        # No checkpoint between here and the caller's try/finally that
        # removes it, so a pending cancellation cannot leak the container.
        return container

    def _create(self, image_ref: str, cmd: Sequence[str] | None,
                limits: ContainerLimits, mode: str, env: dict[str, str] | None = None,
                binds: dict[str, str] | None = None) -> Any:
        o = self.options
        api = self.client.api
        host_config = api.create_host_config(
            binds={h: {"bind": c, "mode": "rw"} for h, c in (binds or {}).items()} or None,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={o.tmpfs_bytes},mode=1777"},
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            nano_cpus=int(limits.cpus * 1e9),
            # The smallest CPU weight (the default is 1024): under contention
            # the owner's processes come first, as nice 19 does for native engines.
            cpu_shares=_IDLE_CPU_SHARES,
            pids_limit=limits.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            # The json-file log is where stdout is read from after exit. The
            # size cap only guards the disk: a flood is killed on the attach
            # stream long before (json-file's encoding is at most ~6x larger).
            ulimits=[Ulimit(name=n, soft=v, hard=v) for n, v in
                     (("cpu", limits.cpu_s), ("nofile", limits.nofile)) if v],
            log_config=LogConfig(type="json-file", config={
                "max-size": str(8 * o.output_limit_bytes + MiB), "max-file": "1"}),
        )
        try:
            created = api.create_container(
                image_ref,
                command=list(cmd) if cmd else None,
                user=o.user,
                stdin_open=True,  # with detach=False: attach stdin, StdinOnce
                environment={**(env or {}), "MESHD_ENGINE_MODE": mode},
                labels={RUNNER_LABEL: "docker", f"{RUNNER_LABEL}.mode": mode,
                        **({HOME_LABEL: o.owner} if o.owner else {})},
                network_disabled=True,
                host_config=host_config,
                use_config_proxy=False,
            )
        except docker.errors.ImageNotFound:
            raise EngineMissing(f"image {image_ref} is not loaded", [image_ref]) from None
        # A model without the extra inspect round trip; only its id is used.
        return self.client.containers.prepare_model({"Id": created["Id"]})

    def _wait(self, container: Any, timeout_s: float) -> dict:
        # docker-py's default read timeout (api_timeout_s) must not cut a
        # long task short: the task's own timeout is enforced by trio.
        return container.wait(timeout=timeout_s + self.options.cleanup_timeout_s)

    def _logs(self, container: Any) -> tuple[bytes, str]:
        stdout = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True)
        return stdout, dio.tail(err, self.options.stderr_limit_bytes)

    async def _remove(self, container: Any) -> None:
        """Kills and removes ``container``; gives up after cleanup_timeout_s."""
        with trio.move_on_after(self.options.cleanup_timeout_s):
            try:
                await self._call(dio.force_remove, container)
                self._live.discard(container.id)
                self._bump(containers_removed=1)
            except (dio.TaskFailed, EngineMissing, RunnerUnavailable):
                pass

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Runs a blocking docker-py call in a thread, mapping its errors.

        The thread is abandoned on cancellation (the callers then remove the
        container, which unblocks it).
        """
        try:
            return await trio.to_thread.run_sync(
                dio.guarded, fn, *args, abandon_on_cancel=True)
        except dio.Unavailable as exc:
            raise RunnerUnavailable(f"Docker daemon unavailable: {exc}") from None

    def _finish(self, outcome: Outcome, started: float, runner: str) -> Outcome:
        if not outcome.ok:
            self._bump(failures=1)
        return replace(outcome, duration_s=time.monotonic() - started, runner=runner)

    def _bump(self, **deltas: int) -> None:
        self._stats = replace(self._stats, **{
            k: getattr(self._stats, k) + v for k, v in deltas.items()})
