"""Reading datasets for conditions: a :class:`conditions.Resolver` over dataset replicas.

A rule's condition reads ``dataset(hpcp('<genesis>/<path>'))`` and raw
blocks; :class:`ReplicaResolver` answers those reads from the replicas a node
follows and its block store, reading anything missing or undecodable as None
("no data yet").  The Evaluator fires rules with it, and job status
(:mod:`meshd.roles.jobs`, which re-exports these names) reads stage inputs
and results through it.  It is apart from the job records because it is how
any rule sees data, jobs or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lattice import codec, dataset
from lattice.cid import CID
from lattice.errors import BadInput, BlockNotFound
from lattice.goho import Replica

if TYPE_CHECKING:
    from .jobs import JobsNode


_DATASET_KIND = "dataset"  # meshd.node.DATASET; not imported to keep the resolver and jobs free of the node


def read_path(replica: Replica, path: str) -> Any:
    """The value at ``path`` of a dataset replica (the whole dataset for ``""``); None if absent
    (or over the read budget of :func:`lattice.dataset.get`)."""
    try:
        return dataset.get(replica, path)
    except ValueError:
        return None


class ReplicaResolver:
    """A :class:`conditions.Resolver` over dataset replicas and a block store.

    Args:
        replica_of: The replica of a dataset genesis, None when not followed.
        store: Block store for ``dataset(<cid>)``; blocks that are missing or
            do not decode read as None (the condition sees "no data yet").
        work: The state of work (:class:`conditions.WorkState`) for
            ``task_state()`` and ``failures()``, or None (they then fail
            with an evaluation error).
    """

    def __init__(self, replica_of: Callable[[CID], Replica | None], store: Any, work: Any = None) -> None:
        self._replica_of = replica_of
        self._store = store
        self.work = work

    def resolve_path(self, genesis: CID, path: str) -> object | None:
        replica = self._replica_of(genesis)
        return None if replica is None else read_path(replica, path)

    def get_block(self, cid: CID) -> object | None:
        try:
            return codec.decode_untrusted(self._store.get(cid))
        except (BlockNotFound, BadInput):
            return None


def node_resolver(node: JobsNode, work: Any = None) -> ReplicaResolver:
    """A resolver over the datasets ``node`` follows (and the state of work, when given)."""
    def replica_of(genesis: CID) -> Replica | None:
        obj = node.objects.get(genesis)
        return obj.replica if obj is not None and obj.kind == _DATASET_KIND else None

    return ReplicaResolver(replica_of, node.store, work)
