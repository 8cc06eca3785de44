"""Roles see the node and the mesh through small Protocols (``meshd.roles.ports``).

The daemon's ``Node`` and ``Mesh`` satisfy them, and a role runs its claim
decision against fakes that implement only those ports: the runner and the
verifier defer to the claim planner (``lattice.claims``) over the peer
view's live set.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lattice import codec, dataset
from lattice.claims import rendezvous_rank

from ._inprocess_node import make_node, submit_fibsum


class FakePeers:
    """A peer view over a fixed live set (what ``Mesh.live_peers`` returns)."""

    def __init__(self, live: dict[str, list[str]]) -> None:
        self.live = live

    def live_peers(self, role: str) -> list[str]:
        return list(self.live.get(role, []))

    def any_presence(self) -> bool:
        return bool(self.live)

    def live_inventories(self, role: str, within_s: float | None = None) -> dict[str, dict[str, Any]]:
        return {p: {"slots": 1, "platform": "linux-x86_64"} for p in self.live.get(role, [])}


class FakeTrust:
    def trusted(self, peer: str, engine: Any) -> bool:
        return False

    def banned_peers(self) -> frozenset[str]:
        return frozenset()


def _claim_node(me: str, peers: FakePeers | None) -> Any:
    """Only what the runner's claim decision reads: queue facts, trust and policy, the peer view,
    and whether this process was stopped lately (never, here)."""
    return SimpleNamespace(
        peer_id=me, mesh=peers, trust=FakeTrust(), stalled=lambda late_s, within_s: False,
        queue=SimpleNamespace(info=lambda t: None, wanted=lambda t: 1, completed_by=lambda p, before_ms=None: 0),
        policy=SimpleNamespace(engine_of=lambda t: None, spot_checked=lambda t: False))


class OneTask:
    """A queue view offering one ready task (what ``QueueView.next`` would)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.heard: list[tuple[str, int]] = []  # no peer's records arrive

    def next(self, now_ms: int, *, limit: int, accept: Any, me: str, plain: bool = True, **_: Any) -> list[Any]:
        return [self.task] if plain and accept(self.task) else []

    def tasks_since(self, start: int) -> list[Any]:
        return [self.task][start:]

    def ready(self, t: Any, now_ms: int) -> bool:
        return True

    def info(self, t: Any) -> None:
        return None

    def wanted(self, t: Any) -> int:
        return 1

    def completed_by(self, p: str, before_ms: int | None = None) -> int:
        return 0

    def position(self, t: Any) -> int:
        return 0  # enqueued in the first delta seen

    def reach(self, peer: str) -> int:
        return 0  # every peer has shown it has that delta

    def order_index(self, t: Any) -> int:
        return 0

    def frontier(self, peer: str) -> int:
        return -1  # nobody has claimed anything


def _runner(me: str, view: FakePeers | None, task: Any, fit: Any, defer_s: float = 60.0) -> Any:
    from meshd.roles.runner import Runner, RunnerOptions

    node = _claim_node(me, view)
    node.queue = OneTask(task)
    r = Runner(node, None, RunnerOptions(defer_s=defer_s))
    r.claimer._accept_cache[task] = fit  # the task's body was read
    return r


def test_the_runner_claims_as_the_planner_ranks_the_live_runners() -> None:
    from lattice.planner import Fit

    task = codec.cid_of({"task": "ports"})
    runners = ["r0", "r1", "r2"]
    top, second, _ = rendezvous_rank(task, runners)
    peers = FakePeers({"runner": runners})

    assert _runner(top, peers, task, Fit(True))._next(0, 1) == [task]
    backup = _runner(second, peers, task, Fit(True))
    assert backup._next(0, 1) == [] and task in backup.planner.first_seen  # another's share: waits defer_s
    peers.live["runner"] = [second]  # the preferred runner died: nobody left to defer to
    assert backup._next(0, 1) == [task]
    assert _runner(second, None, task, Fit(True))._next(0, 1) == [task]  # no mesh: claim at once
    assert _runner(second, peers, task, Fit(False))._next(0, 1) == []  # cannot run it here


def test_a_runner_steals_another_share_once_its_deferral_has_passed() -> None:
    from lattice.planner import Fit

    task = codec.cid_of({"task": "steal"})
    top, second = rendezvous_rank(task, ["r0", "r1"])
    backup = _runner(second, FakePeers({"runner": [top, second]}), task, Fit(True), defer_s=0.0001)
    assert backup._next(0, 1) == []  # first sight: the deferral starts
    backup.planner.observe([(top, 1, None)], 1)  # the owner is heard working since
    deadline = time.monotonic() + 5
    while backup._next(0, 1) != [task]:
        assert time.monotonic() < deadline


def test_an_idle_runner_heard_from_keeps_its_share() -> None:
    """A runner that announces idle slots claims its share itself: others do
    not steal from it (their view may only be ahead of its own), but they do
    from a busy one, or a silent one."""
    from lattice.planner import Fit

    task = codec.cid_of({"task": "idle-owner"})
    top, second = rendezvous_rank(task, ["r0", "r1"])

    class Announced(FakePeers):
        def __init__(self, free: int, fresh: bool) -> None:
            super().__init__({"runner": [top, second]})
            self.free, self.is_fresh = free, fresh

        def live_inventories(self, role: str, within_s: float | None = None) -> dict[str, dict[str, Any]]:
            peers = {p: {"slots": 1, "platform": "linux-x86_64", "free": self.free} for p in (top, second)}
            return peers if within_s is None or within_s > 10 or self.is_fresh else {second: peers[second]}

    for free, fresh, stolen in ((1, True, False), (0, True, True), (1, False, True)):
        backup = _runner(second, Announced(free, fresh), task, Fit(True), defer_s=0.0001)
        assert backup._next(0, 1) == []  # first sight: the deferral starts
        backup.planner.observe([(top, 1, None)], 1)  # the owner is heard working since
        time.sleep(0.01)
        assert (backup._next(0, 1) == [task]) is stolen, (free, fresh)


def test_a_runner_that_cannot_run_the_engine_is_no_candidate() -> None:
    """A runner whose platform the engine has no build for never ranks first:
    the task goes to one that can, at once."""
    from lattice.planner import Fit

    task = codec.cid_of({"task": "platforms"})
    top, second = rendezvous_rank(task, ["r0", "r1"])

    class Mixed(FakePeers):
        def live_inventories(self, role: str, within_s: float | None = None) -> dict[str, dict[str, Any]]:
            return {top: {"slots": 1, "platform": "linux-aarch64"}, second: {"slots": 1, "platform": "linux-x86_64"}}

    r = _runner(second, Mixed({"runner": [top, second]}), task, Fit(True, (), frozenset({"linux-x86_64"})))
    assert r._next(0, 1) == [task]


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
    from meshd.p2p.mesh import Mesh
    from meshd.roles.ports import (
        Counts,
        Datasets,
        PeerView,
        QueuePort,
        TaskSource,
        TrustPort,
    )

    node = make_node(tmp_path, seed=b"\x55" * 32, mesh="ports-mesh", roles=("runner",), io_in_threads=True)
    for port in (QueuePort, TaskSource, Datasets, TrustPort, Counts):
        assert isinstance(node, port), port.__name__
    for name in ("results_obj", "verdicts_obj", "inventory", "mesh", "store"):
        assert hasattr(node, name), name  # the rest of RunnerNode / VerifierNode
    for name in ("engine_of", "spot_checked", "base", "results_of", "options"):
        assert hasattr(node.policy, name), name
    assert all(callable(getattr(Mesh, m, None)) for m in ("live_peers", "any_presence"))
    assert not isinstance(object(), PeerView)


# ----------------------------------------------------------------- the archivist and the evaluator


class Through:
    """Only the members ``port`` declares of ``target``: a role that reaches for more fails here.

    ``nested`` narrows attributes the same way (e.g. ``objects`` to the role's
    view of the object host).
    """

    def __init__(self, target: Any, port: type, **nested: Any) -> None:
        import typing

        self._target = target
        self._names = set(typing._get_protocol_attrs(port))  # type: ignore[attr-defined]
        self._nested = nested

    def __getattr__(self, name: str) -> Any:
        if name in self._nested:
            return self._nested[name]
        if name not in self._names:
            raise AttributeError(f"{name!r} is not part of the port")
        return getattr(self._target, name)


def _node(tmp_path: Path, *, io_in_threads: bool = True) -> Any:
    return make_node(tmp_path, seed=b"\x56" * 32, mesh="ports-mesh", io_in_threads=io_in_threads)


def test_the_node_satisfies_the_archivist_and_evaluator_ports(tmp_path: Path) -> None:
    from meshd.roles.archivist import ArchiveObjects, ArchivistNode
    from meshd.roles.evaluator import EvaluatorNode, EvaluatorObjects
    from meshd.roles.jobs import JobObjects, JobsNode
    from meshd.roles.verify import PolicyNode

    node = _node(tmp_path)
    for port in (ArchivistNode, EvaluatorNode, JobsNode, PolicyNode):
        assert isinstance(node, port), port.__name__
    for port in (ArchiveObjects, EvaluatorObjects, JobObjects):
        assert isinstance(node.objects, port), port.__name__
    assert isinstance(node.policy.node, PolicyNode)
    assert not isinstance(SimpleNamespace(store=None, objects=None), ArchivistNode)


async def test_the_evaluator_fires_a_job_through_its_port_only(tmp_path: Path, autojump_clock: Any) -> None:
    import trio

    from meshd.roles import jobs
    from meshd.roles.evaluator import Evaluator, EvaluatorNode, EvaluatorObjects
    from tests.test_evaluator_dedupes import fib_split

    node = _node(tmp_path, io_in_threads=False)  # virtual time: no worker threads
    submitter = Through(node, jobs.JobsNode, objects=Through(node.objects, jobs.JobObjects))
    evaluator = Evaluator(Through(node, EvaluatorNode, objects=Through(node.objects, EvaluatorObjects)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        await nursery.start(evaluator.serve)
        job = node.objects.get(await submit_fibsum(submitter))
        await node.objects.commit(job, [dataset.set_op("split/results", fib_split(200, 8))])
        with trio.fail_after(60):
            while len(node.queue) < 1 + 8:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(node.queue) == 1 + 8  # the split task, then the eight maps it fired
    assert evaluator.statistics().errors == 0


async def test_the_archivist_pins_through_its_port_only(tmp_path: Path) -> None:
    import trio

    from lattice import queue
    from meshd.roles.archivist import ArchiveObjects, Archivist, ArchivistNode, ArchivistOptions

    node = _node(tmp_path)
    config = SimpleNamespace(ipfs=SimpleNamespace(api=None), node=SimpleNamespace(mesh="ports-mesh"))
    archivist = Archivist(Through(node, ArchivistNode, objects=Through(node.objects, ArchiveObjects)),
                          SimpleNamespace(path=tmp_path), config, ArchivistOptions(interval_s=0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.objects.serve)
        await nursery.start(archivist.serve)
        await node.objects.commit(node.queue_obj, queue.enqueue_ops([codec.cid_of({"archived": 1})]))
        with trio.fail_after(20):
            while archivist.statistics().versions < 1 or archivist.statistics().pending_objects:
                await trio.sleep(0.05)
        assert archivist.index is not None and archivist.index.current(node.queue_obj.genesis) is not None
        nursery.cancel_scope.cancel()
