"""An engine whose file is a UnixFS file (over 256 KiB) runs on a node that did not publish it.

Node a (manager only) publishes a script engine padded to about 800 KB, so
its file is a dag-pb root over 4 raw leaves; node b, the only runner, has
none of its blocks and fetches the manifest, the root and then the leaves
over meshd's own block exchange (embedded stores, no IPFS), reassembles the
file and runs it.  An engine whose output is over 256 KiB encoded also
gets its output stored as a UnixFS file of the JSON text (the result's
``file``).  Real daemons; a few seconds.
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

    # An output over 256 KiB encoded is also stored as a UnixFS file of its
    # JSON text, linked from the result record as `file`.
    wide = a.add_script_engine("wide", "import json, sys\nv = json.load(sys.stdin)\n"
                                       "json.dump({'pad': 'x' * v['n'], 'n': v['n']}, sys.stdout)\n")
    r = a.post("/v1/tasks", echo_task(wide, {"n": 300_000}))
    a.wait_state(r.json()["cid"], "completed", timeout=60)
    (wide_result,) = a.get(f"/v1/results/{r.json()['cid']}").json()["results"]
    assert wide_result["output"] == {"pad": "x" * 300_000, "n": 300_000}
    small = a.get(f"/v1/results/{cid}").json()["results"][0]
    assert "file" not in small  # a small output is one block: no file

    b.stop()
    file, _ = encode_file(source.encode())
    assert file.codec == DAG_PB
    with DiskBlockStore.open(b.home / "blocks" / "blocks.db") as store:
        assert read_file(store, file) == source.encode()  # b holds every block of it, root and leaves
        assert store.has(CID.parse_untrusted(engine))
        text = read_file(store, CID.parse_untrusted(wide_result["file"]))
        assert text == b'{"n":300000,"pad":"' + b"x" * 300_000 + b'"}'
