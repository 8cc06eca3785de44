"""How many replicas of verified tasks a runner may hold: the runner's cap on
unjudged work.

Verified (replicated) work is not claimed ahead: a replica held in a local
backlog delays its verdict, and verdicts are what let the mesh catch a bad
runner early (few results before a ban).  So at most ``slots`` replicas run
at once, and until verdicts vouch for this runner, its replicas awaiting
judgement (running or recorded) stay few, as BOINC limits new hosts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Protocol

from lattice.cid import CID

if TYPE_CHECKING:
    from lattice.queue import QueueView
    from lattice.trust import TrustView


class CapNode(Protocol):
    """What the cap reads of the node: who it is, the queue and the verdicts."""

    @property
    def peer_id(self) -> str: ...

    @property
    def queue(self) -> QueueView: ...

    @property
    def trust(self) -> TrustView: ...


class ReplicaCap:
    """Admits replicas of verified tasks into one runner's claims.

    Args:
        node: The node's queue, trust view and peer id.
        slots: The runner's slots.
        lease_ms: The runner's lease: a completed task whose verdict has not
            judged this runner's replica within it is no longer waited for.
    """

    def __init__(self, node: CapNode, slots: int, lease_ms: int) -> None:
        self.node = node
        self.slots = slots
        self.lease_ms = lease_ms
        self.unjudged: set[CID] = set()  # our recorded replicas no verdict has judged yet

    def recorded(self, task: CID) -> None:
        """This runner recorded a replica of ``task``: it awaits a verdict."""
        self.unjudged.add(task)

    def replicated(self, task: CID) -> bool:
        info = self.node.queue.info(task)
        return info is not None and info.replication is not None

    def admit(self, cands: Iterable[CID], running: Collection[CID], now: int) -> list[CID]:
        """``cands`` less the replicas beyond the cap, in order (plain tasks all pass)."""
        running_rep = {t for t in running if self.replicated(t)}
        rep_room = self.slots - len(running_rep)
        fresh_room, started_room = self.rooms(running_rep, now)
        kept = []
        for t in cands:
            if self.replicated(t):
                info = self.node.queue.info(t)
                started = info is not None and bool(info.replica_done)
                if rep_room <= 0 or (started_room if started else fresh_room) <= 0:
                    continue
                rep_room -= 1
                fresh_room -= 1
                started_room -= 1
            kept.append(t)
        return kept

    def rooms(self, running_rep: set[CID], now: int) -> tuple[int, int]:
        """How many more replicas we may claim now: (fresh tasks, tasks others started).

        The cap covers *every* replica: a task another runner already ran
        used to be exempt, and a lying runner then took all of those (27
        results before its ban under load), each one judged only after a
        third runner broke the tie.  Tasks others started get ``slots`` more
        room than fresh ones: finishing them yields the verdicts every runner
        is waiting for, so runners that each hold ``slots`` fresh replicas
        never deadlock at the cap.
        """
        me = self.node.peer_id
        self.unjudged = {t for t in self.unjudged if self._awaiting_verdict(t, me, now)}
        if self._trusted_somewhere():
            return self.slots, self.slots
        outstanding = len(self.unjudged | running_rep)
        return self.slots - outstanding, 2 * self.slots - outstanding

    def _awaiting_verdict(self, t: CID, me: str, now: int) -> bool:
        """Whether our replica of ``t`` still waits for a verdict that will come."""
        if self.node.trust.judged(t, me):
            return False
        info = self.node.queue.info(t)
        if info is None or any(f.get("final") for f in info.failures):
            return False  # failed for good (no quorum): no verdict will judge it
        # Completed without judging us: a verifier judges a late replica at
        # once, unless it restarted in between; stop waiting after a lease.
        done_at = min((c["at"] for c in info.completions if type(c.get("at")) is int), default=None)
        return done_at is None or now - done_at < self.lease_ms

    def _trusted_somewhere(self) -> bool:
        me = self.node.peer_id
        return any(self.node.trust.trusted(me, e) for e in self.node.trust.scores().get(me, {}))


__all__ = ["CapNode", "ReplicaCap"]
