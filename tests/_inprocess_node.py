"""An in-process ``Node`` over a memory block store, and the example fibsum job on a fake engine.

Shared by the tests that drive roles against a real ``meshd.node.Node``
without a daemon or a network (the evaluator, the runner's replica cap, the
output repair, the roles' ports).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conditions import ConditionOptions
from engines.examples import EXAMPLES_DIR
from lattice import codec
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.signing import Signer, peer_id_of
from meshd.config import VerifyConfig
from meshd.node import Node
from meshd.roles import jobs
from meshd.store.heads import HeadsStore
from meshd.store.objects import CommitOptions, ObjectHost

PIPELINES = Path(EXAMPLES_DIR) / "pipelines"


def make_node(tmp_path: Path, *, seed: bytes, mesh: str, name: str = "n", roles: tuple[str, ...] = (),
              peer_id: str | None = None, verify: VerifyConfig | None = None, heads: str = "heads.db",
              io_in_threads: bool = False) -> Node:
    """A ``Node`` with its own memory block store and heads database ``tmp_path / heads``.

    Args:
        seed: The identity seed (32 bytes); the node signs with it.
        mesh: The mesh name, from which the queue and the other objects' genesis derive.
        peer_id: Default: the peer id of ``seed``'s key.
        verify: The ``[verify]`` table; default ``VerifyConfig()``.
        io_in_threads: Run store and heads writes in worker threads.  Off by
            default: under virtual time (``autojump_clock``) the clock would
            jump past a worker thread.
    """
    signer = Signer.from_seed(seed)
    objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / heads), signer,
                         CommitOptions(io_in_threads=io_in_threads))
    config = SimpleNamespace(node=SimpleNamespace(mesh=mesh, labels=(), name=name, roles=roles),
                             verify=verify if verify is not None else VerifyConfig())
    if peer_id is None:
        peer_id = peer_id_of(signer.public)
        assert peer_id is not None
    return Node(objects=objects, peer_id=peer_id, identity_seed=seed, config=config)


async def submit_fibsum(node: Any) -> CID:
    """Submit ``engines/examples/pipelines/fibsum.json`` with every stage on one fake engine; the job id.

    The engine's block is put in ``node.store`` (nothing runs it); ``node`` is
    anything :func:`meshd.roles.jobs.submit_job` takes (a ``Node``, or a view
    of one through its port).
    """
    engine, data = codec.encode_block({"fake": "engine"})
    node.store.put(engine, data)
    body = json.loads((PIPELINES / "fibsum.json").read_text())
    for stage in body["stages"]:
        stage["engine"] = {"/": str(engine)}
        del stage["engine_name"]
    answer = await jobs.submit_job(node, body, options=ConditionOptions(), now_ms=0)
    return CID.parse_untrusted(answer["job"])
