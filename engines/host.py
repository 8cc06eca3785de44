"""EngineHost: the facade the daemon's Runner role calls to run one task.

``await host.run(engine_cid, task_input)``:

1. checks authorization (:mod:`engines.auth`) first, on the allow-list and
   the signature blocks already in the store; signature CIDs not in the
   store are ignored, never waited for (anyone can add a bogus one to the
   registry).  A refusal is ``Outcome(ok=False, error="not authorized:
   ...")``: nothing is fetched and nothing runs.  Only an engine this node
   knows nothing of (no registry entry, no manifest) is fetched first, as in
   step 2, since its registry entry may still be on its way;
2. loads the manifest from the block store (:class:`EngineMissing` listing
   the absent CIDs when the manifest or any file block is missing, so the
   daemon can fetch them from peers and retry);
3. materializes the engine's files into the cache directory, keyed by file
   CID, verified chunk by chunk on the way in and re-used afterwards;
4. runs it cold (:class:`NativeRunner`) or warm (a :class:`WarmPool` per
   engine CID, started lazily inside the host's own nursery), or hands a
   ``docker-json-runner`` engine to the pluggable :class:`DockerBackend`.

``await host.run_batch(engine_cid, inputs)`` does steps 1-3 once for many
inputs, then runs them in one warm pool batch, or one by one.

Interpreters: a manifest names an interpreter (``"interpreter": "python3"``),
never a path; ``HostOptions.interpreters`` maps names to this node's programs
(``python3`` and ``python`` map to ``sys.executable`` by default, so engines
see the node's numba/numpy).  A manifest without one runs its executable
directly, so ``#!/usr/bin/env python3`` scripts resolve on the sandbox PATH.

Cache integrity: a materialized directory appears under its final name only
by ``rename`` after every byte was verified, so a crash mid-write leaves at
most a ``.tmp-*`` directory that is never read.  The sandbox runs engines
under the node's uid, so an engine could modify cached files it can reach;
run the node under a dedicated uid to rule that out.

Publishing engines (:func:`publish_native`, :func:`publish_signature`) is
:mod:`engines.publish`'s, re-exported here.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import trio

from lattice.cid import CID
from lattice.errors import BlockNotFound

from .auth import AuthPolicy, authorize
from .checkpoint import CONTAINER_DIR, CheckpointDir
from .errors import BadManifest, EngineCorrupt, EngineError, EngineMissing, EngineNotAuthorized
from .ledger import GroupLedger
from .manifest import (DockerManifest, EngineSignature, NativeManifest, PlatformBuild, Resources, current_platform,
                       load_manifest, missing_file_blocks, read_file, signature_from_untrusted)
from .native import PYTHON_SHIM, NativeOptions, NativeRunner, check_timeout
from .outcome import Outcome
from .pool import PoolOptions, WarmPool, WorkerSpec
from .publish import publish_native, publish_signature
from .sandbox import kill_group

if TYPE_CHECKING:  # pragma: no cover
    from lattice.blockstore import BlockStore


_MANIFEST_CACHE = 1024
#: The variable an engine reads its task's ``runner.metadata`` from, as JSON.
METADATA_ENV = "MESHD_TASK_METADATA"


class DockerBackend(Protocol):
    """What the host needs from a Docker runner (implemented in ``engines.docker``)."""

    async def ensure_image(self, tar: bytes | str, image_id: str) -> str:
        """Load the ``docker save`` tarball (bytes or a path) unless ``image_id`` is present; return its ref."""
        ...

    async def run_cold(self, image_ref: str, cmd: Sequence[str], task_input: Any, resources: Resources, *,
                       env: dict[str, str] | None = None, binds: dict[str, str] | None = None) -> Outcome:
        """Run one task in a fresh container, with ``env`` added to its environment and
        ``binds`` (host directory -> container path, read-write) mounted."""
        ...

    async def run_warm(self, image_ref: str, cmd: Sequence[str], task_input: Any, resources: Resources) -> Outcome:
        """Run one task in a long-lived container speaking JSON lines."""
        ...


def _default_interpreters() -> Mapping[str, str]:
    return {"python3": sys.executable, "python": sys.executable}


@dataclass(frozen=True)
class HostOptions:
    """Options of an :class:`EngineHost`.

    Attributes:
        cache_dir: Where engine files are materialized; None = a temporary
            directory created by ``serve`` and removed when it ends.
        native: Sandbox and cold-runner options.
        pool: Options of each warm pool.
        interpreters: Interpreter name -> absolute program path.  Default
            ``python3``/``python`` -> ``sys.executable``.
        platform: Platform key to pick builds by.  Default :func:`current_platform`.
        warm_default: Run warm when the caller passes ``warm=None`` and the
            engine supports it.  Default False.
        max_pools: Warm pools kept at once; idle ones are stopped beyond it
            (oldest first).  Default 8.
        max_resources: Per-field ceiling applied to manifest resources.
        ledger_path: File where the process group of every native engine
            (cold run or warm worker) is recorded while it runs, for the next
            daemon to kill what a crash left (see :mod:`engines.ledger`);
            default None, nothing recorded.
    """

    cache_dir: str | None = None
    native: NativeOptions = NativeOptions()
    pool: PoolOptions = PoolOptions()
    interpreters: Mapping[str, str] = field(default_factory=_default_interpreters)
    platform: str = field(default_factory=current_platform)
    warm_default: bool = False
    max_pools: int = 8
    max_resources: Resources = Resources(cpu_s=3600, memory_mb=65536, timeout_s=3600.0, nofile=4096)
    ledger_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "interpreters", MappingProxyType(dict(self.interpreters)))
        for name, path in self.interpreters.items():
            if not os.path.isabs(path):
                raise ValueError(f"interpreter {name!r} must map to an absolute path")
        if self.max_pools < 1:
            raise ValueError("max_pools must be positive")


@dataclass(frozen=True)
class HostStatistics:
    """Counters of an :class:`EngineHost`."""

    runs: int
    refused: int
    cold: int
    warm: int
    docker: int
    pools: int
    cache_hits: int
    cache_misses: int
    network_isolated: bool | None
    #: Signature CIDs named in the registry whose blocks were not in the
    #: store when an engine's authorization was decided: ignored, never
    #: fetched (a peer can add one that nobody serves).
    ignored_signatures: int = 0


class EngineHost:
    """Loads, authorizes, materializes and runs engines.  A trio service."""

    def __init__(self, store: "BlockStore", options: HostOptions = HostOptions(),
                 policy: AuthPolicy = AuthPolicy(), *, docker: DockerBackend | None = None) -> None:
        self.store = store
        self.options = options
        self.policy = policy
        self.docker = docker
        self.ledger = GroupLedger(options.ledger_path) if options.ledger_path is not None else None
        self.native = NativeRunner(options.native, ledger=self.ledger)
        self._nursery: trio.Nursery | None = None
        self._cache: Path | None = None
        self._dirs: dict[tuple[CID, str, str], Path] = {}
        self._pools: dict[CID, tuple[WarmPool, trio.CancelScope]] = {}
        self._starting: dict[CID, trio.Event] = {}
        self._images: dict[str, str] = {}
        self._manifests: dict[CID, NativeManifest | DockerManifest] = {}
        self._authorized: set[CID] = set()
        self._runs = self._refused = self._cold = self._warm = self._docker = 0
        self._ignored_signatures = 0
        self._hits = self._misses = 0

    def statistics(self) -> HostStatistics:
        return HostStatistics(self._runs, self._refused, self._cold, self._warm, self._docker, len(self._pools),
                              self._hits, self._misses, self.native.statistics().network_isolated,
                              self._ignored_signatures)

    def process_groups(self) -> tuple[int, ...]:
        """Process groups of every engine process this host runs now: cold
        runs and warm pool workers (for a forced shutdown).

        Safe to call from another thread while the host runs (it only copies
        and reads), which is what a shutdown watchdog does when the event
        loop is stuck.
        """
        groups = list(self.native.process_groups())
        for pool, _ in tuple(self._pools.values()):
            groups.extend(pool.process_groups())
        return tuple(groups)

    def kill_engines(self) -> tuple[int, ...]:
        """SIGKILL every engine process group :meth:`process_groups` names.

        Synchronous and thread-safe, for a forced shutdown; the graceful path
        is cancellation (see :meth:`serve`).  Docker containers are the
        Docker backend's (see ``engines.docker.DockerRunner.kill_containers``).

        Returns:
            The groups that were still there to kill.
        """
        return tuple(g for g in self.process_groups() if kill_group(g))

    async def serve(self, *, task_status: trio.TaskStatus[EngineHost] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host until cancelled.

        Cancellation stops every warm pool (their workers are killed) and
        removes the cache directory if ``serve`` created it.
        """
        own = self.options.cache_dir is None
        cache = Path(tempfile.mkdtemp(prefix="meshd-engines-")) if own else Path(self.options.cache_dir or "")
        try:
            cache.mkdir(parents=True, exist_ok=True)
            self._cache = cache
            await self.native.isolation()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._pools.clear()
            if own:
                shutil.rmtree(cache, ignore_errors=True)

    async def run(self, engine_cid: CID, task_input: Any, *, timeout_s: float | None = None,
                  warm: bool | None = None, signatures: Iterable[EngineSignature | CID] = (),
                  metadata: dict[str, Any] | None = None,
                  checkpoint: CheckpointDir | None = None) -> Outcome:
        """Run ``task_input`` on engine ``engine_cid``.

        Args:
            engine_cid: The manifest CID.
            task_input: A JSON-serializable value.
            timeout_s: Overrides the manifest's ``timeout_s`` (capped by
                ``HostOptions.max_resources``).
            warm: True = use a warm pool (refused if the engine cannot run
                warm), False = cold, None = ``HostOptions.warm_default`` when
                the engine supports it.
            signatures: ``meshd/engine-sig`` records, or their CIDs in the store.
            metadata: The task's ``runner.metadata`` (the whitepaper passes
                "metadata and input to the engine").  The engine reads it as
                JSON from ``$MESHD_TASK_METADATA``.  A warm process serves
                many tasks, so a run with metadata is always cold.
            checkpoint: Run with checkpoints in this directory (see
                :mod:`engines.checkpoint`): the engine runs cold with the
                directory named in its environment (a Docker engine's is
                mounted at ``/meshd/checkpoint``).

        Returns:
            The outcome; refusals, bad manifests and engine failures are
            ``ok=False``.

        Raises:
            EngineMissing: manifest, signature or file blocks are absent from
                the store; ``missing`` lists them.
            RuntimeError: ``serve`` is not running.

        Cancellation kills a cold run's processes; for warm runs see
        :meth:`WarmPool.run`.  A materialization cut short leaves only a
        temporary directory that is never used.
        """
        admitted = self._admit(engine_cid, timeout_s, signatures, 1)
        if isinstance(admitted, Outcome):
            return admitted
        manifest, resources = admitted
        env: dict[str, str] = {}
        if metadata:
            try:
                env[METADATA_ENV] = json.dumps(metadata, allow_nan=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                return Outcome(ok=False, error=f"metadata is not JSON: {exc}")
            warm = False
        binds: dict[str, str] = {}
        rw: tuple[str, ...] = ()
        if checkpoint is not None:  # a run of its own, cold, with the directory in its environment
            warm = False
            if isinstance(manifest, DockerManifest):
                env.update(checkpoint.env(CONTAINER_DIR))
                binds[checkpoint.path] = CONTAINER_DIR
                os.chmod(checkpoint.path, 0o777)  # the container's user is not the node's
            else:
                env.update(checkpoint.env())
                rw = (checkpoint.path,)  # bound into the jail at the same place
                os.chmod(checkpoint.path, 0o777)  # a node run as root runs engines as nobody
        if isinstance(manifest, DockerManifest):
            return await self._run_docker(manifest, task_input, resources, warm, env, binds)
        (outcome,) = await self._run_native(engine_cid, manifest, [task_input], resources, warm, batch=False,
                                            env=env, rw=rw)
        return outcome

    async def run_batch(self, engine_cid: CID, inputs: list[Any], *, timeout_s: float | None = None,
                        warm: bool | None = None, signatures: Iterable[EngineSignature | CID] = ()) -> list[Outcome]:
        """Run each of ``inputs`` on engine ``engine_cid``, loading and authorizing it once.

        Arguments, refusals and raising are :meth:`run`'s (a refusal is one
        outcome per input).  A warm run is one :meth:`WarmPool.run_batch`,
        where ``timeout_s`` is per input (see there for the batch's deadline
        and what a dying worker fails); a cold or Docker engine runs the
        inputs one after another, each as :meth:`run` would.

        Returns:
            One outcome per input, in order.

        Cancellation is :meth:`run`'s for the input running then (or
        :meth:`WarmPool.run_batch`'s); the outcomes of a cold batch's earlier
        inputs are lost.
        """
        admitted = self._admit(engine_cid, timeout_s, signatures, len(inputs))
        if isinstance(admitted, Outcome):
            return [admitted] * len(inputs)
        manifest, resources = admitted
        if isinstance(manifest, DockerManifest):
            return [await self._run_docker(manifest, value, resources, warm) for value in inputs]
        return await self._run_native(engine_cid, manifest, inputs, resources, warm, batch=True)

    def authorized(self, engine_cid: CID, signatures: Iterable[EngineSignature | CID] = ()) -> bool:
        """Whether ``engine_cid`` is authorized on what is here (the allow-list
        and the signature blocks in the store), fetching nothing.

        A caller that may fetch (the daemon's runner) asks this first, and
        fetches absent signature blocks only for an engine not authorized
        yet, so an allow-listed engine never waits on a signature CID.
        """
        if engine_cid in self._authorized:
            return True
        sigs, missing = self._signatures(signatures)
        self._ignored_signatures += len(missing)
        try:
            authorize(engine_cid, sigs, self.policy)
        except EngineNotAuthorized:
            return False
        self._authorized.add(engine_cid)
        return True

    # -- helpers ----------------------------------------------------------------

    def _admit(self, engine_cid: CID, timeout_s: float | None, signatures: Iterable[EngineSignature | CID],
               n: int) -> tuple[NativeManifest | DockerManifest, Resources] | Outcome:
        """Count ``n`` runs; the engine's manifest and clamped resources, or the refusal (see :meth:`run`)."""
        if self._nursery is None or self._cache is None:
            raise RuntimeError("EngineHost.run needs EngineHost.serve to be running")
        check_timeout(timeout_s)
        self._runs += n
        if engine_cid not in self._authorized:
            # Authorization first: a refused engine costs no fetch of its
            # manifest or files, and signature blocks that are not here are
            # ignored (one that nobody serves must not stall every attempt).
            sigs, missing = self._signatures(signatures)
            self._ignored_signatures += len(missing)
            try:
                authorize(engine_cid, sigs, self.policy)
            except EngineNotAuthorized as exc:
                if not sigs and not missing and not self.store.has(engine_cid):
                    # This node knows nothing of the engine yet: no registry
                    # entry, no manifest (a task can arrive before the
                    # registry's delta).  Fetching the manifest gives the
                    # registry time to arrive; the retry decides on what is
                    # here then.  Signature blocks are never fetched.
                    raise EngineMissing(f"engine {engine_cid} is not known here yet", [engine_cid]) from None
                self._refused += n
                note = f"; {len(missing)} signature block(s) not in the store, ignored" if missing else ""
                return Outcome(ok=False, error=f"not authorized: {exc}{note}")
            # The policy is fixed for the host's life and a valid signature
            # stays valid, so a granted authorization is cached; refusals are
            # not (a trusted signature may arrive later).
            self._authorized.add(engine_cid)
        manifest = self._manifests.get(engine_cid)
        if manifest is None:
            try:
                manifest = load_manifest(self.store, engine_cid)
            except BadManifest as exc:
                return Outcome(ok=False, error=f"bad manifest: {exc}")
            # A CID names immutable bytes, so a parsed manifest never goes stale.
            if len(self._manifests) >= _MANIFEST_CACHE:
                self._manifests.pop(next(iter(self._manifests)))
            self._manifests[engine_cid] = manifest
        return manifest, self._clamp(manifest.resources, timeout_s)

    def _signatures(self, items: Iterable[EngineSignature | CID]) -> tuple[list[EngineSignature], list[CID]]:
        """The signatures that decode from the local store, and the CIDs not in it."""
        sigs: list[EngineSignature] = []
        missing: list[CID] = []
        for item in items:
            if isinstance(item, EngineSignature):
                sigs.append(item)
                continue
            try:
                sigs.append(signature_from_untrusted(self.store.get(item)))
            except BlockNotFound:
                missing.append(item)
            except BadManifest:
                continue  # a malformed signature authorizes nothing
        return sigs, missing

    def _clamp(self, res: Resources, timeout_s: float | None) -> Resources:
        cap = self.options.max_resources
        return Resources(cpu_s=min(res.cpu_s, cap.cpu_s), memory_mb=min(res.memory_mb, cap.memory_mb),
                         timeout_s=min(res.timeout_s if timeout_s is None else timeout_s, cap.timeout_s),
                         nofile=min(res.nofile, cap.nofile))

    async def _run_docker(self, m: DockerManifest, task_input: Any, res: Resources, warm: bool | None,
                          env: dict[str, str] | None = None, binds: dict[str, str] | None = None) -> Outcome:
        if self.docker is None:
            return Outcome(ok=False, error="docker runner unavailable on this node", runner="docker-cold")
        use_warm = m.warm_capable if warm is None and self.options.warm_default else bool(warm)
        if use_warm and not m.warm_capable:
            return Outcome(ok=False, error="engine cannot run warm (protocol is not jsonl)", runner="docker-warm")
        ref = self._images.get(m.image.id)
        if ref is None:
            missing = missing_file_blocks(self.store, m.image.tar)
            if missing:
                raise EngineMissing(f"image tarball of {m.name} is incomplete", missing)
            tar_path = await self._materialize(PlatformBuild(m.image.tar, "image.tar", "exe"))
            ref = await self.docker.ensure_image(str(tar_path / "image.tar"), m.image.id)
            self._images[m.image.id] = ref
        self._docker += 1
        if use_warm:
            return await self.docker.run_warm(ref, list(m.cmd), task_input, res)
        return await self.docker.run_cold(ref, list(m.cmd), task_input, res, env=env,
                                          **({"binds": binds} if binds else {}))

    async def _run_native(self, cid: CID, m: NativeManifest, inputs: list[Any], res: Resources,
                          warm: bool | None, *, batch: bool, env: dict[str, str] | None = None,
                          rw: tuple[str, ...] = ()) -> list[Outcome]:
        """Run ``inputs`` (one per outcome; a warm batch is one :meth:`WarmPool.run_batch`)."""
        build = m.platforms.get(self.options.platform)
        if build is None:
            return [Outcome(ok=False, error=f"no build for platform {self.options.platform} "
                                            f"(engine has {sorted(m.platforms)})")] * len(inputs)
        use_warm = m.warm_capable if warm is None and self.options.warm_default else bool(warm)
        if use_warm and not m.warm_capable:
            return [Outcome(ok=False, error="engine cannot run warm (protocol json without serve_args)",
                            runner="native-warm")] * len(inputs)
        if (build.file, build.format, build.executable) not in self._dirs:
            missing = missing_file_blocks(self.store, build.file)
            if missing:
                raise EngineMissing(f"files of engine {cid} are incomplete", missing)
        try:
            root = await self._materialize(build)
        except EngineCorrupt as exc:
            return [Outcome(ok=False, error=f"engine files are corrupt: {exc}")] * len(inputs)
        interp = None
        if m.interpreter is not None or m.protocol == "python":
            name = m.interpreter or "python3"
            interp = self.options.interpreters.get(name)
            if interp is None:
                return [Outcome(ok=False, error=f"interpreter {name!r} is not available on this node")] * len(inputs)
        exe = str(root / build.executable)
        if m.protocol == "python":
            assert m.entry is not None and interp is not None
            base = [interp, "-I", "-c", PYTHON_SHIM, m.entry]
        else:
            base = ([interp] if interp else []) + [exe, *m.args]
        if not use_warm:
            outcomes = []
            for task_input in inputs:
                self._cold += 1
                outcomes.append(await self.native.run(base, task_input, resources=res, cwd=str(root),
                                                      protocol="jsonl" if m.protocol == "jsonl" else "json",
                                                      env=env, **({"rw": rw} if rw else {})))
            return outcomes
        if m.protocol == "python":
            spec = WorkerSpec("python", str(root), entry=m.entry, resources=res)
        else:
            argv = base + list(m.serve_args or ()) if m.protocol == "json" else base
            spec = WorkerSpec("jsonl", str(root), argv=tuple(argv), resources=res)
        try:
            pool = await self._pool(cid, spec)
        except EngineError as exc:
            return [Outcome(ok=False, error=str(exc), runner="native-warm")] * len(inputs)
        self._warm += len(inputs)
        if batch:
            outcomes = await pool.run_batch(inputs, timeout_s=res.timeout_s)
        else:
            outcomes = [await pool.run(inputs[0], timeout_s=res.timeout_s)]
        if pool.statistics().broken is not None:
            self._stop_pool(cid)
        return outcomes

    async def _pool(self, cid: CID, spec: WorkerSpec) -> WarmPool:
        while True:
            entry = self._pools.get(cid)
            if entry is not None:
                self._pools[cid] = self._pools.pop(cid)  # most recently used last
                return entry[0]
            starting = self._starting.get(cid)
            if starting is None:
                break
            await starting.wait()
        done = self._starting[cid] = trio.Event()
        try:
            self._evict()
            pool = WarmPool(spec, self.options.pool, self.options.native, ledger=self.ledger)
            scope = trio.CancelScope()

            async def service(*, task_status: trio.TaskStatus[WarmPool] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await pool.serve(task_status=task_status)

            assert self._nursery is not None
            await self._nursery.start(service)
            self._pools[cid] = (pool, scope)
            return pool
        finally:
            del self._starting[cid]
            done.set()

    def _evict(self) -> None:
        while len(self._pools) >= self.options.max_pools:
            for cid, (pool, _) in self._pools.items():
                s = pool.statistics()
                if s.busy == 0 and s.pending == 0:
                    self._stop_pool(cid)
                    break
            else:
                return  # every pool is busy: exceed the cap rather than kill tasks

    def _stop_pool(self, cid: CID) -> None:
        entry = self._pools.pop(cid, None)
        if entry is not None:
            entry[1].cancel()

    async def _materialize(self, build: PlatformBuild) -> Path:
        key = (build.file, build.format, build.executable)
        known = self._dirs.get(key)
        if known is not None:
            self._hits += 1
            return known
        assert self._cache is not None
        final = self._cache / f"{build.file}.{build.format}"
        target = final / build.executable if build.format == "exe" else final
        if target.exists():
            self._hits += 1
        else:
            self._misses += 1
            data = await trio.to_thread.run_sync(read_file, self.store, build.file)
            await trio.to_thread.run_sync(_write_dir, self._cache, final, build, data)
        if build.format == "tar" and not (final / build.executable).is_file():
            raise EngineCorrupt(f"archive {build.file} has no file {build.executable!r}")
        self._dirs[key] = final
        return final


def _write_dir(cache: Path, final: Path, build: PlatformBuild, data: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        if build.format == "exe":
            if final.exists():
                # Same file, another executable name: add it in place (atomic rename).
                tmp_file = tmp / "f"
                tmp_file.write_bytes(data)
                tmp_file.chmod(0o555)
                dest = final / build.executable
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_file, dest)
                return
            dest = tmp / build.executable
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.chmod(0o555)
        else:
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                    tf.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise EngineCorrupt(f"archive {build.file} cannot be unpacked: {exc}") from None
        # Engine files are public content; a jailed engine runs as another
        # uid when the node is root, so its directory must be readable by all
        # (mkdtemp made it 0700).  The home above it stays private.
        tmp.chmod(0o755)
        # The rename is the commit point: readers only ever see complete dirs.
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["DockerBackend", "EngineHost", "HostOptions", "HostStatistics", "current_platform",
           "publish_native", "publish_signature"]
