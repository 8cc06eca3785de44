"""The Runner's options: its tuning, read from ``[runner]``.

:class:`RunnerOptions` is the role's one frozen options record, validated
once when it is built; :mod:`meshd.roles.runner` (which re-exports it) takes
it ready-made, and its helpers (the claimer, the leases) are handed the
values they need.  The ``[runner]`` table itself is
:class:`meshd.roles.config.RunnerConfig`; ``meshd.roles.runner.create``
copies the fields the two share (and ``catch_up`` from ``[p2p] bootstrap``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerOptions:
    """Runner tuning (from ``[runner]``).

    Attributes:
        slots: Tasks run at once.
        max_attempts: Attempts before a task is failed (a task's own
            ``max_attempts`` overrides it).
        lease_s: How long a claim lasts without renewal (default 10 s).  A
            runner renews the leases of the attempts it has started every
            third of a lease, each renewal for longer as the attempt ages
            (up to 8 leases), so a task may run for hours at a few records
            an hour, while a dead runner's young tasks move within one
            lease and a claimed task that never started moves after one.
        task_timeout_s: Ceiling on one attempt's wall-clock time; the engine
            manifest's own ``timeout_s`` applies below it (the daemon passes
            this ceiling to the engine host as ``max_resources.timeout_s``).
        warm: Run engines in warm worker pools when they support it.
        idle_poll_s: Longest sleep between queue checks (lease expiry).
        defer_s: In a mesh, how long the k-th preferred runner of a task
            waits (times k) before claiming it (rendezvous hashing,
            :func:`lattice.claims.runner_claim_delay`).
        ahead_s: In a mesh, claim at most about this many seconds of work
            per slot ahead of running it (default 2 s, one presence
            interval): the rest stays in the shared queue for idle runners.
        reserve_s: In a mesh, the lease of a claim made ahead, beyond the
            idle slots (a *reservation*, default 3 s, plus the claim's
            settle when it is a steal).  A reservation is renewed once it
            starts; one that a stopped or slow runner never started is
            ``available`` again this soon, rather than after a whole lease.
        recent_s: Runners heard from within this long still rank (default
            30 s): the share of one that went silent (stopped, cut off, or
            its presence late under load) is stolen, after a deferral and a
            settle, rather than claimed at once as another's own share, which
            would run it twice if the silent runner is still working.
        fresh_s: A runner heard from within this long (default 3 s, one
            presence interval and a half) that announced idle slots keeps
            its share: nobody steals from it.
        catch_up: Before claiming, wait (at most 5 s) for a peer's presence
            and the queue's first answers: set when the node joins a mesh
            through bootstrap peers (``[p2p] bootstrap``).
    """

    slots: int = 1
    max_attempts: int = 3
    lease_s: float = 10.0
    task_timeout_s: float = 60.0
    warm: bool = True
    idle_poll_s: float = 1.0
    defer_s: float = 0.5
    ahead_s: float = 2.0
    reserve_s: float = 3.0
    recent_s: float = 30.0
    fresh_s: float = 3.0
    catch_up: bool = False

    def __post_init__(self) -> None:
        if (self.slots < 1 or self.max_attempts < 1 or self.lease_s <= 0 or self.task_timeout_s <= 0
                or self.ahead_s <= 0 or self.reserve_s <= 0):
            raise ValueError("runner options must be positive")

    @property
    def lease_ms(self) -> int:
        """A claim's first lease; a started attempt is renewed (``meshd.roles.leases``)."""
        return int(self.lease_s * 1000)

    @property
    def reserve_ms(self) -> int:
        """A reservation's lease before its settle (at most a lease)."""
        return int(min(self.reserve_s, self.lease_s) * 1000)
