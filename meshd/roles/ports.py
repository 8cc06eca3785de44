"""What the roles ask of the node and the mesh, as small Protocols.

A role takes these ports, not the whole :class:`meshd.node.Node` (issue 12,
composition).  ``Node`` satisfies every node-side port structurally and
``meshd.p2p.mesh.Mesh`` satisfies :class:`PeerView`, so the daemon passes
them as they are; a test may hand a role a fake that implements only the
ports it uses.

* :class:`PeerView`: who is in the mesh now (the claim planner's live sets).
* :class:`QueuePort`: the queue view, its object, commits to it, waiting
  for changes, and who this node is.
* :class:`TaskSource`: validated task bodies, definitions and outputs, and
  fetching missing blocks from peers (the fetcher port).
* :class:`Datasets`: dataset objects, written through
  :func:`write_destination`.
* :class:`TrustPort`: the trust view and the replication policy.
* :class:`Counts`: the node's event counters.

Each role composes the ports it needs into one Protocol beside it
(``RunnerNode`` in :mod:`meshd.roles.runner`, ``VerifierNode`` in
:mod:`meshd.roles.verifier`, ``ArchivistNode`` in
:mod:`meshd.roles.archivist`, ``EvaluatorNode`` in
:mod:`meshd.roles.evaluator`); jobs (``JobsNode``) and the replication
policy (``PolicyNode``) declare theirs the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lattice import dataset
from lattice.cid import CID

if TYPE_CHECKING:
    from lattice.checkpoints import CheckpointView
    from lattice.queue import QueueView, TaskInfo
    from lattice.signing import Signer
    from lattice.trust import TrustView

    from ..config import VerifyConfig
    from ..store.objects import Followed


@runtime_checkable
class PeerView(Protocol):
    """Who is in the mesh now: the live sets the claim planner ranks."""

    def live_peers(self, role: str) -> list[str]:
        """Peer ids seen lately with ``role`` (this node's included when it has the role)."""
        ...

    def any_presence(self) -> bool:
        """Whether any peer's presence has arrived."""
        ...

    def live_inventories(self, role: str, within_s: float | None = ...) -> Mapping[str, Mapping[str, Any]]:
        """The live peers with ``role`` and their announced inventories
        (``slots``, ``platform``, ``os``, ``labels``... see ``meshd.runtime.inventory``);
        ``within_s``: heard from within this long, instead of the liveness horizon."""
        ...


class Committer(Protocol):
    """Commits ops, and the blocks they name, to a followed object (``ObjectHost``)."""

    @property
    def signer(self) -> Signer: ...

    async def commit(self, obj: Followed, ops: list[list[Any]], blocks: list[tuple[CID, bytes]] = ..., *,
                     defer_s: float = ...) -> None: ...


@runtime_checkable
class QueuePort(Protocol):
    """The task queue: its view, its object, commits, and waiting for changes."""

    @property
    def peer_id(self) -> str:
        """The id this node claims, records and judges as."""
        ...

    @property
    def queue(self) -> QueueView: ...

    @property
    def queue_obj(self) -> Followed: ...

    @property
    def checkpoints(self) -> CheckpointView:
        """The queue's checkpoints (``lattice.checkpoints``), over the same replica as ``queue``."""
        ...

    @property
    def objects(self) -> Committer: ...

    async def wait_changed(self, obj: Followed, timeout_s: float) -> None:
        """Return when ``obj`` changes or after ``timeout_s``."""
        ...


@runtime_checkable
class TaskSource(Protocol):
    """Validated task bodies, definitions and outputs; missing blocks are fetched from peers."""

    def task_record(self, cid: CID) -> dict[str, Any]:
        """Raises BlockNotFound (not here yet) or BadInput (rejected for good)."""
        ...

    def task_definition(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The inline or linked definition; raises as :meth:`task_record`."""
        ...

    def output_value(self, cid: CID) -> Any:
        """A decoded output block; raises as :meth:`task_record`."""
        ...

    def engine_signatures(self, engine: CID) -> list[CID]: ...

    async def fetch_blocks(self, cids: list[CID], *, timeout_s: float = ...) -> bool:
        """Fetch blocks from peers into the store (False when they did not all arrive)."""
        ...


@runtime_checkable
class Datasets(Protocol):
    """Dataset objects, followed on demand."""

    @property
    def objects(self) -> Committer: ...

    def dataset_obj(self, genesis: CID, *, create: bool = ...) -> Followed | None: ...


class Replication(Protocol):
    """The replication policy (:class:`meshd.roles.verify.ReplicationPolicy`)."""

    @property
    def options(self) -> VerifyConfig: ...

    def engine_of(self, task: CID) -> CID | None: ...

    def spot_checked(self, task: CID) -> bool: ...

    def base(self, task: CID, info: TaskInfo) -> tuple[int, int]: ...

    def results_of(self, task: CID) -> list[dict[str, Any]]: ...


@runtime_checkable
class TrustPort(Protocol):
    """Who is trusted or banned, and how many replicas a task needs."""

    @property
    def trust(self) -> TrustView: ...

    @property
    def policy(self) -> Replication: ...


@runtime_checkable
class Counts(Protocol):
    """The node's event counters (``/v1/status`` counters)."""

    def count(self, name: str, n: int = 1) -> None: ...


async def write_destination(datasets: Datasets, dest: dict[str, Any], output: Any) -> None:
    """Write a finished task's output to its destination dataset.

    The one home of this write: the runner (a plain task) and the verifier (a
    verified task's canonical output) both call it.

    Args:
        datasets: Where the destination dataset lives.
        dest: The task's validated ``result``: ``{"action", "destination":
            {"dataset", "path"}}``.
        output: The decoded output value.

    Cancellation may leave the write uncommitted; the task is then not
    completed either (both callers complete it after this returns).
    """
    ds = datasets.dataset_obj(dest["destination"]["dataset"], create=True)
    assert ds is not None  # create=True always returns one
    await datasets.objects.commit(ds, [dataset.write_op(dest["action"], dest["destination"]["path"], output)])


__all__ = ["Committer", "Counts", "Datasets", "PeerView", "QueuePort", "Replication", "TaskSource", "TrustPort",
           "write_destination"]
