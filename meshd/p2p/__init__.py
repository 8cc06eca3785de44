"""The network under HPCP: the libp2p transport and what runs over it.

``transport`` is the py-libp2p host (gossipsub broadcast plus request/response),
with its framing and errors in ``wire``, its options and records in
``options``, the request streams in ``requests`` and opt-in mDNS in ``mdns``.
``mesh`` drives one HPCP syncer per followed object over a transport;
``secret`` seals a transport with a shared mesh key; ``ratelimit`` holds the
per-peer token buckets; ``identity`` is the node's Ed25519 key and peer id.

``from meshd.p2p import Transport`` (and the other names of
``meshd.p2p.transport.__all__``) works, but loads the transport only when such
a name is first used: importing py-libp2p is slow and takes over logging, and
``meshd.p2p.identity`` or ``meshd.p2p.mesh`` must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

def __getattr__(name: str) -> Any:
    # The names are the transport's own __all__ (one list, not a copy here);
    # private and dunder probes never load py-libp2p.
    if not name.startswith("_"):
        transport = importlib.import_module(".transport", __name__)
        if name in transport.__all__:
            return getattr(transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
