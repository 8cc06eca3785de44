"""The Results GOHO: result records keyed by task CID.

A result record says "runner R ran task T and its output is the block O".
Records are added under the key ``str(task)``; a replicated task (see the
Verifier) may have several.  The output JSON itself is a DAG-CBOR block named
by ``output``, fetched like any other block.  An output larger than
``OUTPUT_FILE_BYTES`` encoded is also stored as a UnixFS file of its JSON
text (:func:`output_json_bytes`), linked by the record's ``file`` field (an
extra field: the record stays v2), so ``ipfs cat <file>`` prints it from an
IPFS node holding the blocks.  Two versions exist:

* **v2** (written now): ``{t: "meshd/result", v: 2, task, output, runner, at,
  ...extra}``, unsigned.  It is authenticated by the ``goho/delta`` that
  carries it, whose signature the replica verified once, for the whole
  delta, on arrival: the view accepts a v2 record only from a delta whose
  author's peer id is ``runner``.  A peer therefore still cannot attribute a
  wrong answer to someone else, and no result costs a signature or a
  verification of its own.  A v2 record must not carry ``pk`` or ``s``.
* **v1** (old peers, old data): ``{t: "meshd/result", v: 1, task, output,
  runner, pk, at, s}`` where ``pk`` is the runner's Ed25519 key and ``s`` its
  signature over the record without ``s``.  It authenticates itself, in any
  delta: the view verifies the signature and that ``runner`` is the peer id of
  ``pk``.  Told its node's key, the view does not re-verify that node's own v1
  records in deltas the node itself signed (a delta from a peer was verified
  whole on arrival, so one bearing our key as author is ours too).

The grow-only set keeps one copy of each record per task key, so when the
same v2 record is added by a delta of someone else first (a copy raced ahead
of the runner's own delta), the runner's delta later lists no new element.
The view keeps such refused records by runner and binds them when a delta by
that runner carries the same record (it reads that delta's ops only then).

**Records already in the replica when the view is built** (a node's whole
history at start, replayed from its store before any view exists) come with
no delta at hand.  v1 records are verified as before.  For v2 records the
view walks the stored delta DAG once, from the heads, and accepts a record
when a stored delta by its runner adds it: trust is exactly as for records
that arrive later, so a misattributed record refused in an earlier life is
refused again after a restart.  The cost is one more read of the results
object's stored deltas at start (only when v2 records exist); stored blocks
are not verified again (their signatures were checked when they entered the
store).  A v2 record that no stored delta adds came in with the snapshot the
replica was bootstrapped from (``replica.base``) and is accepted on that
snapshot's word: whoever can forge a snapshot can forge its results, like
every other record in it.  Snapshot authentication is a separate known
finding (security issue 14), not addressed here.  Records installed from a
snapshot *after* the view is built do not reach the view at all (snapshot
installs add no change to the feed).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from . import codec, records
from .cid import CID
from .errors import BlockNotFound
from .goho import Replica
from .records import OP_ADD, Delta
from .signing import Signer, peer_id_of, verify_signature

#: Largest output block a runner records (bytes of DAG-CBOR).  A peer fetches
#: an output as one block in one blocks answer and decodes it with
#: :data:`lattice.codec.MAX_BLOCK_SIZE`; a bigger output (engines may print
#: 16 MiB) would be recorded but no peer could fetch it, so it is refused.
MAX_OUTPUT_BYTES = codec.MAX_BLOCK_SIZE
#: Outputs whose DAG-CBOR is larger than this (bytes) are also stored as a
#: UnixFS file of their JSON text, the record's ``file`` link: one 256 KiB
#: leaf, the size from which a file is more than one block.
OUTPUT_FILE_BYTES = 256 * 1024


def output_json_bytes(output: Any) -> bytes:
    """The JSON text of a decoded output, as its ``file`` holds it.

    DAG-JSON forms (links ``{"/": cid}``, bytes ``{"/": {"bytes": ...}}``),
    keys sorted, no spaces, UTF-8: the same output gives the same bytes.
    """
    return json.dumps(codec.to_json(output), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
from .state import decode_value, encode_value

#: Fields of a record that ``extra`` may not set (``pk`` and ``s`` are v1 only).
_RESERVED = frozenset({"t", "v", "task", "output", "runner", "at", "pk", "s"})


@functools.lru_cache(maxsize=4096)
def _peer_id(public: bytes) -> str | None:
    # Base58 of the key's multihash: cheap, but not free on every record.
    # Keyed by delta author, so the cache is as large as the set of writers.
    return peer_id_of(public)


def result_record(signer: Signer, task: CID, output: CID, runner: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    """Build a v2 result record (unsigned: the delta that carries it authenticates it).

    Args:
        signer: The key whose delta will carry the record.  It signs nothing
            here; it is used only to check that ``runner`` is its peer id,
            because a record in anyone else's name is refused by every view.
        task, output, runner, at_ms: The record's ``task``, ``output``,
            ``runner`` and ``at`` fields.
        **extra: More fields (the Runner adds ``duration_s`` and ``stderr``).

    Raises:
        ValueError: ``runner`` is not the signer's peer id, or ``extra`` names
            a field of the record itself (or v1's ``pk``/``s``).
    """
    if _peer_id(signer.public) != runner:
        raise ValueError("runner must be the peer id of the key whose delta carries the record")
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"extra fields may not set {sorted(clash)}")
    body: dict[str, Any] = {"t": "meshd/result", "v": 2, "task": task, "output": output, "runner": runner, "at": at_ms}
    body.update(extra)
    return body


def result_op(record: dict[str, Any]) -> list[Any]:
    return ["add", str(record["task"]), record]


def _common_fields(rec: Any, version: int) -> bool:
    if type(rec) is not dict or rec.get("t") != "meshd/result" or rec.get("v") != version:
        return False
    if type(rec.get("task")) is not CID or type(rec.get("output")) is not CID or type(rec.get("runner")) is not str:
        return False
    return type(rec.get("at")) is int


def _well_formed_v1(rec: Any) -> bool:
    return _common_fields(rec, 1) and type(rec.get("pk")) is bytes and type(rec.get("s")) is bytes


def _well_formed_v2(rec: Any) -> bool:
    return _common_fields(rec, 2) and "pk" not in rec and "s" not in rec


def _verify_v1(rec: dict[str, Any]) -> bool:
    """The signature check of a well-formed v1 record (one Ed25519 verification)."""
    pk, sig = rec["pk"], rec["s"]
    if _peer_id(pk) != rec["runner"]:
        return False  # signed by someone else than the runner it names
    unsigned = {k: v for k, v in rec.items() if k != "s"}
    try:
        return verify_signature(pk, sig, codec.encode(unsigned))
    except Exception:  # noqa: BLE001 - any encoding defect means "not valid"
        return False


def _bound(rec: dict[str, Any], author: Any) -> bool:
    """Whether a well-formed v2 record is its delta author's own."""
    return type(author) is bytes and _peer_id(author) == rec["runner"]


def verify_result_record(rec: Any, author: bytes | None = None) -> bool:
    """True when ``rec`` is an authentic result record.

    Args:
        rec: A decoded element of the results object.
        author: The Ed25519 key of the author of the (verified) delta that
            carries ``rec``; None when unknown.

    Returns:
        For v1, whether it is well formed and correctly signed by its runner
        (``author`` is not needed).  For v2, whether it is well formed and
        ``author`` is its runner's key; without ``author`` a v2 record is
        never authentic.  Anything else is False.
    """
    if _well_formed_v2(rec):
        return _bound(rec, author)
    return _well_formed_v1(rec) and _verify_v1(rec)


def _stored_carriers(replica: Replica, wanted: dict[bytes, str]) -> tuple[set[bytes], set[bytes]]:
    """Which of the v2 records ``wanted`` (encoding -> runner) stored deltas add.

    Returns ``(bound, seen)``: encodings added by a delta of their runner, and
    encodings added by any stored delta.  Walks the delta DAG from the heads
    through the store; deltas covered by a snapshot may be absent and are
    skipped.  Blocks are decoded as trusted: each was verified when it entered
    the store.
    """
    bound: set[bytes] = set()
    seen: set[bytes] = set()
    stack = list(replica.heads)
    visited: set[CID] = set()
    while stack:
        cid = stack.pop()
        if cid in visited:
            continue
        visited.add(cid)
        try:
            d: Delta = records.delta_from_trusted(cid, replica.store.get(cid))
        except BlockNotFound:
            continue
        pid = _peer_id(d.author)
        for op, _key, value in d.ops:
            if op != OP_ADD or type(value) is not dict or value.get("v") != 2:
                continue
            enc = encode_value(value)
            runner = wanted.get(enc)
            if runner is not None:
                seen.add(enc)
                if runner == pid:
                    bound.add(enc)
        stack.extend(d.parents)
    return bound, seen


@dataclass(frozen=True, slots=True)
class ResultsStatistics:
    """Counts of the results view.

    Attributes:
        tasks: Tasks with at least one valid record.
        records: Valid records.
        rejected: Records refused (malformed, filed under another task, a v1
            record badly signed or signed by another key than its runner's, a
            v2 record in a delta not authored by its runner).  A v2 record
            refused so and later carried by its runner's delta moves to
            ``records``.
        own_trusted: Of ``records``, this node's own records taken from its
            own deltas with no signature check (v1 records would otherwise
            be verified; v2 records never are).
        verified: Ed25519 signature verifications of v1 records done by
            the view (v2 records cost none).
    """

    tasks: int
    records: int
    rejected: int
    own_trusted: int = 0
    verified: int = 0


class ResultsView:
    """Results by task, each record authenticated once on arrival (see the module doc).

    Args:
        replica: The results object's replica.
        own_key: This node's Ed25519 public key (the one its commits are
            signed with), or None.  With it, own v1 records in deltas it
            authored are not verified again, and own records are counted
            in ``own_trusted``.

    Building the view reads the replica's state, and its stored deltas once
    when that state already holds v2 records (start-up: see the module doc).
    """

    def __init__(self, replica: Replica, *, own_key: bytes | None = None) -> None:
        self.replica = replica
        self._by_task: dict[CID, list[dict[str, Any]]] = {}
        self._by_output: dict[CID, list[dict[str, Any]]] = {}  # what explaining an output CID reads
        # The result cache's index (lattice.resultcache): (engine, input CID)
        # -> records that name that pair, in arrival order.
        self._by_input: dict[tuple[CID, CID], list[dict[str, Any]]] = {}
        self._rejected = 0
        self._own_trusted = 0
        self._verified = 0
        self._own_key = own_key
        self._own_runner = _peer_id(own_key) if own_key is not None else None
        # v2 records refused for want of their runner's delta, by runner:
        # {(key, encoding)}.  As large as those records in the set at most.
        self._unbound: dict[str, set[tuple[str, bytes]]] = {}
        self._cursor = replica.cursor()  # reads pull later changes; nothing is registered
        self._load_existing()

    def _load_existing(self) -> None:
        state = self.replica.state
        existing = [(key, enc, decode_value(enc)) for key in state.set_keys() for enc in list(state.encoded_members(key))]
        v2 = {enc: rec["runner"] for _key, enc, rec in existing if _well_formed_v2(rec)}
        bound, seen = _stored_carriers(self.replica, v2) if v2 else (set(), set())
        from_snapshot = self.replica.base is not None
        for key, enc, rec in existing:
            if enc in v2:
                # Bound by a stored delta of its runner, or only in the snapshot we started from.
                ok = enc in bound or (from_snapshot and enc not in seen)
                self._take_v2(key, enc, rec, ok, ours=enc in bound and rec["runner"] == self._own_runner)
            else:
                self._on_add(key, enc, None)

    def sync(self) -> None:
        """Catch up with the replica (every read does this first)."""
        for change in self._cursor.pull():
            author = change.delta.author
            for key, enc in change.adds:
                self._on_add(key, enc, author)
            if self._unbound:
                self._bind_late(change.delta)

    def close(self) -> None:
        """Stop following the replica."""
        self._cursor.close()

    def _on_add(self, key: str, enc: bytes, author: bytes | None) -> None:
        rec = decode_value(enc)
        if _well_formed_v2(rec):
            ok = _bound(rec, author)
            self._take_v2(key, enc, rec, ok, ours=ok and author == self._own_key)
            return
        if not _well_formed_v1(rec) or str(rec["task"]) != key:
            self._rejected += 1
            return
        # A delta authored by our key was made here, or is ours replayed by a
        # peer (its signature was verified then): our runner signed the record.
        ours = (author is not None and author == self._own_key
                and rec["pk"] == self._own_key and rec["runner"] == self._own_runner)
        if not ours:
            if _peer_id(rec["pk"]) != rec["runner"]:
                self._rejected += 1  # signed (if at all) by someone else than the runner it names
                return
            self._verified += 1
            if not _verify_v1(rec):
                self._rejected += 1
                return
        self._accept(rec, ours)

    def _take_v2(self, key: str, enc: bytes, rec: dict[str, Any], ok: bool, *, ours: bool) -> None:
        if str(rec["task"]) != key:
            self._rejected += 1
        elif ok:
            self._accept(rec, ours)
        else:
            self._rejected += 1
            self._unbound.setdefault(rec["runner"], set()).add((key, enc))

    def _bind_late(self, delta: Delta) -> None:
        """Accept refused v2 records that ``delta``, by their runner, adds again."""
        runner = _peer_id(delta.author)
        waiting = self._unbound.get(runner) if runner is not None else None
        if not waiting:
            return
        for op, key, value in delta.ops:
            if op != OP_ADD or type(value) is not dict or value.get("runner") != runner or value.get("v") != 2:
                continue
            item = (key, encode_value(value))
            if item in waiting:
                waiting.discard(item)
                self._rejected -= 1
                self._accept(value, delta.author == self._own_key)
        if not waiting:
            del self._unbound[runner]

    def _accept(self, rec: dict[str, Any], ours: bool) -> None:
        self._own_trusted += ours
        self._by_task.setdefault(rec["task"], []).append(rec)
        self._by_output.setdefault(rec["output"], []).append(rec)
        engine, inp = rec.get("engine"), rec.get("in")
        if type(engine) is CID and type(inp) is CID:
            self._by_input.setdefault((engine, inp), []).append(rec)

    def with_output(self, output: CID) -> list[dict[str, Any]]:
        """Valid records whose output is ``output``, in the order they were accepted here.

        Equal outputs share one CID (content addressing), so several tasks
        may have made it.
        """
        self.sync()
        return list(self._by_output.get(output, ()))

    def results(self, task: CID) -> list[dict[str, Any]]:
        """Valid records for ``task``, oldest first (ties by runner)."""
        self.sync()
        return sorted(self._by_task.get(task, ()), key=lambda r: (r["at"], r["runner"]))

    def by_input(self, engine: CID, inp: CID) -> list[dict[str, Any]]:
        """Valid records that say they ran ``engine`` on input ``inp``
        (:func:`lattice.resultcache.input_cid`), oldest first: the result
        cache's index, one dictionary read."""
        self.sync()
        return sorted(self._by_input.get((engine, inp), ()), key=lambda r: (r["at"], r["runner"]))

    def has(self, task: CID) -> bool:
        self.sync()
        return task in self._by_task

    def ran(self, task: CID, runner: str) -> bool:
        """Whether a valid result of ``runner`` for ``task`` is here (what a
        verdict about that runner needs to count, see :mod:`lattice.trust`)."""
        self.sync()
        return any(r["runner"] == runner for r in self._by_task.get(task, ()))

    @property
    def version(self) -> int:
        """Changes whenever the results may have changed (the replica's version)."""
        return self.replica.version

    def statistics(self) -> ResultsStatistics:
        self.sync()
        return ResultsStatistics(len(self._by_task), sum(map(len, self._by_task.values())), self._rejected,
                                 self._own_trusted, self._verified)
