"""A dict-backed :class:`~conditions.Resolver` for tests, behind the same protocol.

Not imported by ``conditions/__init__``: like ``trio.testing`` it is a
separate module for test code (ours and the daemon's).
"""

from __future__ import annotations

from typing import Any

from lattice.cid import CID
from lattice.codec import cid_of


class MemoryResolver:
    """Datasets as nested dicts in memory, plus a dict of blocks.

    ``resolve_path`` walks the dataset's root dict one ``/``-separated segment
    at a time (a decimal segment also indexes a list).  It counts its calls in
    ``calls`` so tests can assert how much a condition read.
    """

    def __init__(self) -> None:
        self.datasets: dict[CID, dict[str, Any]] = {}
        self.blocks: dict[CID, Any] = {}
        self.calls = 0

    def set(self, genesis: CID, path: str, value: Any) -> None:
        """Store ``value`` at ``path`` in dataset ``genesis``, creating parents."""
        node = self.datasets.setdefault(genesis, {})
        *parents, last = path.strip("/").split("/")
        for segment in parents:
            node = node.setdefault(segment, {})
        node[last] = value

    def put_block(self, value: Any) -> CID:
        """Store ``value`` as a block and return its dag-cbor CID."""
        cid = cid_of(value)
        self.blocks[cid] = value
        return cid

    def resolve_path(self, genesis: CID, path: str) -> object | None:
        self.calls += 1
        node: Any = self.datasets.get(genesis)
        for segment in path.split("/") if path else ():
            if type(node) is dict:
                node = node.get(segment)
            elif type(node) is list and segment.isdecimal() and int(segment) < len(node):
                node = node[int(segment)]
            else:
                return None
        return node

    def get_block(self, cid: CID) -> object | None:
        self.calls += 1
        return self.blocks.get(cid)
