"""The result cache: which earlier result may complete a task without running it.

A deterministic engine (its manifest says ``deterministic: true``) gives the
same output for the same input, so a task whose (engine, input) pair already
has a trustworthy result need not run again, whatever else differs between
the two tasks (a name, a nonce, a map index, a destination).  The cache is no
separate object: it is an index over the results object.  A runner that
records a result of a deterministic engine adds two fields to its result
record (docs/protocol.md, ``meshd/result``)::

    "engine": CID,   # the engine that ran
    "in": CID        # input_cid(the value the engine was given, its metadata)

and :class:`lattice.results.ResultsView` keeps the authenticated records by
that pair (:meth:`~lattice.results.ResultsView.by_input`), so a lookup reads
the few records of one pair, never all results.

This module holds the pure part: the input's name (:func:`input_cid`), what a
task asks of the cache (:func:`wanted_level`), and which indexed record may
serve it (:func:`choose`).  The rules, and why:

* **Opt-out.** A task with ``cache: false`` always runs (a benchmark, a check
  of a suspect result).
* **Verification level.** A plain task trusts whichever runner completes it,
  so any *accepted* result serves it: one that a completion of its own task
  names (by a peer that is not banned), or one a verdict found valid.  A
  ``verify: {quorum: q}`` task asked for q agreeing runners, so only a result
  that a verdict found valid with at least q agreeing runners serves it.
* **Replicas never.** The runs of a verified task must be independent, so a
  replica is never answered from the cache: a verified task either completes
  whole from a verified result, or its replicas run.  A task's own results
  (its replicas) never serve it either.
* **The pair is checked, not believed.** ``engine`` and ``in`` are what a
  runner says it ran.  When the source task's body is here with an inline
  input, the pair is computed again from it and a mismatch refuses the
  record; when it is not (a dataset input), a verified request needs q
  verified records of that task that name the pair, so one lying replica
  cannot label an agreed output with another input.

Pure: no I/O; the state is read through :class:`CacheSources`.
"""

from __future__ import annotations

from typing import Any, Protocol

from . import codec
from .cid import CID

#: Type tag of the record whose CID names an engine input (never stored).
INPUT_TAG = "meshd/engine-input"
#: Most indexed records of one pair :func:`choose` looks at (a hostile peer
#: may add many records under one pair; the oldest are honest ones' too).
MAX_CANDIDATES = 64


def input_cid(value: Any, metadata: dict[str, Any] | None = None) -> CID:
    """The CID that names what an engine is given: its input value and metadata.

    The record ``{t: "meshd/engine-input", v: 1, value[, metadata]}`` is
    hashed, never stored: it is a name that any node computes alike from the
    same input (DAG-CBOR is canonical).  ``metadata`` is part of it because
    engines receive it (a task's ``runner.metadata``).

    Args:
        value: The input value (DAG-CBOR data model: links as CIDs).
        metadata: The runner's metadata, or None.
    """
    rec: dict[str, Any] = {"t": INPUT_TAG, "v": 1, "value": value}
    if metadata:
        rec["metadata"] = metadata
    return codec.encode_block(rec)[0]


def wanted_level(task: dict[str, Any]) -> int | None:
    """What a task asks of a cached result.

    Args:
        task: A validated task record (:mod:`lattice.task`).

    Returns:
        None when the task opts out (``cache: false``); else the number of
        agreeing verified runners a result needs: 0 for a plain task, the
        quorum for a ``verify`` task.
    """
    if task.get("cache") is False:
        return None
    v = task.get("verify")
    if type(v) is dict:
        return int(v.get("quorum", 1))
    return 0


class CacheSources(Protocol):
    """The state :func:`choose` reads (the node's queue, trust and task bodies)."""

    def completion_results(self, task: CID) -> list[CID]:
        """Result record CIDs named by completions of ``task`` by peers not banned."""
        ...

    def verdict(self, task: CID) -> dict[str, Any] | None:
        """The counting verdict on ``task`` (:meth:`lattice.trust.TrustView.verdict`), or None."""
        ...

    def banned(self, peer: str) -> bool: ...

    def pair_of(self, task: CID) -> tuple[CID, CID] | None:
        """``(engine, input_cid)`` computed from ``task``'s body, when its body
        and definition are here and its input is inline; else None."""
        ...


def _verified(rec: dict[str, Any], verdict: dict[str, Any] | None) -> int:
    """How many agreeing runners a verdict gave ``rec``'s output (0: none, or not ``rec``'s)."""
    if verdict is None or verdict.get("output") != rec["output"] or rec["runner"] not in verdict.get("valid", ()):
        return 0
    return len(verdict["valid"])


def choose(task: CID, level: int, engine: CID, inp: CID, candidates: list[dict[str, Any]],
           sources: CacheSources) -> tuple[dict[str, Any], CID] | None:
    """The earliest indexed record that may complete ``task`` (module doc), or None.

    Args:
        task: The task asking.
        level: :func:`wanted_level` of its record (not None).
        engine, inp: Its pair.
        candidates: The authenticated records indexed under the pair, oldest
            first (:meth:`lattice.results.ResultsView.by_input`).
        sources: The state the rules read.

    Returns:
        ``(record, record CID)`` of the source result.
    """
    for rec in candidates[:MAX_CANDIDATES]:
        src = rec["task"]
        if src == task or rec.get("engine") != engine or rec.get("in") != inp or sources.banned(rec["runner"]):
            continue
        verdict = sources.verdict(src)
        agreeing = _verified(rec, verdict)
        rcid = codec.encode_block(rec)[0]
        if level > 0 and agreeing < level:
            continue
        if level == 0 and not agreeing and rcid not in sources.completion_results(src):
            continue
        pair = sources.pair_of(src)
        if pair is not None:
            if pair != (engine, inp):
                continue
        elif level > 0:
            labelled = len({r["runner"] for r in candidates if r["task"] == src and _verified(r, verdict)})
            if labelled < level:
                continue
        return rec, rcid
    return None


__all__ = ["INPUT_TAG", "MAX_CANDIDATES", "CacheSources", "choose", "input_cid", "wanted_level"]
