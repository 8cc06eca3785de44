"""The Archivist's options: its tuning, and how it is read from ``[archive]``.

:class:`ArchivistOptions` is the role's one frozen options record, validated
once when it is built; :mod:`meshd.roles.archivist` (which re-exports it)
takes it ready-made, so the role's code reads values, not the config.  The
``[archive]`` table itself is :class:`meshd.roles.config.ArchiveConfig`;
:meth:`ArchivistOptions.from_config` takes the fields the two share.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ArchivistOptions:
    """Archivist tuning; read from ``[archive]`` when the config has that table.

    Attributes:
        interval_s: At most one pin per object per this many seconds (1.0).
        announce_interval_s: At most one pins-GOHO record per object per this
            many seconds (10.0); the first version of an object is announced
            at once.
        min_archivists: Archivists that must hold a block before other nodes
            may drop it (2).
        pin_timeout_s: Node-side deadline of one IPFS pin call, which walks
            the whole DAG (60.0).
        retry_s: First wait after a failed pin; doubles per failure (0.5).
        retry_max_s: Cap on that wait (30.0).
        pin_results: Pin the output block of every result record (true).
        pin_engines: Pin the files of every registered engine (true).
        blob_batch: Most output/engine blobs pinned per loop turn (500).
    """

    interval_s: float = 1.0
    announce_interval_s: float = 10.0
    min_archivists: int = 2
    pin_timeout_s: float = 60.0
    retry_s: float = 0.5
    retry_max_s: float = 30.0
    pin_results: bool = True
    pin_engines: bool = True
    blob_batch: int = 500

    def __post_init__(self) -> None:
        for name in ("interval_s", "announce_interval_s", "retry_s", "retry_max_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 86_400:
                raise ValueError(f"[archive] {name} must be a number in [0, 86400], got {v!r}")
        if not isinstance(self.pin_timeout_s, (int, float)) or not 0 < self.pin_timeout_s <= 3600:
            raise ValueError("[archive] pin_timeout_s must be in (0, 3600]")
        if self.retry_s > self.retry_max_s:
            raise ValueError("[archive] retry_s must not exceed retry_max_s")
        for name in ("min_archivists", "blob_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
                raise ValueError(f"[archive] {name} must be an integer in [1, 1000000], got {v!r}")
        if not isinstance(self.pin_results, bool) or not isinstance(self.pin_engines, bool):
            raise ValueError("[archive] pin_results and pin_engines must be true or false")

    @classmethod
    def from_config(cls, config: Any) -> "ArchivistOptions":
        """Options from ``config.archive`` (a record or a mapping), defaults where absent."""
        section = getattr(config, "archive", None)
        if section is None:
            return cls()
        known = {f.name for f in fields(cls)}
        items = section.items() if isinstance(section, dict) else (
            (name, getattr(section, name)) for name in known if hasattr(section, name))
        return cls(**{k: v for k, v in items if k in known})
