"""The storage budget's policy: which blocks a node over its budget drops.

A node with ``[store] max_bytes`` keeps its block store within that many
bytes by dropping blocks that the mesh keeps elsewhere.  This module is the
decision alone, as a pure function of numbers the caller gathers: each
block's size, when it was last used, whether it is protected, and how many
archivists hold it.  It does no I/O and reads no clock (the daemon's
collector, :mod:`meshd.store.collector`, gathers the facts and deletes).

The rule (:func:`choose`):

* nothing is dropped while ``used <= budget``;
* once over, blocks are visited least recently used first (ties broken by
  CID bytes, so every run on the same facts picks the same blocks) and
  dropped until ``used`` is at most ``target`` (a low-water mark below the
  budget, so a node does not collect again at the next write);
* a block is never dropped when it is *pinned* here, *in use*, or held by
  fewer than ``min_holders`` archivists other than this node; each refusal is
  counted under that reason (the first that applies, in that order);
* when every droppable block is gone and the node is still over, the
  decision says so (``still_over``): the budget is a goal the protections
  may override, never a reason to lose data.

Why LRU and not, say, largest first: a compute node's blocks are a cache of
the mesh's data, and what it read last (the engine it runs, the inputs of its
current work) is what it will read next.  Why a holder count from other
archivists: a block a node drops is fetched back from whoever holds it, so
only copies elsewhere make dropping safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .cid import CID

__all__ = ["REASONS", "BlockUse", "Collection", "choose", "target_bytes"]

#: Why a block over the budget was kept, in the order they are checked.
REASONS: Final = ("pinned", "in_use", "few_holders")


@dataclass(frozen=True, slots=True)
class BlockUse:
    """What the policy knows of one stored block.

    Attributes:
        cid: The block.
        size: Its bytes.
        last_use: When it was last read or written, in any unit that orders
            (the daemon uses a monotonic clock; older is smaller).
        pinned: This node keeps it on purpose (a pinset pin it holds, or the
            archivist's version pins).
        in_use: The node needs it now (a head of a followed object and what
            it links, an open task's body, a running task's engine).
        holders: Distinct live archivists, other than this node, that report
            holding it.
    """

    cid: CID
    size: int
    last_use: float
    pinned: bool = False
    in_use: bool = False
    holders: int = 0


@dataclass(frozen=True, slots=True)
class Collection:
    """The decision of one round.

    Attributes:
        drop: The blocks to delete, least recently used first.
        freed: Their bytes.
        refused: Blocks visited but kept, by reason (:data:`REASONS`).
        still_over: True when even dropping every droppable block leaves the
            node over its budget.
    """

    drop: tuple[CID, ...] = ()
    freed: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    still_over: bool = False


def target_bytes(budget: int, low_water: float) -> int:
    """Where a round stops collecting: ``low_water`` of the budget, in bytes.

    Raises:
        ValueError: ``budget`` < 0 or ``low_water`` outside (0, 1].
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    if not 0 < low_water <= 1:
        raise ValueError(f"low_water must be in (0, 1], got {low_water!r}")
    return int(budget * low_water)


def choose(blocks: Iterable[BlockUse], used: int, budget: int, target: int, min_holders: int) -> Collection:
    """The blocks to drop so that ``used`` falls to ``target``.

    Args:
        blocks: Every stored block the caller knows of (order does not matter).
        used: Bytes the store holds now (may exceed the sum of ``blocks``:
            blocks the caller did not list are simply never dropped).
        budget: The budget; 0 means none, and nothing is ever dropped.
        target: Bytes to fall to once over the budget (at most ``budget``).
        min_holders: Archivists that must hold a block before it is dropped
            (at least 1: a block nobody else holds is never dropped).

    Returns:
        A :class:`Collection`.

    Raises:
        ValueError: ``min_holders`` < 1, or ``target`` > ``budget``.
    """
    if isinstance(min_holders, bool) or not isinstance(min_holders, int) or min_holders < 1:
        raise ValueError(f"min_holders must be an integer >= 1, got {min_holders!r}")
    if target > budget:
        raise ValueError(f"target {target} exceeds budget {budget}")
    if budget <= 0 or used <= budget:
        return Collection()
    refused = dict.fromkeys(REASONS, 0)
    drop: list[CID] = []
    freed = 0
    for b in sorted(blocks, key=lambda b: (b.last_use, b.cid.raw)):
        if used - freed <= target:
            break
        if b.pinned:
            refused["pinned"] += 1
        elif b.in_use:
            refused["in_use"] += 1
        elif b.holders < min_holders:
            refused["few_holders"] += 1
        else:
            drop.append(b.cid)
            freed += b.size
    return Collection(tuple(drop), freed, refused, used - freed > budget)
