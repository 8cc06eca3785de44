"""An outsider to a private mesh reads nothing and replays nothing (issue 14, finding 8).

Two honest daemons share ``[p2p] secret``; a hostile peer process without it
connects to one of them.  It can still reach the gossipsub topic, but:

* every message it hears is ChaCha20-Poly1305 ciphertext (before: an HMAC
  tag in front of clear text, API URLs and addresses included);
* a captured message gossiped again under its original origin is refused
  and counted as ``replayed_sealed`` (before: accepted as new);
* its wants get no blocks, and no member sends it a want.

The honest pair still runs work with correct results.
"""

from __future__ import annotations

import pytest

from .._daemons import Daemon, echo_task, wait_for
from .conftest import HostilePeer, rejected, topic_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    root = tmp_path_factory.mktemp("private")
    a = Daemon(root / "a", roles=("manager", "runner")).init()
    _add_secret(a)
    a.start()
    b = Daemon(root / "b", roles=("runner",), bootstrap=[a.multiaddr], trust=[a.public_hex]).init()
    _add_secret(b)
    b.start()
    hostile = None
    try:
        engine = a.add_echo_engine()
        wait_for(lambda: b.peer_id in a.get("/v1/peers").json()["live_runners"], timeout=60,
                 what="b to be a live runner on a")
        hostile = HostilePeer(topic_of(), a.multiaddr)
        yield a, b, hostile, engine
    finally:
        if hostile is not None:
            hostile.close()
        b.stop()
        a.stop()


def _add_secret(d: Daemon) -> None:
    cfg = d.home / "config.toml"
    text = cfg.read_text()
    assert text.count('\nsecret = ""') == 1
    cfg.write_text(text.replace('\nsecret = ""', '\nsecret = "correct horse battery staple"'))


def test_an_outsider_hears_only_ciphertext(private) -> None:
    a, _b, hostile, _engine = private
    heard = wait_for(lambda: [bytes.fromhex(h) for _o, h in hostile("heard")["messages"]] or None, timeout=30,
                     what="the outsider to hear gossip")
    wait_for(lambda: len(hostile("heard")["messages"]) >= 4, timeout=30, what="more gossip")
    heard = [bytes.fromhex(h) for _o, h in hostile("heard")["messages"]]
    port = a.url.rsplit(":", 1)[1].encode()
    for data in heard:
        assert data.startswith(b"MS2"), data[:16]
        assert b"meshd/presence" not in data and b"hpcp/" not in data and b"127.0.0.1:" + port not in data, data


def test_a_replayed_sealed_message_is_refused_and_counted(private) -> None:
    a, _b, hostile, _engine = private
    before = rejected(a).get("replayed_sealed", 0)
    sent = hostile("replay")["sent"]
    assert sent > 0
    wait_for(lambda: rejected(a).get("replayed_sealed", 0) > before, timeout=30,
             what=f"a to refuse the replays ({rejected(a)})")


def test_an_outsider_gets_no_blocks(private) -> None:
    a, _b, hostile, engine = private
    before = rejected(a).get("bad_mesh_secret", 0)
    got = hostile("want", peer=a.peer_id, cids=[engine])
    assert got.get("blocks", 0) == 0, got
    wait_for(lambda: rejected(a).get("bad_mesh_secret", 0) > before, timeout=30,
             what="a to count the outsider's want")
    assert hostile.peer_id not in {p["peer_id"] for p in a.get("/v1/peers").json()["peers"] if p["connected"]}


def test_the_private_mesh_still_finishes_its_work(private) -> None:
    a, b, _hostile, engine = private
    inputs = [{"private": i} for i in range(4)]
    cids = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, v) for v in inputs]}).json()["tasks"]]
    for cid, value in zip(cids, inputs):
        a.wait_state(cid, "completed", timeout=90)
        results = wait_for(lambda c=cid: [r for r in a.get(f"/v1/results/{c}").json()["results"]
                                          if r["output"] is not None], timeout=60, what=f"output of {cid}")
        assert [r["output"] for r in results] == [value], results
