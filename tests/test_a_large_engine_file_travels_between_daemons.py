"""An engine whose file is a UnixFS file (over 256 KiB) runs on a node that did not publish it.

Node a (manager only) publishes a script engine padded to about 800 KB, so
its file is a dag-pb root over 4 raw leaves; node b, the only runner, has
none of its blocks and fetches the manifest, the root and then the leaves
over meshd's own block exchange (embedded stores, no IPFS), reassembles the
file and runs it.  Real daemons; a few seconds.
"""

from __future__ import annotations

import random

import pytest

from engines.files import read_file
from lattice.cid import DAG_PB, CID
from lattice.diskstore import DiskBlockStore
from lattice.unixfs import encode_file

from ._daemons import ECHO, Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow


def test_an_engine_with_a_unixfs_file_published_on_one_node_runs_on_another(daemon_factory) -> None:
    a: Daemon = daemon_factory("a", roles=("manager",)).start()
    b: Daemon = daemon_factory("b", bootstrap=[a.multiaddr], trust=[a.public_hex]).start()
    wait_for(lambda: b.peer_id in a.get("/v1/peers").json()["live_runners"], timeout=60, what="a to hear b")

    rng = random.Random(18)
    source = ECHO.read_text() + "".join(f"# {rng.getrandbits(256):064x}\n" for _ in range(12_000))
    engine = a.add_script_engine("big-echo", source)
    r = a.post("/v1/tasks", echo_task(engine, {"big": True}))
    assert r.status_code == 201, r.text
    cid = r.json()["cid"]
    a.wait_state(cid, "completed", timeout=60)
    (result,) = a.get(f"/v1/results/{cid}").json()["results"]
    assert result["runner"] == b.peer_id and result["output"] == {"big": True}

    b.stop()
    file, _ = encode_file(source.encode())
    assert file.codec == DAG_PB
    with DiskBlockStore.open(b.home / "blocks" / "blocks.db") as store:
        assert read_file(store, file) == source.encode()  # b holds every block of it, root and leaves
        assert store.has(CID.parse_untrusted(engine))
