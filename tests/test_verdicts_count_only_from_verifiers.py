"""Verdicts count only from the mesh's verifiers, and only about results that exist.

The verifier model (docs/security.md, "The Verifier"; BOINC's validator is the
anchor): a verdict counts only when its signer is one of the mesh's verifier
keys (``[verify] keys``).  Where none are configured, each node counts only
its own verdicts: it compares replicas itself and ignores everyone else's.
Even a verifier's verdict counts for a runner only when that runner's result
for the task is in the results object, so verdicts about made-up tasks never
ban anyone (and never make anyone trusted).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lattice import codec, goho, records, results, signing
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.trust import TrustOptions, TrustView, verdict_op, verdict_record

HONEST = signing.Signer.from_seed(b"\x11" * 32)
ATTACKER = signing.Signer.from_seed(b"\x12" * 32)
VERIFIER = signing.Signer.from_seed(b"\x13" * 32)
HONEST_ID = signing.peer_id_of(HONEST.public)
ATTACKER_ID = signing.peer_id_of(ATTACKER.public)
VERIFIER_ID = signing.peer_id_of(VERIFIER.public)
ENGINE = codec.cid_of({"engine": "echo"})


def _replica(name: str) -> goho.Replica:
    return goho.Replica.empty(records.make_genesis("dataset", name)[0], MemoryBlockStore())


def _task(i: int) -> CID:
    return codec.cid_of({"task": i})


def _verdicts(signer: signing.Signer, tasks: list[CID], valid: list[str], invalid: list[str]) -> list[list]:
    by = signing.peer_id_of(signer.public)
    return [verdict_op(verdict_record(signer, t, ENGINE, codec.cid_of({"out": 1}), valid, invalid, by, 10 + i))
            for i, t in enumerate(tasks)]


def _result(runner: signing.Signer, task: CID, i: int) -> list:
    rec = results.result_record(runner, task, codec.cid_of({"out": i}), signing.peer_id_of(runner.public), 5 + i)
    return results.result_op(rec)


def _views(verifiers: frozenset[str]) -> tuple[goho.Replica, goho.Replica, TrustView]:
    verdicts, res = _replica("verdicts"), _replica("results")
    view = TrustView(verdicts, TrustOptions(ban_after=2, trust_after=5, verifiers=verifiers),
                     evidence=results.ResultsView(res))
    return verdicts, res, view


def test_verdicts_from_anyone_but_a_verifier_are_ignored() -> None:
    verdicts, res, view = _views(frozenset({VERIFIER_ID}))
    tasks = [_task(i) for i in range(5)]
    for t in tasks:  # both really ran them
        res.update([_result(HONEST, t, 0)], HONEST)
        res.update([_result(ATTACKER, t, 1)], ATTACKER)
    # Two forged verdicts against the honest runner, five vouching for the attacker.
    verdicts.update(_verdicts(ATTACKER, tasks[:2], [], [HONEST_ID]), ATTACKER)
    verdicts.update(_verdicts(ATTACKER, tasks, [ATTACKER_ID], []), ATTACKER)
    assert not view.banned(HONEST_ID)
    assert not view.trusted(ATTACKER_ID, ENGINE)
    assert view.banned_peers() == frozenset()
    assert view.verdict(tasks[0]) is None
    assert not view.judged(tasks[0], HONEST_ID)
    assert view.statistics().ignored == 7
    # The mesh's verifier is heard.
    verdicts.update(_verdicts(VERIFIER, tasks[:2], [HONEST_ID], [ATTACKER_ID]), VERIFIER)
    assert view.banned(ATTACKER_ID)
    assert not view.banned(HONEST_ID)


def test_a_verifiers_verdicts_about_made_up_tasks_ban_nobody() -> None:
    verdicts, res, view = _views(frozenset({VERIFIER_ID}))
    made_up = [_task(100 + i) for i in range(4)]
    verdicts.update(_verdicts(VERIFIER, made_up, [], [HONEST_ID]), VERIFIER)
    assert not view.banned(HONEST_ID)
    assert view.score(HONEST_ID, ENGINE).invalid == 0
    assert view.statistics().unfounded == 4
    # Once the runner's results for those tasks are in, the verdicts count.
    for t in made_up[:2]:
        res.update([_result(HONEST, t, 0)], HONEST)
    assert view.banned(HONEST_ID)


def test_with_no_verifier_keys_a_node_counts_only_its_own_verdicts(tmp_path: Path) -> None:
    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import CommitOptions, ObjectHost

    def node(seed: bytes, keys: tuple[str, ...]) -> Node:
        signer = signing.Signer.from_seed(seed)
        objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / f"{seed[0]}-heads.db"), signer,
                             CommitOptions(io_in_threads=False))
        config = SimpleNamespace(node=SimpleNamespace(mesh="m", labels=(), name="n", roles=("runner",)),
                                 verify=VerifyConfig(keys=keys))
        return Node(objects=objects, peer_id=signing.peer_id_of(signer.public), identity_seed=seed, config=config)

    alone = node(b"\x13" * 32, ())
    assert alone.trust.options.verifiers == frozenset({VERIFIER_ID})
    configured = node(b"\x14" * 32, (VERIFIER_ID, ATTACKER_ID))
    assert configured.trust.options.verifiers == frozenset({VERIFIER_ID, ATTACKER_ID})


def test_verifier_keys_must_be_peer_ids() -> None:
    from meshd.config import VerifyConfig
    from meshd.errors import ConfigError

    with pytest.raises(ConfigError):
        VerifyConfig(keys=("not-a-peer-id",))
    with pytest.raises(ConfigError):
        VerifyConfig(keys="12D3KooWsingle")  # type: ignore[arg-type]
    assert VerifyConfig(keys=[VERIFIER_ID]).keys == (VERIFIER_ID,)  # type: ignore[arg-type]


async def test_a_keyless_verifier_judges_for_itself_and_a_non_verifier_not_at_all(tmp_path: Path) -> None:
    from lattice import queue, task
    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.roles.verifier import Verifier
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import CommitOptions, ObjectHost

    def node(seed: bytes, keys: tuple[str, ...]) -> Node:
        signer = signing.Signer.from_seed(seed)
        objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / f"{seed[0]}-heads.db"), signer,
                             CommitOptions(io_in_threads=False))
        config = SimpleNamespace(node=SimpleNamespace(mesh="m", labels=(), name="n", roles=("verifier",)),
                                 verify=VerifyConfig(keys=keys))
        return Node(objects=objects, peer_id=signing.peer_id_of(signer.public), identity_seed=seed, config=config)

    async def replicated_task_with_results(n: Node) -> CID:
        """A task wanting 2 agreeing replicas, run by HONEST and VERIFIER (agreeing) and ATTACKER (not),
        and completed by some other verifier."""
        cid, data, _ = task.task_from_json_untrusted({
            "input": {"value": {"i": 1}},
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": str(ENGINE)}}},
            "verify": {"replicas": 2, "quorum": 2}})
        n.store.put(cid, data)
        good, bad = codec.encode_block({"i": 1}), codec.encode_block({"forged": 1})
        n.store.put_many([good, bad])
        recs = []
        for runner, out in ((HONEST, good[0]), (VERIFIER, good[0]), (ATTACKER, bad[0])):
            rec = results.result_record(runner, cid, out, signing.peer_id_of(runner.public), 5)
            n.results_obj.replica.update([results.result_op(rec)], runner)
            recs.append(rec)
        await n.objects.commit(n.queue_obj, [queue.replicate_op(cid, 2, 2), *queue.enqueue_ops([cid]),
                                             queue.complete_op(cid, "peer-other", 9, codec.cid_of(recs[0]))])
        return cid

    alone = node(b"\x15" * 32, ())
    verifier = Verifier(alone)
    verifier._results = alone.results_obj.replica.cursor()
    t = await replicated_task_with_results(alone)
    await verifier.check()
    verdict = alone.trust.verdict(t)
    assert verdict is not None and verdict["by"] == alone.peer_id
    assert verdict["invalid"] == [ATTACKER_ID] and sorted(verdict["valid"]) == sorted([HONEST_ID, VERIFIER_ID])
    assert alone.trust.score(ATTACKER_ID, ENGINE).invalid == 1

    outsider = node(b"\x16" * 32, (VERIFIER_ID,))
    verifier = Verifier(outsider)
    verifier._results = outsider.results_obj.replica.cursor()
    t = await replicated_task_with_results(outsider)
    await verifier.check()
    assert outsider.trust.verdict(t) is None
    assert outsider.verdicts_obj.replica.statistics().applied == 0
    assert verifier.stats["not_a_verifier"] == 1
