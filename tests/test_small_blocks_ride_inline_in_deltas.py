"""Small linked blocks (task bodies, result records, outputs) travel inline in
the delta that links them (a v2 delta), so a peer that fetches the delta
fetches nothing more per task; a delta that lies about them is refused."""

from __future__ import annotations

import pytest
import trio

from lattice import codec, goho, queue, records, signing, unixfs
from lattice.blockstore import MemoryBlockStore
from lattice.cid import RAW, CID
from lattice.errors import BadInput, BadRecord, BadSignature, BlockNotFound

GENESIS = records.make_genesis("queue", "inline")[0]
SIGNER = signing.Signer.from_seed(b"\x07" * 32)


def _bodies(n: int, size: int = 40) -> list[tuple[CID, bytes]]:
    return [codec.encode_block({"input": {"value": i}, "pad": "x" * size}) for i in range(n)]


def _replica() -> goho.Replica:
    return goho.Replica.empty(GENESIS, MemoryBlockStore())


def test_a_peer_gets_the_bodies_with_the_delta() -> None:
    bodies = _bodies(50)
    a, b = _replica(), _replica()
    cid, data = a.update(queue.enqueue_ops([c for c, _ in bodies]), SIGNER, bodies)
    obj = codec.decode_trusted(data)
    assert obj["v"] == 2 and len(obj["b"]) == 50
    b.receive_untrusted(cid, data)
    for c, body in bodies:
        assert b.store.get(c) == body  # nothing left to fetch
    assert set(b.state.members("available")) == set(a.state.members("available")) and len(set(a.state.members("available"))) == 50


def test_a_delta_without_blocks_stays_v1() -> None:
    a = _replica()
    _, data = a.update([["add", "available", 1]], SIGNER)
    obj = codec.decode_trusted(data)
    assert obj["v"] == 1 and "b" not in obj


def test_blocks_linked_from_record_fields_and_leftovers_ride_along() -> None:
    out_cid, out = codec.encode_block({"answer": 42})
    rec = {"task": out_cid, "output": out_cid, "runner": "r"}
    rec_cid, rec_data = codec.encode_block(rec)
    left = {out_cid: out, rec_cid: rec_data}
    first = records.choose_inline([["add", "k", rec]], left)
    assert first == [out] and list(left) == [rec_cid]  # linked from a field of the op's value
    assert records.choose_inline([["add", "k", 1]], left, rest=True) == [rec_data] and not left


def test_only_dag_cbor_blocks_ride_inline() -> None:
    # A receiver names inline blocks by their DAG-CBOR CID: a raw block (a
    # small checkpoint state) or a dag-pb node (a UnixFS file) is fetched instead.
    raw = (CID.for_block(RAW, b"state"), b"state")
    pb_cid, pb = unixfs.encode_file(b"0123456789", chunk_size=4)[1][-1]
    rec_cid, rec_data = codec.encode_block({"state": raw[0], "file": pb_cid})
    left = {raw[0]: raw[1], pb_cid: pb, rec_cid: rec_data}
    assert records.choose_inline([["add", "k", {"state": raw[0], "file": pb_cid}]], left, rest=True) == [rec_data]
    assert set(left) == {raw[0], pb_cid}


def test_blocks_over_the_limits_are_left_to_be_fetched() -> None:
    big = codec.encode_block({"pad": "y" * (records.MAX_INLINE_BLOCK + 1)})
    small = _bodies(1)[0]
    left = dict([big, small])
    assert records.choose_inline([["add", "available", big[0]], ["add", "available", small[0]]], left) == [small[1]]
    assert list(left) == [big[0]]
    many = dict(_bodies(200, size=8000))  # about 1.6 MB in all
    taken = records.choose_inline([["add", "available", c] for c in many], many)
    assert sum(map(len, taken)) <= records.MAX_INLINE_BYTES and many  # the rest is fetched as in v1


def _signed(body: dict) -> tuple[CID, bytes]:
    body = dict(body, a=SIGNER.public)
    body["s"] = SIGNER.sign(codec.encode(body))
    return codec.encode_block(body)


def _v2(blocks: list) -> dict:
    return {"t": "goho/delta", "v": 2, "g": GENESIS, "p": [], "h": 1, "ops": [["add", "available", 1]], "b": blocks}


@pytest.mark.parametrize("blocks, why", [
    ([], "non-empty"),
    (["text"], "bytes"),
    ([b"\xa0" * (records.MAX_INLINE_BLOCK + 1)], "bytes"),
    ([b"\xa0" * records.MAX_INLINE_BLOCK] * (records.MAX_INLINE_BYTES // records.MAX_INLINE_BLOCK + 1), "exceed"),
])
def test_bad_inline_blocks_are_refused(blocks: list, why: str) -> None:
    cid, data = _signed(_v2(blocks))
    with pytest.raises(BadRecord, match=why):
        records.delta_from_untrusted(cid, data)
    rep = _replica()
    with pytest.raises(BadInput):
        rep.receive_untrusted(cid, data)
    assert list(rep.store.cids()) == []  # nothing stored


def test_an_inline_block_swapped_after_signing_is_refused() -> None:
    _, body = _bodies(1)[0]
    cid, data = _signed(_v2([body]))
    obj = codec.decode_trusted(data)
    obj["b"] = [codec.encode({"input": {"value": "forged"}})]
    forged_cid, forged = codec.encode_block(obj)
    rep = _replica()
    with pytest.raises(BadSignature):
        rep.receive_untrusted(forged_cid, forged)
    with pytest.raises(BlockNotFound):
        rep.store.get(CID.for_block(0x71, obj["b"][0]))


def test_a_v1_field_set_under_v2_is_refused() -> None:
    body = _v2([b"\xa0"])
    del body["b"]
    cid, data = _signed(body)
    with pytest.raises(BadRecord):
        records.delta_from_untrusted(cid, data)


async def test_a_commit_carries_its_linked_blocks_inline(tmp_path) -> None:
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import ObjectHost

    store = MemoryBlockStore()
    host = ObjectHost(store, HeadsStore.open(tmp_path / "heads.db"), SIGNER)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        obj = host.follow("queue", "q")
        bodies = _bodies(20)
        await host.commit(obj, queue.enqueue_ops([c for c, _ in bodies]), bodies)
        (head,) = obj.replica.heads
        delta = records.delta_from_untrusted(head, store.get(head))
        assert sorted(delta.inline) == sorted(b for _, b in bodies)
        nursery.cancel_scope.cancel()
