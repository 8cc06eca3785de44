"""What the mesh core asks its driver to do: typed, frozen output records.

:class:`~lattice.meshcore.MeshCore` returns lists of these from every input
method; the daemon's pump (``meshd/p2p/mesh.py``) and the simulation
(``tests/_mesh_sim.py``) carry them out.  Kept apart from the core so a
driver can match on them without importing the core's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cid import CID

__all__ = ["Broadcast", "Changed", "Dial", "Fetched", "Follow", "Output", "Request"]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Gossip ``data`` to every peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """Send ``data`` to ``peer`` as a request; answer with ``on_response(ask_id, ...)``.

    ``genesis`` names the object whose replica the answer may change (an
    HPCP want), so that a driver can hold that object's lock around
    :meth:`MeshCore.on_response`; None for a linked-block ask.
    """

    ask_id: int
    peer: str
    data: bytes
    genesis: CID | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to ``peer`` at one of ``addrs`` (full multiaddrs) unless connected."""

    peer: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Follow:
    """A peer announced ``genesis``, which we do not follow."""

    genesis: CID


@dataclass(frozen=True, slots=True)
class Changed:
    """Peers' deltas advanced the replica of ``genesis``."""

    genesis: CID


@dataclass(frozen=True, slots=True)
class Fetched:
    """Linked-block wants that ended: arrived (``done``) or given up (``abandoned``)."""

    done: tuple[CID, ...] = ()
    abandoned: tuple[CID, ...] = ()


Output = Broadcast | Request | Dial | Follow | Changed | Fetched
