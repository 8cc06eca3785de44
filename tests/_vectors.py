"""The values behind tests/vectors/dagcbor.json (regenerate: python -m tests._vectors)."""

from __future__ import annotations

from lattice.cid import CID, DAG_CBOR, RAW

LINK_A = CID.for_block(DAG_CBOR, b"\xa1aa\x01")
LINK_RAW = CID.for_block(RAW, b"hello")

VALUES = {
    "empty_map": {},
    "small_task": {"t": "meshd/task", "v": 1, "input": {"value": 42}},
    "floats": {"half": 0.5, "third": 1 / 3, "neg": -2.5, "big": 1e300, "tiny": 5e-324, "whole": 3.0},
    "ints": [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -24, -25, -(2**63)],
    "nested_links": {"a": LINK_A, "list": [LINK_A, {"raw": LINK_RAW}], "deep": {"x": {"y": [LINK_RAW]}}},
    "bytes": {"b0": b"", "b1": b"\x00\xff", "b2": bytes(range(40))},
    "unicode_key_order": {"é": 1, "z": 2, "aa": 3, "b": 4, "日本": 5, "ä": 6, "\U0001F600": 7},
    "strings": ["", "a", "é", "日本語", "\U0001F600", "x" * 30],
    "mixed": [None, True, False, 1.5, "s", b"b", [], {}],
}


def _reference_encode(value):
    import dag_cbor
    import multiformats

    def conv(o):
        if isinstance(o, CID):
            return multiformats.CID.decode(o.raw)
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    return dag_cbor.encode(conv(value))


if __name__ == "__main__":
    import json
    import pathlib

    import multiformats

    out = {}
    for name, value in VALUES.items():
        data = _reference_encode(value)
        cid = multiformats.CID("base32", 1, "dag-cbor", multiformats.multihash.digest(data, "sha2-256"))
        out[name] = {"hex": data.hex(), "cid": str(cid)}
    path = pathlib.Path(__file__).with_name("vectors") / "dagcbor.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")
