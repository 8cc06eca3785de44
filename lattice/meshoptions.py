"""The mesh core's settings and counters: what a driver configures and reads.

Kept apart from :mod:`lattice.meshcore` so the daemon's config and the API
can name them without the core's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MeshCoreOptions", "MeshStatistics"]


@dataclass(frozen=True)
class MeshCoreOptions:
    """Mesh timing and limits; validated once, here.

    Attributes:
        announce_coalesce_s: Announcements go out at most once per this
            window (default 0.02 s): a change after a quiet window is
            announced at once, later ones in the window share the next
            announcement.  Keeps gossip far below the transport's message
            ceiling under load without delaying a lone change.
        announce_interval_s: Anti-entropy re-announcement period (5 s).
        presence_interval_s: Presence broadcast period (2 s); a peer unseen
            for 3 periods is no longer live.
        tick_s: How often unanswered wants are expired and retried (0.5 s).
        request_timeout_s: Deadline of one block request, applied by the
            driver (10 s).
        want_timeout_s: An ask not answered within this is asked again,
            elsewhere when possible (5 s; below ``request_timeout_s``, since
            a lost message is likelier than a slow peer).
        max_requests: Block requests in flight at once (16).
        prefetch_batch: Most CIDs in one request (256).
        prefetch_retries: Rounds in which a linked block that every peer
            asked lacked is offered to the live peers again (one round per
            ``announce_interval_s``) before it is abandoned (8).
        backoff_cap_s: Longest backoff of an unreachable peer (10 s).
        allow_peers: Membership allow-list (None: open mesh).  Anyone else's
            gossip and block requests are refused and counted.
        gossip_per_s: Per-peer gossip rate limit (token bucket, burst 2x).
        requests_per_s: Per-peer block-request rate limit (burst 2x).
        follow_per_author: Most objects one author's announcements make this
            node follow (default 1,024; ``follow_quota``).  Only well-formed,
            signed announcements count at all (``follow_unsigned``).
        max_auto_follow: Most objects followed on announcements, over all
            authors (default 8,192; ``follow_cap``).  Objects a role or the
            API follows itself are not counted.
        max_linked_wanted: Most linked blocks prefetched at once (default
            100,000; ``prefetch_full``); the rest are fetched on demand.
        max_peers: Connections a node keeps (default 32): above it only
            the neighbours :mod:`lattice.topology` picks are dialled and
            other connections are closed (a bounded-degree mesh that stays
            connected); at most that many live peers, a full mesh.
        snapshot_signers: Ed25519 public keys whose snapshots a fresh replica
            installs besides this node's own (default none; see
            :class:`lattice.hpcp.SyncOptions`).
        new_peers_per_s: New peers welcomed (queried, offered for linked
            blocks) per second, bursts of twice that (default 5;
            ``new_peer_limited``; see :mod:`lattice.newcomers`).
        dials_per_s: Dials that presence triggers per second, bursts of twice
            that (default 5; ``dial_limited``).
        link_grace_s: How long a linked block that newly applied ops name
            and the store lacks waits before it is wanted (default 0.1 s;
            0: at once).  The block is usually on its way inline in another
            object's delta: a result record names its task, whose body
            rides in the queue's delta, and the announcements of two
            objects reach a peer in either order.
    """

    announce_coalesce_s: float = 0.02
    announce_interval_s: float = 5.0
    presence_interval_s: float = 2.0
    tick_s: float = 0.5
    request_timeout_s: float = 10.0
    want_timeout_s: float = 5.0
    max_requests: int = 16
    prefetch_batch: int = 256
    prefetch_retries: int = 8
    backoff_cap_s: float = 10.0
    allow_peers: frozenset[str] | None = None
    gossip_per_s: float = 500.0
    requests_per_s: float = 200.0
    follow_per_author: int = 1024
    max_auto_follow: int = 8192
    max_linked_wanted: int = 100_000
    max_peers: int = 32
    snapshot_signers: frozenset[bytes] = frozenset()
    new_peers_per_s: float = 5.0
    dials_per_s: float = 5.0
    link_grace_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("announce_coalesce_s", "announce_interval_s", "presence_interval_s", "tick_s",
                     "request_timeout_s", "want_timeout_s", "backoff_cap_s", "gossip_per_s", "requests_per_s",
                     "new_peers_per_s", "dials_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_requests", "prefetch_batch", "prefetch_retries", "follow_per_author",
                     "max_auto_follow", "max_linked_wanted"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.link_grace_s >= 0:
            raise ValueError("link_grace_s must be >= 0")
        if self.max_peers < 2:
            raise ValueError("max_peers must be >= 2")
        if self.allow_peers is not None and not isinstance(self.allow_peers, frozenset):
            raise ValueError("allow_peers must be a frozenset of peer ids or None")


@dataclass(frozen=True)
class MeshStatistics:
    """Counters of one mesh core (``rejected`` sums every reason, HPCP's per object).

    ``revived``: peers counted dead (silent past the liveness horizon, or
    suspected after their connection was lost) that were heard from again:
    restarts, and false suspicions.
    """

    peers: int
    live_runners: int
    announces_out: int
    gossip_in: int
    requests_out: int
    requests_in: int
    prefetched: int
    rejected: dict[str, int]
    revived: int = 0
