"""A lost peer whose probe was refused, and that counts as live again before
we reconnect to it, is probed again at once (meshd.p2p.redials).

A presence the dead process sent just before it was killed reached one
observer 7 ms after that observer's probe had counted it dead (0.3 s after
it was sent, under CPU load).  It made the dead peer live again for a
whole presence horizon, and the redials that followed, refused like the
probe, were not probes, so nothing counted it dead again: ``meshd bench
membership`` detect 6.2 s in that round, 0.2-0.5 s in the others.  The
schedule is tested pure; the last test runs two meshes over the in-process
transport and delivers such a late presence."""

from __future__ import annotations

import time

import trio

from lattice.blockstore import MemoryBlockStore
from lattice.signing import Signer, peer_id_of
from meshd.p2p.mesh import Mesh, MeshOptions
from meshd.p2p.redials import REDIAL_EVERY_S, REDIAL_SOON_FOR_S, REDIAL_SOON_S, Redials
from meshd.p2p.wire import PeerUnreachable
from meshd.store.heads import HeadsStore
from meshd.store.objects import ObjectHost

from ._fake_transport import FakeTransport, Hub

ADDRS = {"p": ("/ip4/10.0.0.2/tcp/4601",)}
#: Well under the 6 s presence horizon the late presence would otherwise keep the peer live for.
DEAD_AGAIN_BOUND_S = 3.0


def _due(r: Redials, now: float, *, live=(), dialing=()):
    return r.due(now, connected=set(), addrs=lambda p: ADDRS.get(p, ()), keep=lambda p: True,
                 dialing=set(dialing), live=lambda p: p in set(live))


def _lost_and_refused(r: Redials) -> None:
    r.lose("p", 0.0)
    assert _due(r, 0.0) == [("p", ADDRS["p"], True)]  # the probe ...
    r.refused("p")  # ... was refused: the loop counted p dead


def test_a_refused_peer_that_counts_live_again_is_probed_at_once_not_at_the_next_redial() -> None:
    r = Redials()
    _lost_and_refused(r)
    assert _due(r, 0.1) == []  # dead, as it should be: the usual pace
    assert _due(r, 0.2, live={"p"}) == [("p", ADDRS["p"], True)]  # a late presence revived it: probe it


def test_a_refused_peer_still_dead_is_redialled_at_the_usual_pace_and_probed_once_revived() -> None:
    r = Redials()
    _lost_and_refused(r)
    assert _due(r, REDIAL_SOON_S / 2) == []
    assert _due(r, REDIAL_SOON_S) == [("p", ADDRS["p"], False)]
    assert _due(r, 2 * REDIAL_SOON_S) == [("p", ADDRS["p"], False)]
    # Revived after several plain redials (a presence held up for a second): still probed.
    assert _due(r, 2 * REDIAL_SOON_S + 0.1, live={"p"}) == [("p", ADDRS["p"], True)]


def test_each_revival_gets_one_probe_and_only_soon_after_the_loss() -> None:
    r = Redials()
    _lost_and_refused(r)
    assert _due(r, 1.0, live={"p"}) == [("p", ADDRS["p"], True)]
    # The re-probe was not refused (it hung, or p is live but did not answer yet): no probe at each poll.
    assert _due(r, 1.1, live={"p"}) == []
    assert _due(r, 1.0 + REDIAL_SOON_S, live={"p"}) == [("p", ADDRS["p"], False)]
    r.refused("p")  # refused again later: dead again ...
    assert _due(r, 2.0, live={"p"}) == [("p", ADDRS["p"], True)]  # ... and revived again: probed again
    r.refused("p")
    late = REDIAL_SOON_FOR_S + 1.0
    # Long after the loss a peer whose addresses refuse us is not suspected at each of its presences.
    assert _due(r, late, live={"p"}) == [("p", ADDRS["p"], False)]
    assert _due(r, late + REDIAL_EVERY_S / 2, live={"p"}) == []


def test_the_probe_again_waits_for_a_dial_under_way() -> None:
    r = Redials()
    _lost_and_refused(r)
    assert _due(r, 0.2, live={"p"}, dialing={"p"}) == []
    assert _due(r, 0.3, live={"p"}) == [("p", ADDRS["p"], True)]


def test_a_new_loss_starts_clean() -> None:
    r = Redials()
    _lost_and_refused(r)
    assert r.due(0.4, connected={"p"}, addrs=lambda p: ADDRS["p"], keep=lambda p: True, dialing=set(),
                 live=lambda p: True) == []  # back: forgotten
    r.refused("p")  # a late report about a peer no longer lost changes nothing
    r.lose("p", 5.0)
    assert _due(r, 5.0, live={"p"}) == [("p", ADDRS["p"], True)]  # the new loss's own probe
    assert _due(r, 5.1, live={"p"}) == []  # and no second one: its probe was not refused


class _DialingTransport(FakeTransport):
    """The fake transport with dials: a peer that is down refuses them at once (nothing listens)."""

    async def connect_any(self, peer_id: str, addrs: list[str]) -> str:
        if peer_id in self.hub.down or peer_id not in self.hub.nodes:
            raise PeerUnreachable(f"{peer_id} refused at every address")
        return peer_id


async def _node(nursery, hub: Hub, tmp_path, i: int):
    signer = Signer.from_seed(bytes([i + 90]) * 32)
    pid = peer_id_of(signer.public)
    host = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / f"h{i}.db"), signer)
    await nursery.start(host.serve)
    transport = hub.nodes[pid] = _DialingTransport(hub, pid)
    mesh = Mesh(host, transport, roles=["runner"], inventory={}, addrs=lambda: [f"/ip4/10.9.9.{i}/tcp/4601"],
                options=MeshOptions(tick_s=0.1))  # the default presence period: a 6 s horizon
    await nursery.start(mesh.serve)
    return pid, signer, mesh


async def _until(cond, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def test_a_late_presence_of_a_crashed_peer_does_not_keep_it_live_for_a_horizon(tmp_path) -> None:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        x, x_signer, x_mesh = await _node(nursery, hub, tmp_path, 0)
        a, _, a_mesh = await _node(nursery, hub, tmp_path, 1)
        table = a_mesh.core.peers
        await _until(lambda: table.is_live(x, time.time()), 30)

        hub.down.add(x)  # X crashes: A loses it, and its probe is refused
        await _until(lambda: not table.is_live(x, time.time()), 10)
        revived = table.revived
        # A presence X sent before it died arrives now, late.
        late = x_mesh.core.peers.encode_presence(x_signer, addrs=["/ip4/10.9.9.0/tcp/4601"], now=time.time())
        hub.nodes[a]._send.send_nowait((x, late))
        await _until(lambda: table.revived > revived, 10)
        t0 = time.monotonic()
        # Probed again and refused: dead again at once, not after the 6 s horizon (generous bound).
        await _until(lambda: not table.is_live(x, time.time()), DEAD_AGAIN_BOUND_S)
        print(f"dead again {time.monotonic() - t0:.2f} s after the late presence")
        nursery.cancel_scope.cancel()
