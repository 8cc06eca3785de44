"""Replicated runs: how many replicas a task needs, and which outputs agree.

Both answers are pure functions of replicated state (the task body, the
queue, the results and the verdicts), so every peer reaches the same ones:

* :meth:`ReplicationPolicy.wanted` — BOINC-style adaptive replication.  A
  task asking ``{"verify": {"replicas": k, "quorum": q}}`` gets ``k`` replicas,
  except when its first claimant is *trusted* for the engine (a streak of
  valid results), where one replica suffices — but one task in
  ``spot_check`` (chosen by the task CID's hash, so everyone agrees) is still
  fully replicated.  When the results in hand cannot reach the quorum, one
  more replica is wanted per missing agreement, up to ``max_extra``.
* :func:`group_outputs` — exact comparison of output CIDs by default; an
  engine manifest may declare ``{"comparator": {"type": "numeric",
  "tolerance": 1e-9}}`` to accept floating-point noise.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Protocol, runtime_checkable

from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.queue import TaskInfo
from lattice.results import ResultsView
from lattice.trust import TrustView

from ..config import VerifyConfig


def spot_checked(task: CID, every: int) -> bool:
    """Deterministically pick one task in ``every`` for full replication."""
    return every <= 1 or int.from_bytes(hashlib.sha256(b"spot" + task.raw).digest()[:8], "big") % every == 0


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return a == b


def group_outputs(records: list[dict[str, Any]], load: Any, comparator: dict[str, Any] | None) -> list[list[dict[str, Any]]]:
    """Group result records whose outputs agree, largest group first.

    ``load(cid)`` returns a decoded output (needed only for a tolerant
    comparator); an output that is missing or fails to decode
    (``BlockNotFound``, ``BadInput``) agrees with nothing but itself.  Ties are broken by the smallest output CID, so the choice is
    the same everywhere.
    """
    groups: list[list[dict[str, Any]]] = []
    tol = None
    if comparator and comparator.get("type") == "numeric":
        tol = float(comparator.get("tolerance", 1e-9))
    for rec in records:
        for g in groups:
            head = g[0]
            if head["output"] == rec["output"]:
                g.append(rec)
                break
            if tol is not None:
                try:
                    if _close(load(head["output"]), load(rec["output"]), tol):
                        g.append(rec)
                        break
                except (BlockNotFound, BadInput):
                    continue
        else:
            groups.append([rec])
    groups.sort(key=lambda g: (-len(g), min(r["output"].raw for r in g)))
    return groups


@runtime_checkable
class PolicyNode(Protocol):
    """What the replication policy reads of the node (``meshd.node.Node`` satisfies it)."""

    @property
    def results_view(self) -> ResultsView: ...

    def task_engine(self, cid: CID) -> CID | None:
        """The engine a task names; None while its body is missing, or when it is invalid."""
        ...

    def output_value(self, cid: CID) -> Any:
        """A decoded output block; raises BlockNotFound or BadInput."""
        ...


class ReplicationPolicy:
    """Adaptive replication over a node's queue, results and trust views.

    Args:
        node: Task engines, results and outputs (:class:`PolicyNode`).  The
            node builds its policy with itself (the policy is part of the
            node's queue view), so this is the one place a component holds
            the node it belongs to: it reads it only through this port.
        trust: The verdicts' trust view.
        options: ``[verify]``.
    """

    def __init__(self, node: PolicyNode, trust: TrustView, options: VerifyConfig) -> None:
        self.node = node
        self.trust = trust
        self.options = options
        self._engine: dict[CID, CID | None] = {}

    def engine_of(self, task: CID) -> CID | None:
        """The task's engine (``Node.task_engine``, cached); None while its body is missing, or when it is invalid."""
        if task not in self._engine:
            eng = self.node.task_engine(task)
            if eng is None:
                return None  # not cached: a missing body may still arrive
            if len(self._engine) > 100_000:
                self._engine.clear()
            self._engine[task] = eng
        return self._engine[task]

    def spot_checked(self, task: CID) -> bool:
        """Whether ``task`` is picked for full replication whatever the trust (``[verify] spot_check``)."""
        return spot_checked(task, self.options.spot_check)

    def base(self, task: CID, info: TaskInfo) -> tuple[int, int]:
        """(replicas, quorum) before any escalation."""
        assert info.replication is not None
        k, q = info.replication
        claims = sorted((a for a in info.assignments if not self.trust.banned(a.by)), key=lambda a: a.key())
        first = claims[0].by if claims else None
        if first is not None and self.trust.trusted(first, self.engine_of(task)) and not self.spot_checked(task):
            return 1, 1
        return k, q

    def wanted(self, task: CID, info: TaskInfo) -> int:
        k, q = self.base(task, info)
        results = self.results_of(task)
        if len(results) >= k:
            best = len(group_outputs(results, self._load, None)[0]) if results else 0
            extra = max(0, q - best)
            return k + min(extra, self.options.max_extra_replicas)
        return k

    def results_of(self, task: CID) -> list[dict[str, Any]]:
        """One result per non-banned runner (its first), oldest first."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.node.results_view.results(task):
            if not self.trust.banned(r["runner"]) and r["runner"] not in seen:
                seen[r["runner"]] = r
        return list(seen.values())

    def _load(self, cid: CID) -> Any:
        return self.node.output_value(cid)
