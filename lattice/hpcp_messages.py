"""HPCP's messages: how each one is encoded, and how one from a peer is decoded and checked.

:mod:`lattice.hpcp` (its module doc lists the messages and their fields) is
the sync logic that decides what to send; this module holds only the bytes:
one ``encode_*`` function per message type, the one decoder of untrusted
input (:func:`decode_message_untrusted`, which raises only ``BadInput``
errors) and the size limits it enforces.  It is apart so the wire format can
be read, and checked against ``docs/protocol.md``, in one place; every name
is re-exported by :mod:`lattice.hpcp`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import codec, records
from .cid import CID
from .errors import BadMessage
from .signing import Signer, verify_signature

#: Largest HPCP message the decoder accepts (bytes).
MAX_MESSAGE = 8 * 1024 * 1024


#: Most blocks, and bytes of block data, an announcement pushes along
#: (``push``): one fresh delta with a few inline blocks fits, a catch-up does not.
MAX_PUSH_BLOCKS = 8
MAX_PUSH_BYTES = 16 * 1024


def encode_announce(signer: Signer, genesis: CID, heads: Iterable[CID], seq: int, snap: CID | None = None,
                    push: Iterable[tuple[CID, bytes]] = ()) -> bytes:
    """A signed announcement; ``push`` carries head blocks along (left out when empty)."""
    body: dict[str, Any] = {
        "t": "hpcp/announce",
        "v": 1,
        "g": genesis,
        "heads": sorted(heads),
        "snap": snap,
        "seq": seq,
        "a": signer.public,
    }
    push = [[c, d] for c, d in push]
    if push:
        body["push"] = push
    body["s"] = signer.sign(codec.encode(body))
    return codec.encode(body)


def encode_query(genesis: CID) -> bytes:
    return codec.encode({"t": "hpcp/query", "v": 1, "g": genesis})


#: Most CIDs a want's ``have`` may list (some of the asker's heads).
MAX_HAVE = 64


def encode_want(cids: Iterable[CID], have: Iterable[CID] = ()) -> bytes:
    """A want; ``have`` (at most :data:`MAX_HAVE`) are heads the asker holds
    with all their ancestors, so the server stops its ancestor walk there."""
    msg: dict[str, Any] = {"t": "hpcp/want", "v": 1, "cids": list(cids)}
    have = list(have)[:MAX_HAVE]
    if have:
        msg["have"] = have
    return codec.encode(msg)


def encode_blocks(blocks: list[tuple[CID, bytes]], missing: list[CID]) -> bytes:
    return codec.encode({"t": "hpcp/blocks", "v": 1, "blocks": [[c, d] for c, d in blocks], "missing": missing})


def decode_message_untrusted(data: bytes, *, verify: bool = True) -> dict[str, Any]:
    """Decode and shape-check any HPCP message; raise BadMessage/BadEncoding.

    With ``verify=False`` an announcement's signature is not checked here; the
    caller must call :func:`verify_announce` before acting on it (the syncer
    does, after the cheap replay and "nothing new" checks).
    """
    obj = codec.decode_untrusted(data, max_size=MAX_MESSAGE)
    if type(obj) is not dict or obj.get("v") != 1:
        raise BadMessage("not an HPCP v1 message")
    t = obj.get("t")
    if t == "hpcp/announce":
        if set(obj) - {"push"} != {"t", "v", "g", "heads", "snap", "seq", "a", "s"}:
            raise BadMessage("announce has wrong fields")
        push = obj.get("push", [])
        if (type(push) is not list or len(push) > MAX_PUSH_BLOCKS
                or any(type(b) is not list or len(b) != 2 or type(b[0]) is not CID or type(b[1]) is not bytes
                       for b in push)
                or sum(len(b[1]) for b in push) > MAX_PUSH_BYTES):
            raise BadMessage("announce push has wrong shape or size")
        heads = obj["heads"]
        if (
            type(obj["g"]) is not CID
            or type(heads) is not list
            or len(heads) > records.MAX_PARENTS
            or any(type(h) is not CID for h in heads)
            or (obj["snap"] is not None and type(obj["snap"]) is not CID)
            or type(obj["seq"]) is not int
            or obj["seq"] < 0
            # The author keys the replay table: it must be hashable bytes.
            or type(obj["a"]) is not bytes
            or type(obj["s"]) is not bytes
        ):
            raise BadMessage("announce fields have wrong types")
        if verify:
            verify_announce(obj)
    elif t == "hpcp/query":
        if set(obj) != {"t", "v", "g"} or type(obj["g"]) is not CID:
            raise BadMessage("query has wrong fields")
    elif t == "hpcp/want":
        cids, have = obj.get("cids"), obj.get("have", [])
        if (set(obj) - {"have"} != {"t", "v", "cids"} or type(cids) is not list or len(cids) > 4096
                or type(have) is not list or len(have) > MAX_HAVE):
            raise BadMessage("want has wrong fields")
        if any(type(c) is not CID for c in cids) or any(type(c) is not CID for c in have):
            raise BadMessage("want must list links")
    elif t == "hpcp/blocks":
        blocks, missing = obj.get("blocks"), obj.get("missing")
        if set(obj) != {"t", "v", "blocks", "missing"} or type(blocks) is not list or type(missing) is not list:
            raise BadMessage("blocks has wrong fields")
        for b in blocks:
            if type(b) is not list or len(b) != 2 or type(b[0]) is not CID or type(b[1]) is not bytes:
                raise BadMessage("blocks entries must be [cid, bytes]")
        if any(type(c) is not CID for c in missing):
            raise BadMessage("missing must list links")
    else:
        raise BadMessage(f"unknown HPCP message type {t!r}")
    return obj


def verify_announce(obj: dict[str, Any]) -> None:
    """Raise BadMessage unless the decoded announcement's signature verifies."""
    unsigned = {k: v for k, v in obj.items() if k != "s"}
    if not verify_signature(obj["a"], obj["s"], codec.encode(unsigned)):
        raise BadMessage("announce signature does not verify")


def signed_announce_untrusted(data: bytes) -> dict[str, Any]:
    """Decode an ``hpcp/announce`` and check its signature.

    Raises:
        BadInput: not a well-formed announcement, or its signature does not verify.
    """
    msg = decode_message_untrusted(data, verify=False)
    if msg["t"] != "hpcp/announce":
        raise BadMessage("not an announcement")
    verify_announce(msg)
    return msg


def peek_genesis_untrusted(data: bytes) -> CID | None:
    """The object an announce/query is about (to route it), else None."""
    obj = decode_message_untrusted(data, verify=False)
    return obj.get("g")
