"""Every ``_untrusted`` decoder in lattice rejects garbage with ``BadInput``.

The corpus below holds hand-made hostile inputs (truncations, non-canonical
forms, wrong tags, forged signatures).  Each decoder must *reject* each of
them (``pytest.raises(BadInput)``), except the few pairs in ``VALID``, which
are valid encodings for that decoder and are asserted to decode.  Hypothesis
adds random bytes and random mutations of valid messages, where all that can
be asserted is that nothing but ``BadInput`` escapes.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec, hpcp, records, signing, task
from lattice.cid import CID, DAG_CBOR
from lattice.errors import BadInput

SIGNER = signing.Signer.from_seed(b"\x07" * 32)
GENESIS = records.make_genesis("queue", "corpus")[0]
DELTA_CID, DELTA = records.sign_delta(SIGNER, GENESIS, [], 1, [["add", "available", 1]])
ANNOUNCE = hpcp.encode_announce(SIGNER, GENESIS, [DELTA_CID], 5)


def _forged_delta() -> tuple[CID, bytes]:
    obj = codec.decode_untrusted(DELTA)
    obj["ops"] = [["add", "available", 2]]  # signature no longer matches
    return codec.encode_block(obj)


def _forged_announce() -> bytes:
    obj = codec.decode_untrusted(ANNOUNCE)
    obj["seq"] = 6
    return codec.encode(obj)


#: Hostile inputs; the generic CBOR shapes match ``_cbor_seeds`` in
#: ``fuzz/decoder_targets.py`` (the fuzz corpus seeds).
CORPUS_BYTES = [
    b"",
    b"\xff",
    b"\x00" * 100,
    DELTA[:-1],
    DELTA + b"\x00",
    cbor2.dumps({"b": 1, "a": 2}),  # unsorted keys
    cbor2.dumps(1.5, canonical=True),  # float16
    b"\x9f\x01\xff",  # indefinite array
    b"\x18\x05",  # non-minimal int
    cbor2.dumps(cbor2.CBORTag(42, b"\x01" + DELTA_CID.raw)),  # link without 0x00 prefix
    cbor2.dumps(cbor2.CBORTag(42, b"\x00" + b"\x01\x78" + DELTA_CID.raw[2:])),  # git-raw codec (unsupported)
    cbor2.dumps(cbor2.CBORTag(1, 0)),  # datetime tag
    cbor2.dumps(float("nan")),
    b"\x81" * 200 + b"\x00",  # too deep
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # byte string claiming 2**64-1 bytes
    codec.encode({"t": "hpcp/announce", "v": 2}),
    codec.encode({"t": "hpcp/want", "v": 1, "cids": ["notalink"]}),
    codec.encode({"t": "hpcp/blocks", "v": 1, "blocks": [[1, b""]], "missing": []}),
    codec.encode({"t": "goho/delta", "v": 1}),
    _forged_announce(),
]


def _decoders():
    fc, fd = _forged_delta()
    yield "decode_untrusted", lambda b: codec.decode_untrusted(b)
    yield "from_bytes_untrusted", lambda b: CID.from_bytes_untrusted(b)
    yield "parse_untrusted", lambda b: CID.parse_untrusted(b.decode("latin-1"))
    yield "delta_from_untrusted", lambda b: records.delta_from_untrusted(CID.for_block(DAG_CBOR, b), b)
    yield "delta_wrong_cid", lambda b: records.delta_from_untrusted(DELTA_CID, b)
    yield "snapshot_from_untrusted", lambda b: records.snapshot_from_untrusted(CID.for_block(DAG_CBOR, b), b)
    yield "part_from_untrusted", lambda b: records.part_from_untrusted(CID.for_block(DAG_CBOR, b), b)
    yield "record_type_untrusted", lambda b: records.record_type_untrusted(b)
    yield "decode_message_untrusted", lambda b: hpcp.decode_message_untrusted(b)
    yield "peek_genesis_untrusted", lambda b: hpcp.peek_genesis_untrusted(b)
    yield "task_from_json_untrusted", lambda b: task.task_from_json_untrusted(_maybe_json(b))
    yield "forged_delta", lambda b: records.delta_from_untrusted(fc, fd)


def _maybe_json(b: bytes):
    try:
        return codec.to_json(codec.decode_untrusted(b))
    except BadInput:
        return {"input": b.decode("latin-1")}


DECODERS = dict(_decoders())


#: (decoder, corpus index) pairs where the corpus entry is a valid encoding
#: for that decoder, with why.  Every other pair must be rejected.
VALID = {
    # The codec checks the encoding only (canonical DAG-CBOR), not what a
    # map means: these are canonical maps that the message and record
    # decoders above the codec reject.
    ("decode_untrusted", 15): "canonical map (an HPCP announce of an unknown version)",
    ("decode_untrusted", 16): "canonical map (an HPCP want whose cids are not links)",
    ("decode_untrusted", 17): "canonical map (HPCP blocks with a bad entry)",
    ("decode_untrusted", 18): "canonical map (a goho/delta without fields)",
    ("decode_untrusted", 19): "canonical map (an announce whose signature does not match)",
    # record_type_untrusted reads a GOHO record's tag and version to route
    # it; the record's own decoder then rejects the missing fields.
    ("record_type_untrusted", 18): "a goho/delta v1 tag",
    # peek_genesis_untrusted routes a message by the object it names without
    # the signature check; the syncer verifies the announcement before acting
    # on it (decode_message_untrusted rejects this entry).
    ("peek_genesis_untrusted", 19): "an announce's routing key, read before its signature is checked",
}

GARBAGE_CASES = [(name, i) for name in sorted(DECODERS) for i in range(len(CORPUS_BYTES)) if (name, i) not in VALID]


def test_the_valid_list_names_real_decoders_and_entries() -> None:
    assert all(name in DECODERS and 0 <= i < len(CORPUS_BYTES) for name, i in VALID)
    assert len(GARBAGE_CASES) + len(VALID) == len(DECODERS) * len(CORPUS_BYTES)


@pytest.mark.parametrize(("name", "index"), GARBAGE_CASES)
def test_corpus_input_is_rejected(name: str, index: int) -> None:
    with pytest.raises(BadInput):
        DECODERS[name](CORPUS_BYTES[index])


@pytest.mark.parametrize(("name", "index"), sorted(VALID))
def test_valid_corpus_entries_decode(name: str, index: int) -> None:
    """Kept honest: if a decoder starts rejecting one of these, move it back."""
    DECODERS[name](CORPUS_BYTES[index])


def test_record_type_routes_only_goho_records() -> None:
    assert records.record_type_untrusted(DELTA) == "goho/delta"
    assert records.record_type_untrusted(records.make_genesis("queue", "x")[1]) == "goho/genesis"
    for message in (ANNOUNCE, codec.encode({"t": "meshd/result", "v": 1}), codec.encode({"t": "goho/delta", "v": 3})):
        with pytest.raises(BadInput):
            records.record_type_untrusted(message)


def test_forgeries_are_rejected() -> None:
    with pytest.raises(BadInput):
        DECODERS["forged_delta"](b"")
    with pytest.raises(BadInput):
        hpcp.decode_message_untrusted(_forged_announce())
    with pytest.raises(BadInput):
        records.delta_from_untrusted(DELTA_CID, DELTA + b"x")


def test_valid_inputs_still_decode() -> None:
    assert records.delta_from_untrusted(DELTA_CID, DELTA).ops == [["add", "available", 1]]
    assert hpcp.decode_message_untrusted(ANNOUNCE)["seq"] == 5


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(DECODERS)))
def test_random_bytes_raise_only_bad_input(data: bytes, name: str) -> None:
    try:
        DECODERS[name](data)
    except BadInput:
        pass


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(ANNOUNCE) - 1), st.integers(0, 255), st.sampled_from([ANNOUNCE, DELTA]))
def test_mutated_valid_messages_raise_only_bad_input(pos: int, byte: int, base: bytes) -> None:
    data = bytearray(base)
    data[pos % len(data)] = byte
    for name in ("decode_message_untrusted", "delta_wrong_cid", "decode_untrusted"):
        try:
            DECODERS[name](bytes(data))
        except BadInput:
            pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats(),
                    lambda k: st.lists(k, max_size=3) | st.dictionaries(st.sampled_from(["input", "taskDefinition", "result", "value", "/", "runner", "type", "dataset", "path"]), k, max_size=4),
                    max_leaves=15))
def test_random_task_json_raises_only_bad_input(obj) -> None:
    try:
        task.task_from_json_untrusted(obj)
    except BadInput:
        pass
