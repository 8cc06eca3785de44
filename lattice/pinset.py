"""The pinset: what the mesh asks its archivists to keep, and who keeps what.

IPFS Cluster's model on a GOHO.  The mesh's ``pinset`` object (kind
``pinset``, named after the mesh, empty nonce: every member derives its
genesis) holds three grow-only sets:

* ``pins``: ``meshd/pinset-pin v1 {t, v, cid, replicas, name?, expire?,
  dataset?, by, at}``: "keep the DAG under ``cid`` on ``replicas``
  archivists" (``dataset: true``: ``cid`` is a dataset's genesis, and the
  pin keeps the dataset's whole delta DAG from its current heads);
* ``unpins``: ``meshd/pinset-unpin v1 {t, v, cid, by, at}``;
* ``held``: ``meshd/pin-held v1 {t, v, cid, archivist, pk, held, blocks,
  bytes, at, s}``: an archivist's signed report that it holds (``held:
  true``) the whole DAG of ``cid`` (``blocks`` blocks, ``bytes`` bytes), or
  no longer keeps it (``held: false``).  The signature binds the report to
  the archivist's key, so nobody can report for another archivist.

A CID's pin state is its newest pin or unpin record by ``(at, by, kind)``
(an unpin after a pin removes it; a later pin adds it again), minus pins
past their ``expire`` time.  Every member computes the same answer from the
same state.

Who keeps a pin is decided, not negotiated: :func:`allocate` ranks the live
archivists by weighted rendezvous hashing (highest random weight, the
``w / -ln(u)`` form) of ``(pin CID, archivist)``, weighted by free space in
power-of-two buckets (:func:`weight`), and takes the first ``replicas``.
Each archivist computes the same allocation from the same live set, so no
messages are needed to agree; when an archivist dies or leaves, only its
pins move, each to the next archivist in that pin's ranking.  The bucket
keeps allocations still while free space drifts by less than half.

This module is pure: the Archivist's pin holder (:mod:`meshd.roles.pinholder`)
drives it, and tests run it with no network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import codec
from .cid import CID
from .errors import BadInput, BadRecord
from .signing import Signer, peer_id_of, verify_signature
from .state import State

#: Kind of the mesh's pinset GOHO (its name is the mesh name).
PINSET: Final = "pinset"
PIN_TAG: Final = "meshd/pinset-pin"
UNPIN_TAG: Final = "meshd/pinset-unpin"
HELD_TAG: Final = "meshd/pin-held"
PINS, UNPINS, HELD = "pins", "unpins", "held"
#: Most replicas one pin may ask for.
MAX_REPLICAS: Final = 64
_MAX_NAME = 256

__all__ = ["HELD", "HELD_TAG", "MAX_REPLICAS", "PINS", "PINSET", "PIN_TAG", "UNPINS", "UNPIN_TAG", "Held", "Pin",
           "Plan", "allocate", "held_op", "plan", "held_record", "held_from_untrusted", "pin_from_untrusted", "pin_op",
           "pins", "reports", "unpin_op", "weight"]


@dataclass(frozen=True, slots=True)
class Pin:
    """A live pin: keep the DAG under ``cid`` on ``replicas`` archivists."""

    cid: CID
    replicas: int
    name: str
    expire: int | None
    dataset: bool
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class Held:
    """An archivist's verified report on one pin."""

    cid: CID
    archivist: str
    held: bool
    blocks: int
    bytes: int
    at: int


def _uint(value: Any, what: str, top: int = 2**63 - 1) -> int:
    if type(value) is not int or not 0 <= value <= top:
        raise BadRecord(f"{what} must be an integer in [0, {top}]")
    return value


def pin_op(cid: CID, replicas: int, by: str, at_ms: int, *, name: str = "", expire_ms: int | None = None,
           dataset: bool = False) -> list[Any]:
    """The pinset op that pins ``cid`` (checked as a peer's would be).

    Raises:
        BadRecord: a field is out of range.
    """
    rec: dict[str, Any] = {"t": PIN_TAG, "v": 1, "cid": cid, "replicas": replicas, "by": by, "at": at_ms}
    if name:
        rec["name"] = name
    if expire_ms is not None:
        rec["expire"] = expire_ms
    if dataset:
        rec["dataset"] = True
    pin_from_untrusted(rec)
    return ["add", PINS, rec]


def unpin_op(cid: CID, by: str, at_ms: int) -> list[Any]:
    """The pinset op that removes ``cid``'s pin."""
    return ["add", UNPINS, {"t": UNPIN_TAG, "v": 1, "cid": cid, "by": by, "at": at_ms}]


def pin_from_untrusted(value: Any) -> Pin:
    """Check a ``pins`` element.

    Raises:
        BadRecord: it is not a ``meshd/pinset-pin v1`` record.
    """
    if type(value) is not dict or value.get("t") != PIN_TAG or value.get("v") != 1:
        raise BadRecord("not a meshd/pinset-pin v1 record")
    if set(value) - {"t", "v", "cid", "replicas", "name", "expire", "dataset", "by", "at"}:
        raise BadRecord("meshd/pinset-pin has unknown fields")
    if type(value.get("cid")) is not CID or type(value.get("by")) is not str or len(value["by"]) > 128:
        raise BadRecord("meshd/pinset-pin needs a cid link and a by peer id")
    replicas = _uint(value.get("replicas"), "replicas", MAX_REPLICAS)
    if replicas < 1:
        raise BadRecord("replicas must be at least 1")
    name = value.get("name", "")
    if type(name) is not str or len(name) > _MAX_NAME:
        raise BadRecord(f"name must be a string of at most {_MAX_NAME} characters")
    expire = _uint(value["expire"], "expire") if "expire" in value else None
    if value.get("dataset", True) is not True:
        raise BadRecord("dataset must be true when present")
    return Pin(value["cid"], replicas, name, expire, "dataset" in value, value["by"], _uint(value.get("at"), "at"))


def held_record(signer: Signer, cid: CID, held: bool, blocks: int, size: int, at_ms: int) -> dict[str, Any]:
    """This archivist's signed report on ``cid``."""
    body: dict[str, Any] = {"t": HELD_TAG, "v": 1, "cid": cid, "archivist": peer_id_of(signer.public),
                            "pk": signer.public, "held": held, "blocks": blocks, "bytes": size, "at": at_ms}
    body["s"] = signer.sign(codec.encode(body))
    return body


def held_op(record: Mapping[str, Any]) -> list[Any]:
    """The pinset op that publishes a report."""
    return ["add", HELD, dict(record)]


def held_from_untrusted(value: Any) -> Held:
    """Check a ``held`` element: shape, and a signature by the archivist it names.

    Raises:
        BadRecord: anything is wrong with it.
    """
    if type(value) is not dict or value.get("t") != HELD_TAG or value.get("v") != 1:
        raise BadRecord("not a meshd/pin-held v1 record")
    if set(value) != {"t", "v", "cid", "archivist", "pk", "held", "blocks", "bytes", "at", "s"}:
        raise BadRecord("meshd/pin-held has missing or extra fields")
    pk, sig = value["pk"], value["s"]
    if type(value["cid"]) is not CID or type(value["archivist"]) is not str or type(value["held"]) is not bool:
        raise BadRecord("meshd/pin-held has mistyped fields")
    if type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes:
        raise BadRecord("meshd/pin-held has a mistyped key or signature")
    blocks, size, at = (_uint(value[k], k) for k in ("blocks", "bytes", "at"))
    if peer_id_of(pk) != value["archivist"]:
        raise BadRecord("meshd/pin-held archivist does not match its key")
    if not verify_signature(pk, sig, codec.encode({k: v for k, v in value.items() if k != "s"})):
        raise BadRecord("meshd/pin-held signature does not verify")
    return Held(value["cid"], value["archivist"], value["held"], blocks, size, at)


def _records(state: State, key: str, decode: Any) -> Iterable[Any]:
    for value in state.members(key):
        try:
            yield decode(value)
        except BadInput:
            continue  # a malformed element is ignored, as every reader ignores it


def pins(state: State, now_ms: int) -> dict[CID, Pin]:
    """The live pins in a pinset state at ``now_ms``, by CID.

    Each CID's newest record wins, ordered by ``(at, by, kind)`` with an
    unpin after a pin at equal ``(at, by)``; expired pins are left out.
    """
    newest: dict[CID, tuple[tuple[int, str, int], Pin | None]] = {}
    for p in _records(state, PINS, pin_from_untrusted):
        order = (p.at, p.by, 0)
        if p.cid not in newest or newest[p.cid][0] < order:
            newest[p.cid] = (order, p)
    for value in state.members(UNPINS):
        if type(value) is not dict or value.get("t") != UNPIN_TAG or type(value.get("cid")) is not CID \
                or type(value.get("at")) is not int or type(value.get("by")) is not str:
            continue
        order = (value["at"], value["by"], 1)
        if value["cid"] not in newest or newest[value["cid"]][0] < order:
            newest[value["cid"]] = (order, None)
    return {c: p for c, (_, p) in newest.items()
            if p is not None and (p.expire is None or p.expire > now_ms)}


def reports(state: State) -> dict[CID, dict[str, Held]]:
    """Each archivist's newest verified report, per pinned CID."""
    out: dict[CID, dict[str, Held]] = {}
    for h in _records(state, HELD, held_from_untrusted):
        mine = out.setdefault(h.cid, {})
        old = mine.get(h.archivist)
        if old is None or (old.at, old.held) < (h.at, h.held):
            mine[h.archivist] = h
    return out


def weight(free_bytes: int) -> int:
    """An archivist's weight: its free space in MiB, rounded down to a power of two (at least 1)."""
    mib = max(1, int(free_bytes) >> 20)
    return 1 << (mib.bit_length() - 1)


def _score(cid: CID, archivist: str, w: int) -> float:
    h = int.from_bytes(hashlib.sha256(cid.raw + b"\0" + archivist.encode()).digest()[:8], "big")
    u = (h + 1) / (2**64 + 1)  # in (0, 1): -ln(u) > 0
    return w / -math.log(u)


def allocate(cid: CID, replicas: int, archivists: Mapping[str, int]) -> list[str]:
    """The archivists that keep ``cid``, best first: the top ``replicas`` by weighted rendezvous hashing.

    Args:
        cid: The pinned CID.
        replicas: How many archivists should keep it.
        archivists: Live archivists and their weights (:func:`weight`).

    Returns:
        At most ``replicas`` peer ids (all of them when there are fewer).
    """
    ranked = sorted(archivists, key=lambda a: (-_score(cid, a, max(1, archivists[a])), a))
    return ranked[:max(0, replicas)]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one archivist should do with the pinset now (:func:`plan`).

    Attributes:
        hold: Live pins allocated to it: fetch, pin and report each held.
        release: Pins it holds and should let go of: removed or expired
            ones, and moved ones once every archivist now allocated reports
            them held (so a moving pin never has fewer holders than before).
    """

    hold: tuple[Pin, ...]
    release: tuple[CID, ...]


def plan(me: str, state: State, now_ms: int, live: Mapping[str, int], holding: Iterable[CID]) -> Plan:
    """The one decision an archivist makes about the pinset, as a pure function.

    Args:
        me: This archivist's peer id.
        state: The pinset object's state.
        now_ms: The reader's clock (expiry).
        live: Live archivists and their weights, this one included.
        holding: Pins this archivist holds now.

    Returns:
        The pins to hold and the pins to release.
    """
    active = pins(state, now_ms)
    reps = reports(state)
    hold: list[Pin] = []
    release: list[CID] = []
    held_here = set(holding)
    for cid, pin in sorted(active.items()):
        alloc = allocate(cid, pin.replicas, live)
        if me in alloc:
            hold.append(pin)
        elif cid in held_here:
            mine = reps.get(cid, {})
            if all((r := mine.get(a)) is not None and r.held for a in alloc):
                release.append(cid)
    release += sorted(c for c in held_here if c not in active)
    return Plan(tuple(hold), tuple(release))
