"""The fast DAG-CBOR path is byte-for-byte the reference encoding.

``tests/vectors/dagcbor.json`` was written by the ``dag-cbor`` and
``multiformats`` packages (``python -m tests._vectors``); it is committed so a
change in either side shows up as a diff.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice import codec
from lattice.cid import CID, DAG_CBOR, DAG_PB, RAW

from ._vectors import VALUES, _reference_encode

VECTORS = json.loads((pathlib.Path(__file__).with_name("vectors") / "dagcbor.json").read_text())


@pytest.mark.parametrize("name", sorted(VALUES))
def test_encoding_matches_committed_vector(name: str) -> None:
    data = codec.encode(VALUES[name])
    assert data.hex() == VECTORS[name]["hex"]
    assert str(codec.cid_of(VALUES[name])) == VECTORS[name]["cid"]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_committed_vector_matches_reference_package(name: str) -> None:
    assert _reference_encode(VALUES[name]).hex() == VECTORS[name]["hex"]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_vectors_decode_strictly_to_the_same_value(name: str) -> None:
    assert codec.decode_untrusted(bytes.fromhex(VECTORS[name]["hex"])) == VALUES[name]


def test_base58btc_and_base32_name_the_same_cid() -> None:
    import multiformats

    cid = codec.cid_of({"a": 1})
    z = cid.encode("base58btc")
    assert z.startswith("z")
    assert CID.parse_untrusted(z) == cid
    assert multiformats.CID.decode(z).encode("base32") == str(cid)
    assert str(cid).startswith("bafy")


def test_every_codec_names_cids_as_the_reference_package_does() -> None:
    import hashlib

    import multiformats

    for codec_id, name in ((DAG_CBOR, "dag-cbor"), (RAW, "raw"), (DAG_PB, "dag-pb")):
        cid = CID.for_block(codec_id, b"block")
        digest = multiformats.multihash.wrap(hashlib.sha256(b"block").digest(), "sha2-256")
        ref = multiformats.CID("base32", 1, name, digest)
        assert str(cid) == str(ref) and CID.parse_untrusted(str(ref)) == cid
        assert CID.from_bytes_untrusted(bytes(ref)) == cid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_values_match_reference_and_round_trip(value) -> None:
    data = codec.encode(value)
    assert data == _reference_encode(value)
    assert codec.decode_untrusted(data) == value
