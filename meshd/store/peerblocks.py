"""Blocks from the shared objects, validated once and rejected for good.

Any member may have written a task body, a linked task definition, a result
output or an engine manifest that the queue, the results or the engine
registry name.  :class:`PeerBlocks` decodes each through its ``_untrusted``
decoder once, keeps the valid ones in a bounded cache, and records a block
that fails in the :class:`~meshd.store.quarantine.Quarantine` by CID, so it
is never decoded again (a CID names its bytes: a block that failed once
fails forever).  :class:`meshd.node.Node` reads them through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines.errors import EngineMissing
from engines.manifest import NativeManifest, load_manifest
from lattice import codec, task
from lattice.cid import CID
from lattice.errors import BadInput, BadRecord, BlockNotFound

from .quarantine import Quarantine

__all__ = ["PeerBlocks"]


class PeerBlocks:
    """Validated peer blocks over a block store (no I/O at construction).

    Args:
        store: The node's block store (read in the caller's thread).
        quarantine: Where rejected CIDs are remembered.
        on_bad_task: Called with a task CID whose body is rejected (now or
            earlier), so the queue stops offering it.
    """

    #: Validated records kept in memory (task bodies and linked definitions).
    RECORD_CACHE = 20_000

    def __init__(self, store: Any, quarantine: Quarantine, *, on_bad_task: Callable[[CID], None]) -> None:
        self.store = store
        self.quarantine = quarantine
        self._on_bad_task = on_bad_task
        self._records: dict[CID, dict[str, Any]] = {}
        self._definitions: dict[CID, dict[str, Any]] = {}
        self._platforms: dict[CID, frozenset[str] | None] = {}
        self._deterministic: dict[CID, bool] = {}

    def remember_task(self, cid: CID, rec: dict[str, Any]) -> None:
        """Keep a task body validated elsewhere (the API's enqueue), so it is not decoded again."""
        self._remember(self._records, cid, rec)

    def _reject(self, cid: CID, kind: str, exc: BadInput) -> BadRecord:
        if self.quarantine.add(cid, kind, str(exc)) and kind == "bad_task":
            self._on_bad_task(cid)
        return BadRecord(f"{kind.replace('_', ' ')} {cid}: {exc}")

    def _rejected(self, cid: CID, kind: str) -> BadRecord:
        return BadRecord(f"{kind.replace('_', ' ')} {cid} was rejected earlier: {self.quarantine.reason(cid)}")

    def _remember(self, cache: dict[CID, dict[str, Any]], cid: CID, rec: dict[str, Any]) -> None:
        if len(cache) >= self.RECORD_CACHE:
            del cache[next(iter(cache))]  # dicts keep insertion order: the oldest goes
        cache[cid] = rec

    def task_record(self, cid: CID) -> dict[str, Any]:
        """The validated task body named ``cid``.

        Any member may have written it, so it goes through
        :func:`lattice.task.task_from_block_untrusted` once; a body that fails
        is quarantined by CID and never decoded again.

        Raises:
            BlockNotFound: The body is not in the local store (yet).
            BadRecord: The body is not a valid task (now or earlier).
        """
        rec = self._records.get(cid)
        if rec is not None:
            return rec
        if cid in self.quarantine:
            self._on_bad_task(cid)
            raise self._rejected(cid, "bad_task")
        data = self.store.get(cid)
        try:
            rec = task.task_from_block_untrusted(data)
        except BadInput as exc:
            raise self._reject(cid, "bad_task", exc) from None
        self._remember(self._records, cid, rec)
        return rec

    def task_definition(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The validated task definition of a validated task record (inline or linked).

        Raises:
            BlockNotFound: A linked definition is not in the local store (yet).
            BadRecord: A linked definition is not valid (now or earlier).
        """
        td = rec["taskDefinition"]
        if type(td) is not CID:
            return td
        found = self._definitions.get(td)
        if found is not None:
            return found
        if td in self.quarantine:
            raise self._rejected(td, "bad_definition")
        try:
            found = task.definition_from_block_untrusted(self.store.get(td))
        except BadInput as exc:
            raise self._reject(td, "bad_definition", exc) from None
        self._remember(self._definitions, td, found)
        return found

    def output_value(self, cid: CID) -> Any:
        """A result output block, decoded as untrusted DAG-CBOR.

        Raises:
            BlockNotFound: The output is not in the local store (yet).
            BadRecord: The block is not DAG-CBOR (now or earlier).
        """
        if cid in self.quarantine:
            raise self._rejected(cid, "bad_output")
        data = self.store.get(cid)
        try:
            return codec.decode_untrusted(data)
        except BadInput as exc:
            raise self._reject(cid, "bad_output", exc) from None

    def engine_platforms(self, engine: CID) -> frozenset[str] | None:
        """The platform keys a native engine has builds for; None when any
        platform will do (a Docker engine) or its manifest is invalid (the
        runner then finds out when it runs it).

        Raises:
            BlockNotFound: The manifest is not here yet.
        """
        found = self._platforms.get(engine, False)
        if found is not False:
            return found
        try:
            m = load_manifest(self.store, engine)
        except EngineMissing:
            raise BlockNotFound(f"engine manifest {engine} is not here yet") from None
        except Exception:  # noqa: BLE001 - a bad manifest fails at run time, with its reason
            m = None
        plats = frozenset(m.platforms) if isinstance(m, NativeManifest) else None
        if len(self._platforms) > 10_000:
            self._platforms.clear()
            self._deterministic.clear()
        self._platforms[engine] = plats
        self._deterministic[engine] = bool(getattr(m, "deterministic", False))
        return plats

    def engine_deterministic(self, engine: CID) -> bool:
        """Whether ``engine``'s manifest declares ``deterministic: true`` (False
        when it is invalid: such an engine never runs, so is never cached).

        Raises:
            BlockNotFound: The manifest is not here yet.
        """
        if engine not in self._deterministic:
            self._platforms.pop(engine, None)
            self.engine_platforms(engine)
        return self._deterministic[engine]
