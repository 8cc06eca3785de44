"""Cancel and retry: the queue's lifecycle records and the generations they define.

Two grow-only sets of the queue GOHO (docs/protocol.md, *The queue state
machine*):

* ``cancelled``: ``{task, by, at, g, reason?}``, written by any member under
  its own key: generation ``g`` of the task is cancelled;
* ``retried``: ``{task, by, at, g, n}``, likewise: generation ``g`` (at least
  1) starts, and attempts numbered ``n`` or lower belong to earlier ones.

Why generations rather than "the latest record wins": the sets only grow and
arrive in any order, so a task's state must be a pure function of the set.
A cancel names the generation its writer saw, a retry the one it starts; the
current generation is the largest ``g`` of any retry, so a cancel made before
a retry (an older ``g``) no longer counts once the retry is known, whatever
the order the two arrive in, and a cancel made after it (the same ``g``)
does.  Two retries of one generation, made concurrently, agree on ``g`` and
the larger ``n`` wins.  Failures and leases of attempts at or below the
current generation's ``n`` are history: they no longer end, hold or count
against ``max_attempts`` (a retry gives fresh attempts).

This module holds the records and the per-task bookkeeping only;
:class:`lattice.queue.QueueView` reads states from them, and
:func:`lattice.queue.check_delta` enforces that ``by`` is the delta's author.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cid import CID

CANCELLED = "cancelled"
RETRIED = "retried"
#: Longest cancel reason kept (characters).
MAX_REASON = 500


def cancel_op(task: CID, by: str, at_ms: int, generation: int, reason: str = "") -> list[Any]:
    """Cancel generation ``generation`` of ``task`` (the one its writer reads as current).

    A cancelled task is never offered again and runners stop its engine;
    only a later retry (a larger generation) reopens it.
    """
    rec: dict[str, Any] = {"task": task, "by": by, "at": at_ms, "g": generation}
    if reason:
        rec["reason"] = reason[:MAX_REASON]
    return ["add", CANCELLED, rec]


def retry_op(task: CID, by: str, at_ms: int, generation: int, base: int) -> list[Any]:
    """Start generation ``generation`` of ``task``, with attempts above ``base``.

    ``base`` is the largest attempt number the writer has seen, so every
    earlier lease and failure is history and the task has its full
    ``max_attempts`` again.
    """
    return ["add", RETRIED, {"task": task, "by": by, "at": at_ms, "g": generation, "n": base}]


def _fields(value: Any, names: tuple[str, ...]) -> bool:
    return type(value) is dict and type(value.get("task")) is CID and type(value.get("by")) is str \
        and all(type(value.get(n)) is int and value[n] >= 0 for n in names)


def valid_cancel(value: Any) -> bool:
    """Whether ``value`` has a cancel's shape (the view ignores others)."""
    return _fields(value, ("at", "g")) and type(value.get("reason", "")) is str


def valid_retry(value: Any) -> bool:
    """Whether ``value`` has a retry's shape: generation at least 1."""
    return _fields(value, ("at", "g", "n")) and value["g"] >= 1


@dataclass(slots=True)
class Generations:
    """One task's cancels and retries: its current generation and whether that one is cancelled."""

    gen: int = 0
    #: Attempts numbered at or below this belong to earlier generations.
    base: int = 0
    cancels: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0

    def current(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` belongs to the current generation
        (before any retry, every attempt does, a Verifier's ``n = 0`` included)."""
        return self.gen == 0 or attempt > self.base

    def add_retry(self, rec: dict[str, Any]) -> None:
        self.retries += 1
        if rec["g"] > self.gen:
            self.gen, self.base = rec["g"], rec["n"]
        elif rec["g"] == self.gen:
            self.base = max(self.base, rec["n"])

    def add_cancel(self, rec: dict[str, Any]) -> None:
        self.cancels.append(rec)

    def current_cancels(self) -> list[dict[str, Any]]:
        """The cancels of the current generation (the ones that count)."""
        return [c for c in self.cancels if c["g"] == self.gen]


__all__ = ["CANCELLED", "MAX_REASON", "RETRIED", "Generations", "cancel_op", "retry_op", "valid_cancel",
           "valid_retry"]
