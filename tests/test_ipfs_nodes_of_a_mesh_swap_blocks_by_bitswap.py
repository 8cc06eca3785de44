"""Two daemons with IPFS stores connect their IPFS nodes through presence, so
blocks move between the IPFS nodes by bitswap (an engine's file too, which
``ipfs cat`` prints, a one-block file and a UnixFS file over 256 KiB alike);
a private mesh does not.

Real processes throughout: the shared js-ipfs test node (scripts/start-ipfs.sh)
for one daemon, a second js-ipfs node started here on its own port and repo
under the test's tmp dir (stopped at the end) for the other, and two ``meshd
run`` daemons.  Skipped, with the reason, where no IPFS node can be had.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from lattice import codec
from lattice.cid import CID, DAG_PB, RAW
from lattice.unixfs import encode_file

from . import _ipfs_env
from ._daemons import ECHO, Daemon, echo_task, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ipfs]


def _rpc(api: str, path: str, params: list[tuple[str, str]] | None = None, **kw) -> httpx.Response:
    port = api.rstrip("/").split("/")[4]
    return httpx.post(f"http://127.0.0.1:{port}/api/v0/{path}", params=params or [], timeout=30, **kw)


def _ipfs_id(api: str) -> str:
    return _rpc(api, "id").json()["ID"]


def _swarm_peers(api: str) -> set[str]:
    return {p["Peer"] for p in _rpc(api, "swarm/peers").json().get("Peers") or []}


@pytest.fixture
def two_ipfs_nodes(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The shared test node and a fresh second one of our own (stopped afterwards).

    Fresh for each test: js-ipfs redials the peers it has met, so two nodes
    that were once connected cannot show that meshd connected (or did not
    connect) them.
    """
    try:
        first = _ipfs_env.ensure_node()
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no IPFS test node: {exc}")
    state = tmp_path / "ipfs2"
    try:
        second = _ipfs_env.ensure_node(state, _ipfs_env.free_port())
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"could not start a second IPFS node: {exc}")
    try:
        yield first, second
    finally:
        _ipfs_env.stop_node(state)


def _with_ipfs(d: Daemon, api: str, *, secret: str = "") -> Daemon:
    cfg = d.home / "config.toml"
    text, n = re.subn(r'(?m)^api = ""$', f'api = "{api}"', cfg.read_text())
    assert n == 1, "expected one [ipfs] api line in the default config"
    if secret:
        assert text.count('\nsecret = ""') == 1
        text = text.replace('\nsecret = ""', f'\nsecret = "{secret}"')
    cfg.write_text(text)
    return d.start()


def _pair(daemon_factory, apis: tuple[str, str], *, secret: str = "") -> tuple[Daemon, Daemon]:
    a = _with_ipfs(daemon_factory("a"), apis[0], secret=secret)
    # b trusts a's engines, so a task enqueued on a may run on either daemon.
    b = _with_ipfs(daemon_factory("b", bootstrap=[a.multiaddr], trust=[a.public_hex]), apis[1], secret=secret)
    wait_for(lambda: any(p["peer_id"] == b.peer_id and p["connected"] for p in a.get("/v1/peers").json()["peers"]),
             timeout=60, what="the daemons to connect")
    return a, b


def test_a_block_put_on_one_ipfs_node_reaches_the_other_by_bitswap(daemon_factory, two_ipfs_nodes) -> None:
    first, second = two_ipfs_nodes
    id_first, id_second = _ipfs_id(first), _ipfs_id(second)
    # The second node is fresh: nothing but meshd can have introduced them.
    assert id_second not in _swarm_peers(first)

    a, b = _pair(daemon_factory, two_ipfs_nodes)
    wait_for(lambda: id_second in _swarm_peers(first) or id_first in _swarm_peers(second),
             timeout=30, what="meshd to connect the two IPFS nodes")
    # meshd did it (logged just after the node answered the connect).
    wait_for(lambda: "ipfs_swarm_connected" in a.log() + b.log(), timeout=10, what="the connect to be logged")

    # A block only the second node holds (meshd never saw it) comes to the first by bitswap.
    data = os.urandom(4096)
    cid = CID.for_block(RAW, data)
    r = _rpc(second, "block/put", [("format", "raw"), ("mhtype", "sha2-256"), ("cid-version", "1"),
                                   ("cid-base", "base32")], files={"file": ("block", data)})
    assert r.status_code == 200 and r.json()["Key"] == str(cid), r.text
    got = _rpc(first, "block/get", [("arg", str(cid)), ("timeout", "20000ms")])
    assert got.status_code == 200, got.text
    assert got.content == data

    # An engine published on daemon a: its file, named by the manifest, is
    # printed by `ipfs cat` on b's IPFS node (reached there by bitswap).
    engine = a.add_echo_engine()
    manifest = codec.decode_untrusted(_rpc(first, "block/get", [("arg", engine), ("timeout", "5000ms")]).content)
    (build,) = manifest["platforms"].values()
    cat = _rpc(second, "cat", [("arg", str(build["file"])), ("timeout", "20000ms")])
    assert cat.status_code == 200, cat.text
    assert cat.content == ECHO.read_bytes()

    # A file over 256 KiB is a UnixFS file (dag-pb nodes over raw leaves) whose
    # CID is what `ipfs add --cid-version 1 --raw-leaves` prints; `ipfs cat` on
    # b's IPFS node prints it byte for byte, every block reached by bitswap.
    rng = random.Random(18)
    padding = "".join(f"# {rng.getrandbits(256):064x}\n" for _ in range(12_000))  # ~800 KB: 4 leaves
    source = ECHO.read_text() + padding
    big = a.add_script_engine("big-echo", source)
    manifest = codec.decode_untrusted(_rpc(first, "block/get", [("arg", big), ("timeout", "5000ms")]).content)
    (build,) = manifest["platforms"].values()
    assert build["file"].codec == DAG_PB and len(source) > 3 * 256 * 1024
    assert build["file"] == encode_file(source.encode())[0]
    cat = _rpc(second, "cat", [("arg", str(build["file"])), ("timeout", "30000ms")])
    assert cat.status_code == 200, cat.text
    assert cat.content == source.encode()

    # An output over 256 KiB encoded is also a UnixFS file of its JSON text,
    # linked from the result as `file`: `ipfs cat` prints it too.
    wide = a.add_script_engine("wide", "import json, sys\nv = json.load(sys.stdin)\n"
                                       "json.dump({'pad': 'x' * v['n'], 'n': v['n']}, sys.stdout)\n")
    task = a.post("/v1/tasks", echo_task(wide, {"n": 400_000}))
    assert task.status_code == 201, task.text
    a.wait_state(task.json()["cid"], "completed", timeout=60)
    (result,) = a.get(f"/v1/results/{task.json()['cid']}").json()["results"]
    assert result["output"] == {"pad": "x" * 400_000, "n": 400_000}
    cat = _rpc(second, "cat", [("arg", result["file"]), ("timeout", "30000ms")])
    assert cat.status_code == 200, cat.text
    assert cat.content == b'{"n":400000,"pad":"' + b"x" * 400_000 + b'"}'


def test_a_private_mesh_connects_no_ipfs_nodes(daemon_factory, two_ipfs_nodes) -> None:
    first, second = two_ipfs_nodes
    id_first, id_second = _ipfs_id(first), _ipfs_id(second)
    assert id_second not in _swarm_peers(first)

    a, b = _pair(daemon_factory, two_ipfs_nodes, secret="a-private-mesh-secret-0123456789")
    # Presence has gone both ways (the peers are listed with their roles), so an
    # IPFS offer, had there been one, would have been acted on by now; both
    # daemons are past their start-up, where the swarm service would log.
    wait_for(lambda: all(p["roles"] for p in a.get("/v1/peers").json()["peers"] if p["peer_id"] == b.peer_id)
             and all(p["roles"] for p in b.get("/v1/peers").json()["peers"] if p["peer_id"] == a.peer_id),
             timeout=30, what="presence both ways")
    assert "ipfs_swarm" not in a.log() + b.log()
    assert id_second not in _swarm_peers(first) and id_first not in _swarm_peers(second)
