"""Single :class:`lattice.meshcore.MeshCore` nodes driven by hand, for tests of what one message does.

Shared by the announcement tests (a fresh change pushed in one message, no
echo of a merged change): a core that follows one queue object, a change
enqueued the way the daemon enqueues, and the gossip among a call's outputs.
"""

from __future__ import annotations

from lattice import codec, goho, queue
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.meshcore import Broadcast, MeshCore, Output
from lattice.signing import Signer, peer_id_of


def core_following(seed: bytes, genesis: CID) -> MeshCore:
    """A core with its own key (from ``seed``) and memory store, following ``genesis``."""
    signer = Signer.from_seed(seed * 32)
    core = MeshCore(peer_id_of(signer.public), signer, MemoryBlockStore())
    core.follow(goho.Replica.empty(genesis, core.store), 0.0)
    return core


def enqueue_inline(core: MeshCore, genesis: CID, name: str) -> None:
    """Enqueue one task on ``core``'s replica of ``genesis``, as the daemon does: the
    small task body rides inline in the delta.  Tells the core nothing (see ``local_change``)."""
    body, data = codec.encode_block({"task": name})
    core.store.put(body, data)
    core.syncers[genesis].replica.update(queue.enqueue_ops([body]), core.signer, [(body, data)])


def broadcasts(outs: list[Output]) -> list[bytes]:
    """The gossip messages among a core call's outputs."""
    return [o.data for o in outs if isinstance(o, Broadcast)]
