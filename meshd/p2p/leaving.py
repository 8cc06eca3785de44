"""Saying goodbye: the last gossip a stopping node sends before it closes its connections.

Peers used to learn that a node stopped only when its presence expired
(three presence intervals, 6 s), and meanwhile counted it as a runner
(issue 15).  A stopping node now gossips one signed presence with
``"leaving": true`` (:meth:`lattice.meshcore.MeshCore.leave`) and its peers
drop it at once (:meth:`lattice.peers.PeerTable.mark_left`).

The transport is what knows when connections are about to close, so the
mesh hands it a *farewell* (a function returning the bytes) and
:func:`say_farewell` publishes them as the transport stops: after the
service is cancelled, before ``host.close()``, under a shield and a short
deadline, and then waits for py-libp2p's per-peer outgoing queues to drain
(publishing only queues the message; closing the host at once would drop
it).  A node killed with SIGKILL says nothing; its presence expires as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import trio

from ..runtime.logs import get_logger

__all__ = ["FAREWELL_TIMEOUT_S", "Farewell", "say_farewell"]

#: The most a stopping transport spends on its farewell (publish and drain).
FAREWELL_TIMEOUT_S: Final = 1.0
_POLL_S: Final = 0.005
_WRITE_GRACE_S: Final = 0.05

#: Returns the farewell bytes, or None when there is nothing to say.
Farewell = Callable[[], "bytes | None"]

log = get_logger("meshd.p2p")


async def say_farewell(pubsub: Any, topic: str, farewell: Farewell | None) -> bool:
    """Publish ``farewell()`` on ``topic`` and wait until every peer queue is empty.

    Runs shielded with its own deadline (:data:`FAREWELL_TIMEOUT_S`), so it
    works while the caller is being cancelled.  Never raises: a farewell is
    best effort, and the presence of a peer that missed it expires anyway.

    Returns:
        True when the message was published and every queue drained in time.
    """
    if farewell is None:
        return False
    with trio.CancelScope(shield=True, deadline=trio.current_time() + FAREWELL_TIMEOUT_S):
        try:
            data = farewell()
            if data is None:
                return False
            await pubsub.publish(topic, data)
            while any(len(q) for q in list(pubsub.peer_queues.values())):
                await trio.sleep(_POLL_S)  # RpcQueue has no "drained" event
            # The queue's sender task has taken the RPC but may still be
            # writing it (no event says when): a short grace before close.
            await trio.sleep(_WRITE_GRACE_S)
            log.info("p2p_farewell", peers=len(pubsub.peer_topics.get(topic, ())))
            return True
        except Exception as exc:  # best effort: log and go on stopping
            log.info("p2p_farewell_failed", error=repr(exc)[:200])
            return False
