"""The roles' tables of ``config.toml``: ``[runner]``, ``[verify]`` and ``[archive]``.

:mod:`meshd.config` reads the whole file into one :class:`~meshd.config.Config`
of frozen, validated records, one per table, and re-exports these three; they
are here, beside the roles that read them, so that what a role may be told
is found next to the role.  Each record validates itself once, in
``__post_init__``, with the field checks of :mod:`meshd.runtime.checks`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..runtime.checks import bool_field as _bool
from ..runtime.checks import int_field as _int
from ..runtime.checks import positive_float as _positive_float
from ..runtime.checks import str_tuple as _str_tuple


@dataclass(frozen=True)
class RunnerConfig:
    """``[runner]``: how this node executes tasks.

    Attributes:
        slots: Tasks run at once; default the CPU count.
        max_attempts: Attempts before a task is marked failed; default 3.
        lease_s: Seconds a claim lasts without renewal; default 10.0, at
            most 600 (peers refuse longer claims; the runner renews the
            attempts it has started, so a task may run longer).
        reserve_s: With other runners live, the lease of a claim made ahead of a free slot
            (a reservation; plus its settle when it is a steal); default 3.0,
            at most 600, and never more than ``lease_s``.  Renewed once
            started; a reservation a stopped runner never started moves this
            soon.
        task_timeout_s: Wall-clock limit per attempt; default 60.0.
        warm: Keep engine processes alive between tasks; default true.
        drain_deadline_s: On SIGTERM, how long running tasks may finish
            before they are vacated (engines killed, leases released to
            peers); default 3.0, at most 300.  The watchdog's
            ``[node] shutdown_grace_s`` counts from the end of the drain.
        weak_sandbox: Run native engines even where the engine jail
            (bubblewrap with user namespaces, see docs/security.md) cannot be
            built, with rlimits only: no namespaces, the node's own uid, its
            files readable.  Default false: such a node refuses native
            engines and says why.
        engine_network: Let jailed native engines use the host's network.
            Default false: they get a network namespace of their own with no
            interfaces but a down loopback.
    """

    slots: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_attempts: int = 3
    lease_s: float = 10.0
    reserve_s: float = 3.0
    task_timeout_s: float = 60.0
    warm: bool = True
    drain_deadline_s: float = 3.0
    weak_sandbox: bool = False
    engine_network: bool = False

    def __post_init__(self) -> None:
        _int(self, "runner", "slots", minimum=1, maximum=4096)
        _bool(self, "runner", "weak_sandbox")
        _bool(self, "runner", "engine_network")
        _int(self, "runner", "max_attempts", minimum=1, maximum=1000)
        if _positive_float(self, "runner", "lease_s") > 600:
            # lattice.queue.MAX_LEASE_MS: peers refuse a longer claim.
            raise ConfigError(f"[runner] lease_s must be at most 600, got {self.lease_s}")
        if _positive_float(self, "runner", "reserve_s") > 600:
            raise ConfigError(f"[runner] reserve_s must be at most 600, got {self.reserve_s}")
        _positive_float(self, "runner", "task_timeout_s")
        _bool(self, "runner", "warm")
        if _positive_float(self, "runner", "drain_deadline_s") > 300:
            raise ConfigError(f"[runner] drain_deadline_s must be at most 300, got {self.drain_deadline_s}")


_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


@dataclass(frozen=True)
class VerifyConfig:
    """``[verify]``: replicated runs, trust and bans (the Verifier).

    Every peer computes trust and bans from the same signed verdicts, so these
    values must be the same on every node of a mesh.

    Attributes:
        trust_after: Consecutive valid results (per peer and engine) after
            which a peer is trusted and its tasks need one replica; default 5.
        ban_after: Invalid results after which a peer is banned; default 2.
        spot_check: One task in this many is still fully replicated for a
            trusted peer (BOINC-style spot checks); default 10.
        max_extra_replicas: Replicas added when results disagree, before the
            task fails for lack of a quorum; default 3.
        keys: Peer ids of the mesh's verifiers: only their verdicts count
            (they ban, trust and complete replicated tasks).  Default none:
            each node counts only its own verdicts, so it bans and trusts
            only from replicas it compared itself (with the verifier role).
    """

    trust_after: int = 5
    ban_after: int = 2
    spot_check: int = 10
    max_extra_replicas: int = 3
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _int(self, "verify", "trust_after", minimum=1, maximum=10_000)
        _int(self, "verify", "ban_after", minimum=1, maximum=10_000)
        _int(self, "verify", "spot_check", minimum=1, maximum=1_000_000)
        _int(self, "verify", "max_extra_replicas", minimum=0, maximum=16)
        for pid in _str_tuple(self, "verify", "keys"):
            # Verdicts are signed with Ed25519 node keys, whose peer ids are "12D3KooW" + 44 base58.
            if len(pid) != 52 or not pid.startswith("12D3KooW") or not set(pid) <= _BASE58:
                raise ConfigError(f"[verify] keys: {pid!r} is not an Ed25519 libp2p peer id")


@dataclass(frozen=True)
class ArchiveConfig:
    """``[archive]``: the Archivist role.

    Attributes:
        interval_s: At most one pin move per object per interval; default 1.0.
        announce_interval_s: At most one signed ``pins`` record per object per
            interval; default 10.0.  Nodes under a storage budget drop a
            block only once a record covers it, so this bounds how long new
            blocks wait to be collected there.
        min_archivists: Archivists that must hold a block before the archive
            API calls an object droppable; default 2 (the storage budget's own
            setting is ``[store] min_holders``).
        pin_results: Also pin result outputs; default true.
        pin_engines: Also pin engine files; default true.
    """

    interval_s: float = 1.0
    announce_interval_s: float = 10.0
    min_archivists: int = 2
    pin_results: bool = True
    pin_engines: bool = True

    def __post_init__(self) -> None:
        _positive_float(self, "archive", "interval_s")
        if _positive_float(self, "archive", "announce_interval_s") > 86_400:
            raise ConfigError(f"[archive] announce_interval_s must be at most 86400, got {self.announce_interval_s}")
        _int(self, "archive", "min_archivists", minimum=1, maximum=1000)
        _bool(self, "archive", "pin_results")
        _bool(self, "archive", "pin_engines")
