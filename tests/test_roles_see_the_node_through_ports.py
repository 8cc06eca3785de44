"""Roles see the node and the mesh through small Protocols (``meshd.roles.ports``).

The daemon's ``Node`` and ``Mesh`` satisfy them, and a role runs its claim
decision against fakes that implement only those ports: the runner and the
verifier defer to the claim planner (``lattice.claims``) over the peer
view's live set.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lattice import codec, dataset
from lattice.blockstore import MemoryBlockStore
from lattice.claims import rendezvous_rank
from lattice.signing import Signer, peer_id_of


class FakePeers:
    """A peer view over a fixed live set (what ``Mesh.live_peers`` returns)."""

    def __init__(self, live: dict[str, list[str]]) -> None:
        self.live = live

    def live_peers(self, role: str) -> list[str]:
        return list(self.live.get(role, []))

    def any_presence(self) -> bool:
        return bool(self.live)

    def live_inventories(self, role: str) -> dict[str, dict[str, Any]]:
        return {p: {"slots": 1, "platform": "linux-x86_64"} for p in self.live.get(role, [])}


class FakeTrust:
    def trusted(self, peer: str, engine: Any) -> bool:
        return False

    def banned_peers(self) -> frozenset[str]:
        return frozenset()


def _claim_node(me: str, peers: FakePeers | None) -> Any:
    """Only what the runner's claim decision reads: queue facts, trust and policy, the peer view."""
    return SimpleNamespace(
        peer_id=me, mesh=peers, trust=FakeTrust(),
        queue=SimpleNamespace(info=lambda t: None, wanted=lambda t: 1, completed_by=lambda p: 0),
        policy=SimpleNamespace(engine_of=lambda t: None, spot_checked=lambda t: False))


def test_the_runner_claims_as_the_planner_ranks_the_live_runners() -> None:
    from meshd.roles.runner import Runner, RunnerOptions, _Fit

    task = codec.cid_of({"task": "ports"})
    runners = ["r0", "r1", "r2"]
    top, second, _ = rendezvous_rank(task, runners)
    peers = FakePeers({"runner": runners})
    options = RunnerOptions(defer_s=60.0)

    def runner(me: str, view: FakePeers | None) -> Runner:
        r = Runner(_claim_node(me, view), None, options)
        r._accept_cache[task] = _Fit(True, (), None)  # the task's body was read: no constraints
        return r

    assert runner(top, peers)._accept_share(task)
    backup = runner(second, peers)
    assert not backup._accept_share(task) and task in backup._first_seen  # another's share: its deferral starts
    assert not backup._accept_steal(task)  # waits defer_s from then
    peers.live["runner"] = [second]  # the preferred runner died: nobody left to defer to
    backup._round = None
    assert backup._accept_share(task)
    assert runner(second, None)._accept_share(task)  # no mesh: claim at once


def test_a_runner_that_cannot_run_the_engine_is_no_candidate() -> None:
    """A runner whose platform the engine has no build for never ranks first:
    the task goes to one that can, at once."""
    from meshd.roles.runner import Runner, RunnerOptions, _Fit

    task = codec.cid_of({"task": "platforms"})
    top, second = rendezvous_rank(task, ["r0", "r1"])

    class Mixed(FakePeers):
        def live_inventories(self, role: str) -> dict[str, dict[str, Any]]:
            return {top: {"slots": 1, "platform": "linux-aarch64"}, second: {"slots": 1, "platform": "linux-x86_64"}}

    r = Runner(_claim_node(second, Mixed({"runner": [top, second]})), None, RunnerOptions(defer_s=60.0))
    r._accept_cache[task] = _Fit(True, (), frozenset({"linux-x86_64"}))
    assert r._accept_share(task)


def test_the_verifier_judges_as_the_planner_ranks_the_live_verifiers() -> None:
    from meshd.roles.verifier import Verifier

    task = codec.cid_of({"task": "verify"})
    top, second = rendezvous_rank(task, ["v0", "v1"])
    peers = FakePeers({"verifier": [top]})  # the other live verifier; each adds itself
    assert Verifier(SimpleNamespace(peer_id=top, mesh=peers), defer_s=60.0)._my_turn(task)
    later = Verifier(SimpleNamespace(peer_id=second, mesh=peers), defer_s=60.0)
    assert not later._my_turn(task) and task in later._first_ready


async def test_write_destination_commits_the_write_op_to_the_destination_dataset() -> None:
    from meshd.roles.ports import write_destination

    commits: list[tuple[Any, list[Any]]] = []

    class Objects:
        signer = None

        async def commit(self, obj: Any, ops: list[Any], blocks: Any = ()) -> None:
            commits.append((obj, ops))

    genesis = codec.cid_of({"dataset": 1})
    datasets = SimpleNamespace(objects=Objects(), dataset_obj=lambda g, create=False: ("ds", g, create))
    await write_destination(datasets, {"action": "set", "destination": {"dataset": genesis, "path": "/a"}}, {"x": 1})
    assert commits == [(("ds", genesis, True), [dataset.write_op("set", "/a", {"x": 1})])]


def test_the_node_and_the_mesh_satisfy_the_ports(tmp_path: Path) -> None:
    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.p2p.mesh import Mesh
    from meshd.roles.ports import (
        Counts,
        Datasets,
        PeerView,
        QueuePort,
        TaskSource,
        TrustPort,
    )
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import ObjectHost

    seed = b"\x55" * 32
    signer = Signer.from_seed(seed)
    objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / "heads.db"), signer)
    config = SimpleNamespace(node=SimpleNamespace(mesh="ports-mesh", labels=(), name="n", roles=("runner",)),
                             verify=VerifyConfig())
    node = Node(objects=objects, peer_id=peer_id_of(signer.public), identity_seed=seed, config=config)
    for port in (QueuePort, TaskSource, Datasets, TrustPort, Counts):
        assert isinstance(node, port), port.__name__
    for name in ("results_obj", "verdicts_obj", "inventory", "local_origin", "mesh", "store"):
        assert hasattr(node, name), name  # the rest of RunnerNode / VerifierNode
    for name in ("engine_of", "spot_checked", "base", "results_of", "options"):
        assert hasattr(node.policy, name), name
    assert all(callable(getattr(Mesh, m, None)) for m in ("live_peers", "any_presence"))
    assert not isinstance(object(), PeerView)
