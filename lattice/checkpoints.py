"""Checkpoints: an engine's saved state, linked from the task's status in the queue GOHO.

A task run with checkpoints (the task's ``checkpoint_s``) saves its state
every so often and when its runner vacates it.  The runner stores each saved
state as blocks (``state``: a raw block, or a UnixFS file as engine files
are, :mod:`lattice.unixfs`) and adds a record to the queue's ``checkpoints`` set::

    {task: link, by: text, at: uint, n: uint, state: link, size: uint}

The next runner of the task, on any node, reads the latest checkpoint and
hands its state to the engine, which resumes from it (docs/protocol.md, *The
queue state machine*, and engines/examples/README.md, *Checkpoints*).

**Who may write what.**  A checkpoint is written by the runner of attempt
``n`` (``by`` is the delta's author: :func:`check_record`, called by
``lattice.queue.check_delta``, refuses the delta otherwise, and refuses a
``size`` over :data:`MAX_CHECKPOINT_BYTES`).  The view counts it only once
the task has an assignment ``(by, n)`` (held until then, so arrival order
does not matter): a peer that never claimed the task cannot plant a state
for its next runner.

A retry (:mod:`lattice.lifecycle`) starts the task over: checkpoints of
attempts of earlier generations no longer count.

**Latest.**  The checkpoint with the greatest ``(n, at, by)``: a later
attempt resumed from the earlier ones, so its state is the newest even when
an older attempt's clock runs ahead.  A pure function of the sets, the same
on every replica.

Pure: no I/O; :class:`CheckpointView` follows a replica like
:class:`lattice.queue.QueueView` and reads assignments through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cid import CID
from .errors import BadRecord
from .state import decode_value

if TYPE_CHECKING:
    from .goho import Replica
    from .queue import QueueView

CHECKPOINTS = "checkpoints"
#: Largest checkpoint a record may announce (bytes): a bigger one is refused
#: with its delta, so nobody asks its peers to fetch more for one task.
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024
#: Checkpoints kept per task in the view (the newest); older ones are never resumed from.
_KEPT = 64
_FIELDS = {"task": CID, "by": str, "at": int, "n": int, "state": CID, "size": int}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One saved state of attempt ``n`` of ``task``, by runner ``by`` at ``at`` (ms)."""

    task: CID
    by: str
    at: int
    n: int
    state: CID
    size: int

    def key(self) -> tuple[int, int, str]:
        """Order of "latest": attempt, then time, then writer."""
        return (self.n, self.at, self.by)


def checkpoint_op(task: CID, by: str, at_ms: int, attempt: int, state: CID, size: int) -> list[Any]:
    """Record that attempt ``attempt`` of ``task`` saved ``state`` (``size`` bytes) at ``at_ms``."""
    return ["add", CHECKPOINTS, {"task": task, "by": by, "at": at_ms, "n": attempt, "state": state, "size": size}]


def check_record(value: dict[str, Any]) -> None:
    """The delta-only checks of a checkpoint record (its ``by`` is checked by the caller).

    Raises:
        BadRecord: ``size`` is over :data:`MAX_CHECKPOINT_BYTES`.
    """
    size = value.get("size")
    if type(size) is int and not 0 <= size <= MAX_CHECKPOINT_BYTES:
        raise BadRecord(f"checkpoint of {size} bytes is outside 0..{MAX_CHECKPOINT_BYTES}")


def _decode(enc: bytes) -> Checkpoint | None:
    rec = decode_value(enc)
    if type(rec) is not dict or any(type(rec.get(k)) is not t for k, t in _FIELDS.items()):
        return None
    if rec["n"] < 1 or not 0 <= rec["size"] <= MAX_CHECKPOINT_BYTES:
        return None
    return Checkpoint(rec["task"], rec["by"], rec["at"], rec["n"], rec["state"], rec["size"])


class CheckpointView:
    """The checkpoints of each task, as the writing rules allow (module doc).

    Args:
        replica: The queue replica.
        queue: The view of the same replica (its assignments decide which
            checkpoints count).
    """

    def __init__(self, replica: Replica, queue: QueueView) -> None:
        self._queue = queue
        self._cursor = replica.cursor()
        self._by_task: dict[CID, list[Checkpoint]] = {}
        for enc in list(replica.state.encoded_members(CHECKPOINTS)):
            self._add(enc)

    def _add(self, enc: bytes) -> None:
        ck = _decode(enc)
        if ck is None:
            return
        cks = self._by_task.setdefault(ck.task, [])
        if ck not in cks:
            cks.append(ck)
            cks.sort(key=Checkpoint.key)
            del cks[:-_KEPT]

    def sync(self) -> None:
        """Catch up with the replica (reads do this first)."""
        for change in self._cursor.pull():
            for key, enc in change.adds:
                if key == CHECKPOINTS:
                    self._add(enc)

    def close(self) -> None:
        self._cursor.close()

    def of(self, task: CID) -> list[Checkpoint]:
        """``task``'s checkpoints that count, oldest first (at most the newest 64)."""
        self.sync()
        cks = self._by_task.get(task)
        if not cks:
            return []
        info = self._queue.info(task)
        if info is None:
            return []
        claimed = {(a.by, a.n) for a in info.assignments}
        # A retry starts over: states of earlier generations (lattice.lifecycle) are not resumed from.
        return [ck for ck in cks if (ck.by, ck.n) in claimed and info.life.current(ck.n)]

    def latest(self, task: CID) -> Checkpoint | None:
        """The checkpoint ``task``'s next runner resumes from, if any."""
        cks = self.of(task)
        return cks[-1] if cks else None


__all__ = ["CHECKPOINTS", "MAX_CHECKPOINT_BYTES", "Checkpoint", "CheckpointView", "check_record", "checkpoint_op"]
