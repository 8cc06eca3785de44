"""The Results GOHO: signed result records keyed by task CID.

A result record says "runner R ran task T and its output is the block O":
``{t: "meshd/result", v: 1, task, output, runner, pk, at, s}`` where ``pk`` is
the runner's Ed25519 key and ``s`` its signature over the record without
``s``.  Records are added under the key ``str(task)``; a replicated task (see
the Verifier) may have several.  The output JSON itself is a DAG-CBOR block
named by ``output``, fetched like any other block.

The view verifies every record's signature on arrival, and that the key that
signed it is the runner's own (its peer id derives from the key), and ignores
forgeries: a peer cannot attribute a wrong answer to someone else.  One
exception: told its node's key, the view does not re-verify that node's own
records in deltas the node itself signed (its runner built and signed them;
a delta from a peer was verified whole on arrival, so one bearing our key
as author is ours too).  A record claiming our key in anyone else's delta is
verified like every other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .cid import CID
from .goho import Replica
from .signing import Signer, peer_id_of, verify_signature
from .state import decode_value


def result_record(signer: Signer, task: CID, output: CID, runner: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    """Build and sign a result record."""
    body: dict[str, Any] = {"t": "meshd/result", "v": 1, "task": task, "output": output, "runner": runner, "pk": signer.public, "at": at_ms}
    body.update(extra)
    body["s"] = signer.sign(codec.encode(body))
    return body


def result_op(record: dict[str, Any]) -> list[Any]:
    return ["add", str(record["task"]), record]


def _well_formed(rec: Any) -> bool:
    if type(rec) is not dict or rec.get("t") != "meshd/result" or rec.get("v") != 1:
        return False
    if type(rec.get("task")) is not CID or type(rec.get("output")) is not CID or type(rec.get("runner")) is not str:
        return False
    return type(rec.get("at")) is int and type(rec.get("pk")) is bytes and type(rec.get("s")) is bytes


def verify_result_record(rec: Any) -> bool:
    """True when ``rec`` is a well-formed, correctly signed result record."""
    if not _well_formed(rec):
        return False
    unsigned = {k: v for k, v in rec.items() if k != "s"}
    pk, sig = rec["pk"], rec["s"]
    if peer_id_of(pk) != rec["runner"]:
        return False  # signed by someone else than the runner it names
    try:
        return verify_signature(pk, sig, codec.encode(unsigned))
    except Exception:  # noqa: BLE001 - any encoding defect means "not valid"
        return False


@dataclass(frozen=True, slots=True)
class ResultsStatistics:
    """Counts of the results view.

    Attributes:
        tasks: Tasks with at least one valid record.
        records: Valid records.
        rejected: Records refused (malformed, badly signed, misattributed).
        own_trusted: Of ``records``, this node's own records taken from its
            own deltas without checking their signature again.
    """

    tasks: int
    records: int
    rejected: int
    own_trusted: int = 0


class ResultsView:
    """Results by task, with signatures checked once on arrival.

    Args:
        replica: The results object's replica.
        own_key: This node's Ed25519 public key (the one its runner signs
            results with and its commits are signed with), or None to verify
            every record.  With it, records signed with it in deltas it
            authored are not verified again (see the module doc).
    """

    def __init__(self, replica: Replica, *, own_key: bytes | None = None) -> None:
        self.replica = replica
        self._by_task: dict[CID, list[dict[str, Any]]] = {}
        self._rejected = 0
        self._own_trusted = 0
        self._own_key = own_key
        self._own_runner = peer_id_of(own_key) if own_key is not None else None
        self._cursor = replica.cursor()  # reads pull later changes; nothing is registered
        for key in replica.state.set_keys():
            for enc in list(replica.state.encoded_members(key)):
                self._on_add(key, enc)

    def sync(self) -> None:
        """Catch up with the replica (every read does this first)."""
        own_key = self._own_key
        for change in self._cursor.pull():
            # A delta authored by our key: made here, or ours replayed by a
            # peer (its signature was verified then).  Either way we signed it.
            ours = own_key is not None and change.delta.author == own_key
            for key, enc in change.adds:
                self._on_add(key, enc, in_own_delta=ours)

    def close(self) -> None:
        """Stop following the replica."""
        self._cursor.close()

    def _on_add(self, key: str, enc: bytes, *, in_own_delta: bool = False) -> None:
        rec = decode_value(enc)
        # Ours: our runner signed it, and checking would cost an Ed25519 verification.
        ours = in_own_delta and _well_formed(rec) and rec["pk"] == self._own_key and rec["runner"] == self._own_runner
        if not (ours or verify_result_record(rec)) or str(rec["task"]) != key:
            self._rejected += 1
            return
        self._own_trusted += ours
        self._by_task.setdefault(rec["task"], []).append(rec)

    def results(self, task: CID) -> list[dict[str, Any]]:
        """Valid records for ``task``, oldest first (ties by runner)."""
        self.sync()
        return sorted(self._by_task.get(task, ()), key=lambda r: (r["at"], r["runner"]))

    def has(self, task: CID) -> bool:
        self.sync()
        return task in self._by_task

    def statistics(self) -> ResultsStatistics:
        self.sync()
        return ResultsStatistics(len(self._by_task), sum(map(len, self._by_task.values())), self._rejected,
                                 self._own_trusted)
