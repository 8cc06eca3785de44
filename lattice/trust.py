"""Trust and bans, computed identically by every peer from signed verdicts.

A *verdict* says which runners of a replicated task returned the canonical
output and which did not:
``{t: "meshd/verdict", v: 1, task, engine, output, valid: [peer], invalid:
[peer], by, at, pk, s}``, signed by the verifier that wrote it.  Verdicts live
in a grow-only ``verdicts`` GOHO, so every peer ends up with the same set.

Who may judge (the verifier model; BOINC's validator is the anchor): a
verdict counts only when its signer (``by``, the peer id of ``pk``) is one of
``TrustOptions.verifiers``.  The daemon sets those to the mesh's ``[verify]
keys``, or, where none are configured, to the node itself: each node then
compares replicas itself and ignores third-party verdicts.  Others' verdicts
stay in the grow-only set but are counted as ``ignored`` and change nothing.
And a judgement of a runner counts only while that runner's result for the
task is in the results object (``evidence``), so a verdict about a task the
runner never ran (a made-up task) bans nobody and vouches for nobody; it is
counted as ``unfounded`` until such a result arrives.

From the counted verdicts every peer with the same verifiers derives the same
scores (a pure function of the verdicts and results; no clock):

* Several verifiers may judge one task, and a late runner's result is
  judged by a later verdict: for each ``(task, runner)`` the verdict with the
  smallest ``(at, by, record CID)`` that names the runner counts.
* Per ``(peer, engine)``: valid and invalid counts, and the *streak* of
  consecutive valid results (BOINC's adaptive replication), in verdict order
  ``(at, task)``.
* A peer is **trusted** for an engine when its streak reaches
  ``trust_after``; **banned** (for everything) once it has ``ban_after``
  invalid results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from . import codec
from .cid import CID
from .goho import Replica
from .signing import Signer, peer_id_of, verify_signature
from .state import decode_value

VERDICTS = "verdicts"


@dataclass(frozen=True)
class TrustOptions:
    """Thresholds; they must be equal on every peer of a mesh.

    Attributes:
        trust_after: Consecutive valid results before a peer is trusted (5).
        ban_after: Invalid results before a peer is banned (2).
        verifiers: Peer ids whose verdicts count (default: none, so nobody
            is judged).  The daemon passes ``[verify] keys``, or its own peer
            id where none are configured.
    """

    trust_after: int = 5
    ban_after: int = 2
    verifiers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.trust_after < 1 or self.ban_after < 1:
            raise ValueError("trust_after and ban_after must be >= 1")
        if not isinstance(self.verifiers, frozenset) or not all(type(p) is str for p in self.verifiers):
            raise ValueError("verifiers must be a frozenset of peer ids")


class Evidence(Protocol):
    """What the trust view needs of the results (``lattice.results.ResultsView``)."""

    def ran(self, task: CID, runner: str) -> bool:
        """Whether ``runner``'s result for ``task`` is in the results object."""
        ...

    @property
    def version(self) -> int:
        """Changes whenever ``ran`` may answer differently."""
        ...


@dataclass(frozen=True, slots=True)
class TrustStatistics:
    """Verdicts seen: ``forged`` (malformed or badly signed), ``ignored`` (not
    by a verifier), ``unfounded`` (judgements of a runner with no result for
    the task, at the last computation)."""

    counted: int
    forged: int
    ignored: int
    unfounded: int


@dataclass(frozen=True, slots=True)
class Score:
    valid: int = 0
    invalid: int = 0
    streak: int = 0


def verdict_record(signer: Signer, task: CID, engine: CID | None, output: CID, valid: Iterable[str],
                   invalid: Iterable[str], by: str, at_ms: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "t": "meshd/verdict", "v": 1, "task": task, "engine": engine, "output": output,
        "valid": sorted(set(valid)), "invalid": sorted(set(invalid)), "by": by, "at": at_ms, "pk": signer.public,
    }
    body["s"] = signer.sign(codec.encode(body))
    return body


def verdict_op(record: dict[str, Any]) -> list[Any]:
    return ["add", VERDICTS, record]


def verify_verdict(rec: Any) -> bool:
    """True for a well-formed, correctly signed verdict."""
    if type(rec) is not dict or rec.get("t") != "meshd/verdict" or rec.get("v") != 1:
        return False
    if type(rec.get("task")) is not CID or type(rec.get("output")) is not CID:
        return False
    if rec.get("engine") is not None and type(rec.get("engine")) is not CID:
        return False
    for k in ("valid", "invalid"):
        if type(rec.get(k)) is not list or not all(type(p) is str for p in rec[k]):
            return False
    if type(rec.get("by")) is not str or type(rec.get("at")) is not int:
        return False
    pk, sig = rec.get("pk"), rec.get("s")
    if type(pk) is not bytes or type(sig) is not bytes:
        return False
    if peer_id_of(pk) != rec["by"]:
        return False  # a verdict must be signed by the verifier it names
    unsigned = {k: v for k, v in rec.items() if k != "s"}
    try:
        return verify_signature(pk, sig, codec.encode(unsigned))
    except Exception:  # noqa: BLE001 - an unencodable record is simply not valid
        return False


class TrustView:
    """Scores and bans over a verdicts replica (recomputed when it changes)."""

    def __init__(self, replica: Replica, options: TrustOptions | None = None, *,
                 evidence: Evidence | None = None) -> None:
        self.replica = replica
        self.options = options or TrustOptions()
        # Without evidence (tools, tests of the order rules) every judgement
        # by a verifier counts; the daemon always passes its results view.
        self._evidence = evidence
        self._counted = 0
        self._ignored = 0
        self._unfounded = 0
        self._by_task: dict[CID, tuple[tuple[int, str, bytes], dict[str, Any]]] = {}
        # (task, runner) -> (order, engine, valid?) from the earliest verdict naming the runner
        self._judged: dict[tuple[CID, str], tuple[tuple[int, str, bytes], Any, bool]] = {}
        self._rejected = 0
        self._cache_version: Any = None
        self._scores: dict[str, dict[Any, Score]] = {}
        self._banned: frozenset[str] = frozenset()
        self._cursor = replica.cursor()  # reads pull later changes; nothing is registered
        for enc in list(replica.state.encoded_members(VERDICTS)):
            self._on_add(enc)

    def sync(self) -> None:
        """Catch up with the replica (every read does this first)."""
        for change in self._cursor.pull():
            for key, enc in change.adds:
                if key == VERDICTS:
                    self._on_add(enc)

    def close(self) -> None:
        """Stop following the replica."""
        self._cursor.close()

    def _on_add(self, enc: bytes) -> None:
        rec = decode_value(enc)
        if type(rec) is dict and type(rec.get("by")) is str and rec["by"] not in self.options.verifiers:
            self._ignored += 1  # not a verifier: not even worth a signature check
            return
        if not verify_verdict(rec):
            self._rejected += 1
            return
        self._counted += 1
        order = (rec["at"], rec["by"], codec.cid_of(rec).raw)
        cur = self._by_task.get(rec["task"])
        if cur is None or order < cur[0]:
            self._by_task[rec["task"]] = (order, rec)
        for peer, ok in [(p, True) for p in rec["valid"]] + [(p, False) for p in rec["invalid"]]:
            key = (rec["task"], peer)
            prev = self._judged.get(key)
            if prev is None or order < prev[0]:
                self._judged[key] = (order, rec.get("engine"), ok)
        self._cache_version = None

    def _compute(self) -> None:
        self.sync()
        ev = self._evidence
        version = (self.replica.version, ev.version if ev is not None else 0)
        if self._cache_version == version:
            return
        counts: dict[str, dict[Any, list[int]]] = {}
        unfounded = 0
        for (task, peer), (order, engine, ok) in sorted(self._judged.items(), key=lambda x: (x[1][0][0], x[0][0].raw)):
            if ev is not None and not ev.ran(task, peer):
                unfounded += 1
                continue
            c = counts.setdefault(peer, {}).setdefault(engine, [0, 0, 0])
            if ok:
                c[0] += 1
                c[2] += 1
            else:
                c[1] += 1
                c[2] = 0
        self._scores = {p: {e: Score(*v) for e, v in per.items()} for p, per in counts.items()}
        self._banned = frozenset(
            p for p, per in self._scores.items() if sum(s.invalid for s in per.values()) >= self.options.ban_after
        )
        self._unfounded = unfounded
        self._cache_version = version

    def banned(self, peer: str) -> bool:
        self._compute()
        return peer in self._banned

    def banned_peers(self) -> frozenset[str]:
        self._compute()
        return self._banned

    def trusted(self, peer: str, engine: CID | None) -> bool:
        self._compute()
        if peer in self._banned:
            return False
        s = self._scores.get(peer, {}).get(engine)
        return s is not None and s.streak >= self.options.trust_after

    def score(self, peer: str, engine: CID | None) -> Score:
        self._compute()
        return self._scores.get(peer, {}).get(engine, Score())

    def scores(self) -> dict[str, dict[Any, Score]]:
        self._compute()
        return self._scores

    def judged(self, task: CID, peer: str) -> bool:
        """Whether some verdict already judged ``peer``'s result for ``task``."""
        self.sync()
        return (task, peer) in self._judged

    def verdict(self, task: CID) -> dict[str, Any] | None:
        self.sync()
        cur = self._by_task.get(task)
        return None if cur is None else cur[1]

    @property
    def rejected(self) -> int:
        """Forged verdicts (malformed or badly signed) from verifiers."""
        self.sync()
        return self._rejected

    def statistics(self) -> TrustStatistics:
        self._compute()
        return TrustStatistics(self._counted, self._rejected, self._ignored, self._unfounded)
