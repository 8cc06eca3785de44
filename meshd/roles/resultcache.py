"""The Runner's side of the result cache (rules: :mod:`lattice.resultcache`).

Where the lookup happens, and why there: the Runner has claimed the task and
holds its lease, and has resolved what the engine would be given (a dataset
input read, a Docker image resolved to its engine).  Looking up at that point,
just before the engine would start, means:

* the pair is the real one (a dataset path names whatever value it holds when
  the task runs, so only the Runner knows the input);
* the queue's state machine is unchanged: a cache hit is an ordinary attempt
  of the lease holder that ends in an ordinary completion, so the winner
  rule, leases, cancels and the writing rules apply as to any run;
* one runner answers a task from the cache, once: the claim dedupes, as it
  does for runs.

A hit is recorded as a run is (``meshd.roles.attempts.Attempts.record``): a
result record for the task with the source's output (this runner vouches
for it, in its own signed delta, as for its own runs), then the completion.
Both carry ``cached``: the CID of the source result record, so the task's
status says it completed from the cache and from which result.  A hit on a
verified task writes the completion itself (no replica runs; the source's
verdict met the quorum).  The counters are ``cache_hits`` and
``cache_misses`` (node status, ``GET /metrics``).

Every result of a deterministic engine carries its pair (``engine``, ``in``),
which is how later tasks find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lattice import resultcache
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.results import ResultsView
from lattice.task import engine_of, metadata_of

from ..runtime.logs import get_logger
from .ports import Counts, QueuePort, TaskSource, TrustPort

log = get_logger("meshd.resultcache")


@dataclass(frozen=True, slots=True)
class Hit:
    """A source result that completes a task: its record, the record's CID, and its output."""

    record: dict[str, Any]
    record_cid: CID
    output: Any


class CacheNode(QueuePort, TaskSource, TrustPort, Counts, Protocol):
    """What the cache reads of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def results_view(self) -> ResultsView: ...

    def engine_deterministic(self, engine: CID) -> bool:
        """Whether the engine declares ``deterministic: true``; BlockNotFound while its manifest is not here."""
        ...


class _Sources:
    """:class:`lattice.resultcache.CacheSources` over the node."""

    def __init__(self, node: CacheNode) -> None:
        self.node = node

    def completion_results(self, task: CID) -> list[CID]:
        info = self.node.queue.info(task)
        if info is None:
            return []
        return [c["result"] for c in info.completions if not self.node.trust.banned(c["by"])]

    def verdict(self, task: CID) -> dict[str, Any] | None:
        return self.node.trust.verdict(task)

    def banned(self, peer: str) -> bool:
        return self.node.trust.banned(peer)

    def pair_of(self, task: CID) -> tuple[CID, CID] | None:
        try:
            rec = self.node.task_record(task)
            td = self.node.task_definition(rec)
        except (BlockNotFound, BadInput):
            return None
        engine = engine_of(rec, td)
        if engine is None or "value" not in rec["input"]:
            return None
        return engine, resultcache.input_cid(rec["input"]["value"], metadata_of(rec, td))


class ResultCache:
    """Finds cached results for the Runner and remembers each task's pair until it is recorded.

    Args:
        node: The node (queue, trust, results, task bodies, manifests).
    """

    def __init__(self, node: CacheNode) -> None:
        self.node = node
        self._sources = _Sources(node)
        self._pairs: dict[CID, tuple[CID, CID]] = {}  # task -> (engine, input CID), until recorded
        self._hits: dict[CID, Hit] = {}  # task -> the source it completes from, until recorded

    def note(self, task: CID, engine: CID, value: Any, metadata: dict[str, Any] | None) -> tuple[CID, CID] | None:
        """Remember the pair of a task about to run, when its engine is deterministic.

        Returns:
            ``(engine, input CID)``, or None when the engine is not
            deterministic or its manifest is not here (then nothing is
            cached or looked up: the engine host fetches it to run).
        """
        try:
            if not self.node.engine_deterministic(engine):
                return None
        except BlockNotFound:
            return None
        pair = (engine, resultcache.input_cid(value, metadata))
        self._pairs[task] = pair
        return pair

    def manifest_here(self, engine: CID) -> bool:
        """Whether ``engine``'s manifest is here, so :meth:`note` can tell if it is deterministic."""
        try:
            self.node.engine_deterministic(engine)
        except BlockNotFound:
            return False
        return True

    def candidates(self, pair: tuple[CID, CID]) -> bool:
        """Whether any record is indexed under ``pair`` (cheap: tells the batch path to send a task alone)."""
        return bool(self.node.results_view.by_input(*pair))

    async def lookup(self, task: CID, rec: dict[str, Any], pair: tuple[CID, CID]) -> Hit | None:
        """The cached result that completes ``task`` now, or None (run it).

        Reads the index (one dictionary read), applies
        :func:`lattice.resultcache.choose`, and fetches the source's output
        when it is not here (5 s at most; a miss otherwise).  Cancellation
        leaves nothing to undo.
        """
        level = resultcache.wanted_level(rec)
        if level is None:
            return None
        found = resultcache.choose(task, level, *pair, self.node.results_view.by_input(*pair), self._sources)
        if found is None:
            self.node.count("cache_misses")
            return None
        src, rcid = found
        out = src["output"]
        try:
            value = self.node.output_value(out)
        except BlockNotFound:
            if not await self.node.fetch_blocks([out], timeout_s=5.0):
                self.node.count("cache_misses")
                return None
            try:
                value = self.node.output_value(out)
            except (BlockNotFound, BadInput):
                self.node.count("cache_misses")
                return None
        except BadInput:
            self.node.count("cache_misses")
            return None
        hit = Hit(src, rcid, value)
        self._hits[task] = hit
        return hit

    def take(self, task: CID) -> tuple[dict[str, Any], Hit | None]:
        """The extra result-record fields for ``task`` (its pair, and ``cached``
        on a hit) and its hit; forgets both (the task is being recorded)."""
        pair = self._pairs.pop(task, None)
        hit = self._hits.pop(task, None)
        extra: dict[str, Any] = {}
        if pair is not None:
            extra["engine"], extra["in"] = pair
        if hit is not None:
            extra["cached"] = hit.record_cid
        return extra, hit

    def forget(self, task: CID) -> None:
        """Drop what was noted for a task that ended without a record (released, lost)."""
        self._pairs.pop(task, None)
        self._hits.pop(task, None)
