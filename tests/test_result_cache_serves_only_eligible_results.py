"""The result cache: the (engine, input) index and which indexed result may complete a task.

Pure rules of :mod:`lattice.resultcache` over a real results view and a
small in-memory :class:`~lattice.resultcache.CacheSources` (plain state,
no daemon): deterministic engines only (the manifest field), the
verification level, the opt-out, replicas never, and pairs that are
checked rather than believed.
"""

from __future__ import annotations

from typing import Any

import pytest

from engines.errors import BadManifest
from engines.manifest import (DockerImage, DockerManifest, NativeManifest, PlatformBuild, encode_manifest,
                              manifest_from_untrusted)
from lattice import codec, goho, records, results, resultcache, signing
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.errors import BadRecord
from lattice.task import normalize_task_untrusted

RUNNERS = [signing.Signer.from_seed(bytes([0x50 + i]) * 32) for i in range(4)]
IDS = [signing.peer_id_of(s.public) for s in RUNNERS]
ENGINE = codec.cid_of({"engine": "fib"})
OTHER_ENGINE = codec.cid_of({"engine": "other"})
INPUT = resultcache.input_cid({"n": 10})


def _task(i: int) -> CID:
    return codec.cid_of({"task": i})


OUT = codec.cid_of({"out": 55})


class _State:
    """The state :func:`lattice.resultcache.choose` reads, held as plain data."""

    def __init__(self) -> None:
        self.completions: dict[CID, list[CID]] = {}
        self.verdicts: dict[CID, dict[str, Any]] = {}
        self.bans: set[str] = set()
        self.pairs: dict[CID, tuple[CID, CID]] = {}

    def completion_results(self, task: CID) -> list[CID]:
        return self.completions.get(task, [])

    def verdict(self, task: CID) -> dict[str, Any] | None:
        return self.verdicts.get(task)

    def banned(self, peer: str) -> bool:
        return peer in self.bans

    def pair_of(self, task: CID) -> tuple[CID, CID] | None:
        return self.pairs.get(task)


def _view() -> tuple[goho.Replica, results.ResultsView]:
    rep = goho.Replica.empty(records.make_genesis("results", "cache")[0], MemoryBlockStore())
    return rep, results.ResultsView(rep)


def _record(rep: goho.Replica, who: int, task: CID, at: int, *, engine: CID = ENGINE, inp: CID = INPUT,
            output: CID = OUT) -> tuple[dict[str, Any], CID]:
    """Runner ``who`` records its result for ``task`` in its own delta, with the pair fields."""
    signer = RUNNERS[who]
    rec = results.result_record(signer, task, output, IDS[who], at, engine=engine, **{"in": inp})
    parents, height = rep.tip()
    cid, data = records.sign_delta(signer, rep.genesis, parents, height, [results.result_op(rec)])
    assert rep.receive_untrusted(cid, data).applied
    return rec, codec.encode_block(rec)[0]


def test_results_are_indexed_by_engine_and_input() -> None:
    rep, view = _view()
    _record(rep, 0, _task(1), 100)
    _record(rep, 1, _task(2), 90)
    _record(rep, 2, _task(3), 80, engine=OTHER_ENGINE)
    _record(rep, 3, _task(4), 70, inp=resultcache.input_cid({"n": 11}))
    found = view.by_input(ENGINE, INPUT)
    assert [r["task"] for r in found] == [_task(2), _task(1)]  # oldest first
    assert view.by_input(ENGINE, resultcache.input_cid({"n": 12})) == []


def test_input_cid_names_value_and_metadata() -> None:
    assert resultcache.input_cid({"n": 10}) == INPUT
    assert resultcache.input_cid({"n": 10}, {"mode": "x"}) != INPUT
    assert resultcache.input_cid({"n": 10}, {}) == INPUT  # no metadata and empty metadata reach engines alike


def test_an_accepted_result_serves_a_plain_task() -> None:
    rep, view = _view()
    rec, rcid = _record(rep, 0, _task(1), 100)
    state = _State()
    cands = view.by_input(ENGINE, INPUT)
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, cands, state) is None  # recorded, not completed
    state.completions[_task(1)] = [rcid]
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, cands, state) == (rec, rcid)
    state.bans.add(IDS[0])
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, cands, state) is None


def test_a_verified_task_needs_a_verdict_that_met_its_quorum() -> None:
    rep, view = _view()
    src = _task(1)
    recs = [_record(rep, i, src, 100 + i) for i in range(3)]
    state = _State()
    state.pairs[src] = (ENGINE, INPUT)
    state.completions[src] = [recs[0][1]]  # the verifier completed it with runner 0's result
    cands = view.by_input(ENGINE, INPUT)
    assert resultcache.choose(_task(9), 2, ENGINE, INPUT, cands, state) is None  # completed, never verified
    state.verdicts[src] = {"task": src, "output": OUT, "valid": sorted(IDS[:2]), "invalid": []}
    assert resultcache.choose(_task(9), 2, ENGINE, INPUT, cands, state) == recs[0]
    assert resultcache.choose(_task(9), 3, ENGINE, INPUT, cands, state) is None  # 2 agreed, 3 wanted
    # A plain task may use the verified result too.
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, cands, state) == recs[0]


def test_a_task_is_never_served_its_own_replicas() -> None:
    rep, view = _view()
    task = _task(1)
    recs = [_record(rep, i, task, 100 + i) for i in range(2)]
    state = _State()
    state.completions[task] = [recs[0][1]]
    state.verdicts[task] = {"task": task, "output": OUT, "valid": sorted(IDS[:2]), "invalid": []}
    assert resultcache.choose(task, 1, ENGINE, INPUT, view.by_input(ENGINE, INPUT), state) is None


def test_a_pair_is_checked_against_the_source_task() -> None:
    rep, view = _view()
    src = _task(1)
    rec, rcid = _record(rep, 0, src, 100)
    state = _State()
    state.completions[src] = [rcid]
    state.pairs[src] = (ENGINE, resultcache.input_cid({"n": 99}))  # its body says it ran another input
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, view.by_input(ENGINE, INPUT), state) is None
    state.pairs[src] = (ENGINE, INPUT)
    assert resultcache.choose(_task(9), 0, ENGINE, INPUT, view.by_input(ENGINE, INPUT), state) == (rec, rcid)


def test_a_dataset_input_pair_needs_quorum_labels_for_a_verified_task() -> None:
    """With no inline input to recompute, one lying replica cannot label an agreed output."""
    rep, view = _view()
    src = _task(1)
    liar = _record(rep, 0, src, 100)  # says INPUT; the other replica said nothing (another input)
    _record(rep, 1, src, 101, inp=resultcache.input_cid({"n": 7}))
    state = _State()
    state.verdicts[src] = {"task": src, "output": OUT, "valid": sorted(IDS[:2]), "invalid": []}
    assert resultcache.choose(_task(9), 2, ENGINE, INPUT, view.by_input(ENGINE, INPUT), state) is None
    _record(rep, 1, src, 102)  # now both verified runners name the pair
    assert resultcache.choose(_task(9), 2, ENGINE, INPUT, view.by_input(ENGINE, INPUT), state) == liar


def test_wanted_level_reads_opt_out_and_quorum() -> None:
    base = {"input": {"value": 1}, "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": ENGINE}}}
    assert resultcache.wanted_level(normalize_task_untrusted(base)) == 0
    assert resultcache.wanted_level(normalize_task_untrusted({**base, "verify": {"replicas": 3, "quorum": 2}})) == 2
    off = normalize_task_untrusted({**base, "cache": False})
    assert resultcache.wanted_level(off) is None
    # true is the default and is not kept: the same task, the same CID.
    assert normalize_task_untrusted({**base, "cache": True}) == normalize_task_untrusted(base)
    with pytest.raises(BadRecord):
        normalize_task_untrusted({**base, "cache": "no"})


def _native(**kw: Any) -> NativeManifest:
    return NativeManifest(name="fib", platforms={"linux-x86_64": PlatformBuild(codec.cid_of({"f": 1}), "fib", "exe")},
                          **kw)


def test_manifests_declare_determinism_compatibly() -> None:
    plain, det = _native(), _native(deterministic=True)
    plain_cid, plain_data = encode_manifest(plain)
    assert "deterministic" not in codec.decode_untrusted(plain_data)  # the record of before: the same engine CID
    assert manifest_from_untrusted(plain_data).deterministic is False
    det_cid, det_data = encode_manifest(det)
    assert det_cid != plain_cid and manifest_from_untrusted(det_data).deterministic is True
    docker = DockerManifest(name="d", image=DockerImage(codec.cid_of({"i": 1}), "sha256:" + "0" * 64),
                            deterministic=True)
    assert manifest_from_untrusted(encode_manifest(docker)[1]).deterministic is True
    rec = codec.decode_untrusted(plain_data)
    for bad in (False, 1, "yes"):
        with pytest.raises(BadManifest):
            manifest_from_untrusted(codec.encode({**rec, "deterministic": bad}))
