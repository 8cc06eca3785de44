"""The Archivist pins each object's newest version, unpins the old, and keeps the history.

Pure rules (version records, pin records, the drop policy) are tested on
values; the role runs in real daemons, on the embedded store and on a real
js-ipfs node (scripts/start-ipfs.sh; skipped with the reason where Node/npm
are missing).  Pin state in IPFS is checked through the node's own HTTP API,
not through meshd.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from lattice import codec, goho, records
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.errors import BadRecord
from lattice.signing import Signer
from meshd.store.archive import (
    PinRecord, dag_blocks, droppable, holders, pin_record, pin_record_untrusted, version_from_untrusted,
    version_record,
)
from meshd.cli import commands as cli
from meshd.p2p.identity import peer_id_from_public_key
from meshd.roles.archivist import ArchivistOptions

from . import _ipfs_env
from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:The .strict. parameter is no longer needed:FutureWarning")

ROLES = ("manager", "runner", "archivist")


def _cid(n: int) -> CID:
    return codec.cid_of({"n": n})


# ------------------------------------------------------------------ pure rules


def test_nothing_is_droppable_before_n_distinct_archivists_hold_it() -> None:
    v1, v2, block, lonely = _cid(1), _cid(2), _cid(3), _cid(4)
    g = _cid(0)
    pins = [PinRecord("A", g, v1, 1), PinRecord("A", g, v2, 2)]  # one archivist, two versions
    blocks = {block: {v1, v2}, lonely: set()}
    assert droppable(blocks, pins, 2) == set()
    assert droppable(blocks, pins, 1) == {block}
    pins.append(PinRecord("B", g, v1, 3))
    assert droppable(blocks, pins, 2) == {block}
    assert droppable(blocks, pins, 3) == set()
    assert holders(pins)[v1] == frozenset({"A", "B"})
    with pytest.raises(ValueError):
        droppable(blocks, pins, 0)


def test_pin_records_verify_and_forgeries_are_refused() -> None:
    signer = Signer.generate()
    rec = pin_record(signer, _cid(0), _cid(1), 123)
    parsed = pin_record_untrusted(rec)
    assert parsed.archivist == peer_id_from_public_key(signer.public)
    assert (parsed.genesis, parsed.version, parsed.at) == (_cid(0), _cid(1), 123)
    # Posing as another archivist, or altering a signed field, is refused.
    with pytest.raises(BadRecord):
        pin_record_untrusted({**rec, "archivist": peer_id_from_public_key(Signer.generate().public)})
    with pytest.raises(BadRecord):
        pin_record_untrusted({**rec, "version": _cid(2)})
    for garbage in (None, 1, {}, {"t": "meshd/pin", "v": 1}, {**rec, "extra": 1}):
        with pytest.raises(BadRecord):
            pin_record_untrusted(garbage)


def test_version_root_links_heads_so_its_dag_is_the_whole_object() -> None:
    store = MemoryBlockStore()
    g, gdata = records.make_genesis("dataset", "x")
    store.put(g, gdata)
    rep = goho.Replica.empty(g, store)
    signer = Signer.generate()
    for i in range(5):
        rep.update([["put", f"k{i}", i]], signer)
    root, data = codec.encode_block(version_record(g, rep.heads, rep.height, 7))
    store.put(root, data)
    v = version_from_untrusted(root, data)
    assert (v.genesis, list(v.heads), v.height, v.prev) == (g, rep.heads, 5, None)
    found, missing = dag_blocks(store.get, root)
    assert missing == set()
    assert len(found) == 1 + 5 + 1  # root, every delta, the genesis
    with pytest.raises(BadRecord):
        version_from_untrusted(g, gdata)


def test_archivist_options_are_validated_and_read_from_config() -> None:
    class Cfg:
        archive = {"interval_s": 0.25, "min_archivists": 3, "unknown_key": 1}

    assert ArchivistOptions.from_config(object()) == ArchivistOptions()
    opts = ArchivistOptions.from_config(Cfg())
    assert (opts.interval_s, opts.min_archivists) == (0.25, 3)
    for bad in ({"min_archivists": 0}, {"interval_s": -1}, {"pin_timeout_s": 0}, {"retry_s": 60, "retry_max_s": 1}):
        with pytest.raises(ValueError):
            ArchivistOptions(**bad)


# ------------------------------------------------------------------ daemons


def _ipfs_config(api: str) -> str:
    return f'\n[ipfs]\napi = "{api}"\n'


def _make(factory, name: str, api: str | None = None, roles: tuple[str, ...] = ROLES) -> Daemon:
    d = factory(name, roles=roles)
    if api is not None:
        # The default config already has an [ipfs] table: replace its api line.
        cfg = d.home / "config.toml"
        text, n = re.subn(r'(?m)^api = ""$', f'api = "{api}"', cfg.read_text())
        assert n == 1, "expected one [ipfs] api line in the default config"
        cfg.write_text(text)
    return d.start()


def _queue_genesis(d: Daemon) -> str:
    return d.get("/v1/node").json()["objects"]["queue"]


def _run_batch(d: Daemon, engine: str, tag: str, n: int = 3) -> list[str]:
    r = d.post("/v1/tasks", {"tasks": [echo_task(engine, {"batch": tag, "i": i}) for i in range(n)]})
    assert r.status_code == 201, r.text
    cids = [t["cid"] for t in r.json()["tasks"]]
    for c in cids:
        d.wait_state(c, "completed")
    return cids


def _pinned_version_with(d: Daemon, genesis: str, completed: int) -> dict:
    """Wait until the pinned version of ``genesis`` shows ``completed`` completions; return it."""
    def cond() -> dict | None:
        listing = d.get(f"/v1/archive/{genesis}").json()
        if not listing.get("pinned"):
            return None
        v = d.get(f"/v1/archive/{genesis}/{listing['pinned']}").json()
        return listing if v["summary"]["sets"].get("completed", 0) >= completed else None

    return wait_for(cond, timeout=60, what=f"a pinned version with {completed} completions")


def _ipfs_recursive_pins(api: str) -> set[str]:
    port = api.split("/")[4]
    r = httpx.post(f"http://127.0.0.1:{port}/api/v0/pin/ls", params={"type": "recursive", "cid-base": "base32"},
                   timeout=30)
    r.raise_for_status()
    return set(r.json().get("Keys", {}))


def _check_three_versions(d: Daemon, api: str | None) -> None:
    engine = d.add_echo_engine()
    q = _queue_genesis(d)
    done: list[str] = []
    pinned_roots: list[str] = []
    for tag in ("one", "two", "three"):
        done += _run_batch(d, engine, tag)
        listing = _pinned_version_with(d, q, len(done))
        pinned_roots.append(listing["pinned"])
        if api is not None:
            pins = _ipfs_recursive_pins(api)
            assert listing["pinned"] in pins
            older = {v["version"] for v in listing["versions"]} - {listing["pinned"]}
            assert not older & pins, "older versions of the queue must be unpinned"
            if tag != "one":
                assert older, "each batch makes a new version"
    assert len(set(pinned_roots)) == 3
    versions = d.get(f"/v1/archive/{q}").json()["versions"]
    assert [v["pinned"] for v in versions].count(True) == 1 and versions[-1]["pinned"]
    # Every version, old ones included, reads back from the block store by CID.
    completions = []
    for v in versions:
        r = d.get(f"/v1/archive/{q}/{v['version']}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["heads"] == v["heads"] and body["summary"]["missing"] == 0
        completions.append(body["summary"]["sets"].get("completed", 0))
    assert completions == sorted(completions) and completions[-1] == len(done)
    assert any(c < len(done) for c in completions), "old versions must show the older state"
    # Result outputs and the engine's files are pinned too; the pin is announced.
    pins = d.get("/v1/pins").json()["pins"]
    purposes = {p["purpose"] for p in pins}
    assert {"version", "result", "engine"} <= purposes
    out = d.get(f"/v1/results/{done[0]}").json()["results"][0]["output_cid"]
    wait_for(lambda: out in {p["cid"] for p in d.get("/v1/pins").json()["pins"]}, what="output pinned")
    if api is not None:
        assert out in _ipfs_recursive_pins(api)
    me = d.get("/v1/node").json()["peer_id"]
    wait_for(lambda: me in {a["archivist"] for a in d.get(f"/v1/archive/{q}").json()["archivists"]},
             what="the pin announced in the pins GOHO")


@pytest.mark.slow
def test_embedded_store_pins_newest_version_and_keeps_old_ones_readable(daemon_factory, monkeypatch,
                                                                          capsys) -> None:
    d = _make(daemon_factory, "embedded")
    _check_three_versions(d, None)
    # `meshd pin ls` and `meshd archive GENESIS` (registered as a CLI extension).
    monkeypatch.setattr(cli, "EXTENSIONS", tuple(dict.fromkeys([*cli.EXTENSIONS, "meshd.cli.archive"])))
    capsys.readouterr()
    assert cli.main(["pin", "ls", "--local", "--home", str(d.home)]) == 0
    out = capsys.readouterr().out
    assert "version" in out and "result" in out and "pin(s) in the embedded store" in out
    q = _queue_genesis(d)
    assert cli.main(["archive", q, "--home", str(d.home)]) == 0
    out = capsys.readouterr().out
    assert "pinned" in out and "queue/" in out
    assert cli.main(["archive", "--json", "--home", str(d.home)]) == 0
    assert q in capsys.readouterr().out


@pytest.mark.slow
def test_archive_routes_say_why_when_the_role_is_off(daemon) -> None:
    for path in ("/v1/archive", "/v1/pins", f"/v1/archive/{_queue_genesis(daemon)}"):
        r = daemon.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "archivist_disabled", r.text


@pytest.fixture(scope="module")
def ipfs_api() -> str:
    try:
        return _ipfs_env.ensure_node()
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no IPFS test node: {exc}")


@pytest.mark.slow
@pytest.mark.ipfs
def test_ipfs_pins_newest_version_and_unpins_older_ones(daemon_factory, ipfs_api: str) -> None:
    d = _make(daemon_factory, "ipfs", ipfs_api)
    _check_three_versions(d, ipfs_api)


@pytest.mark.slow
@pytest.mark.ipfs
def test_ipfs_node_dying_mid_run_gives_clear_errors_and_work_resumes(daemon_factory, tmp_path: Path) -> None:
    if (why := _ipfs_env.missing_tools()) is not None:
        pytest.skip(why)
    state, port = tmp_path / "ipfs-private", _ipfs_env.free_port()
    try:
        api = _ipfs_env.ensure_node(state, port)
    except _ipfs_env.IpfsUnavailable as exc:
        pytest.skip(f"no private IPFS node: {exc}")
    try:
        d = _make(daemon_factory, "dies", api)
        engine = d.add_echo_engine()
        q = _queue_genesis(d)
        first = _run_batch(d, engine, "before")
        _pinned_version_with(d, q, len(first))

        _ipfs_env.kill_node(state)
        wait_for(lambda: not _answers(port), what="the IPFS node to be gone")
        r = d.post("/v1/tasks", {"tasks": [echo_task(engine, {"lost": True})]})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert d.get("/v1/health").status_code == 200 and d.proc.poll() is None
        assert d.get("/v1/queue").json()["completed"] == len(first)  # state is in memory, not in IPFS

        _ipfs_env.ensure_node(state, port)
        second = _run_batch(d, engine, "after")
        listing = _pinned_version_with(d, q, len(first) + len(second))
        pins = _ipfs_recursive_pins(api)
        assert listing["pinned"] in pins
        assert not ({v["version"] for v in listing["versions"]} - {listing["pinned"]}) & pins
        for c in first + second:  # nothing acknowledged was lost
            res = d.get(f"/v1/results/{c}").json()["results"]
            assert res and res[0]["output"] is not None
    finally:
        _ipfs_env.stop_node(state)


def _answers(port: int) -> bool:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/api/v0/id", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_ipfs_node_and_an_embedded_node_sync_and_the_archivist_pins_merged_versions(
        daemon_factory, ipfs_api: str) -> None:
    """Node A (embedded store) enqueues; node B (IPFS store, archivist) merges A's
    queue over HPCP and pins the merged version in IPFS; results flow back to A."""
    a = daemon_factory("embedded", roles=("manager",))
    a.start()
    b = daemon_factory("onipfs", roles=ROLES, bootstrap=[a.multiaddr], trust=[a.public_hex])
    cfg = b.home / "config.toml"
    text, n = re.subn(r'(?m)^api = ""$', f'api = "{ipfs_api}"', cfg.read_text())
    assert n == 1
    cfg.write_text(text)
    b.start()
    wait_for(lambda: any(p["roles"] for p in b.get("/v1/peers").json()["peers"]), timeout=60, what="B to see A")
    engine = a.add_echo_engine()
    cids = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, {"x": i}) for i in range(5)]}).json()["tasks"]]
    for c in cids:  # B (on IPFS) runs them; A (embedded) sees the results
        a.wait_state(c, "completed", timeout=90)
    q = _queue_genesis(a)
    assert _queue_genesis(b) == q
    listing = _pinned_version_with(b, q, 5)
    assert listing["pinned"] in _ipfs_recursive_pins(ipfs_api)
    for c in cids:
        res = wait_for(lambda c=c: [r for r in a.get(f"/v1/results/{c}").json()["results"] if r["output"] is not None],
                       timeout=60, what="outputs from the IPFS node on the embedded node")
        assert res[0]["runner"] == b.peer_id