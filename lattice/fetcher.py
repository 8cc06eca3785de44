"""One block fetcher: which peer to ask for which CIDs, and when to ask again.

Nothing here does I/O.  The driver tells the :class:`Fetcher` what it wants
(:meth:`Fetcher.want`), who may have it (:meth:`Fetcher.add_provider`,
:meth:`Fetcher.add_peers`), and what happened to each ask
(:meth:`Fetcher.on_answer`, :meth:`Fetcher.on_failure`); it gets back
:class:`Ask` records from :meth:`Fetcher.plan` and :meth:`Fetcher.tick`, and
turns each into one ``hpcp/want`` request.  Time is passed in as ``now``.

The fetcher never holds blocks.  Whether a block is here is decided by the
``has`` callable it is built with (the store, or a replica's "known" test),
so a block that arrives along another path (an ancestor sent along, another
object's fetch, a local write) ends its want without the fetcher being told.

Rules, gathered from the paths that fetched blocks before (HPCP's syncer and
the daemon's linked-block prefetch):

* Wanted CIDs are asked in batches of at most ``batch`` per peer, with at
  most ``max_inflight`` asks outstanding over all peers.
* A hint (for example "the runner that wrote this output") is a provider that
  is asked first.  Otherwise the least-loaded ready provider is asked.
* A peer that answers that it lacks a CID stops being a provider of it.  A
  block that arrived but is still not present (``has`` says no: the driver
  refused it as invalid) also drops that peer as its provider.
* An ask that is not answered within ``want_timeout_s`` is retried, from
  another provider when there is one; the first stays as a fallback, since a
  lost message is not a dead peer.
* A peer the transport could not reach is backed off exponentially
  (``backoff_base_s`` doubling up to ``backoff_cap_s``); any answer from it
  resets that.
* An answer that leaves out CIDs it was asked for (answers are size-limited)
  releases them at once, so they are asked again without waiting for the
  timeout.
* A CID whose providers are all gone is stuck until :meth:`Fetcher.add_peers`
  names peers that may hold it (a peer that announces heads we lack holds
  their whole history).
* With ``max_attempts`` set, a CID is abandoned after that many asks for it
  ended without it; by default it is wanted until it arrives.

Several consumers may share one fetcher (one backoff table, one in-flight
limit for a node): each passes its own ``owner`` to :meth:`Fetcher.want`, and
plans and drains only its own CIDs, because only it can use the blocks.

A driver loop, runnable as is::

    from lattice.fetcher import Fetcher
    from lattice import codec
    blocks = {codec.cid_of({"n": i}): b"" for i in range(3)}
    store = {}
    f = Fetcher(store.__contains__)
    f.want(list(blocks), "peer-a", now=0.0)
    for ask in f.plan(now=0.0):
        store.update((c, blocks[c]) for c in ask.cids)  # "send" the want, get the blocks
        f.on_answer(ask.id, got=ask.cids, missing=(), now=0.1)
    assert f.take_finished().done == tuple(blocks)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from .cid import CID

__all__ = ["Ask", "FetchOptions", "FetchStatistics", "Fetcher", "Finished"]


class _All:
    """Sentinel: every owner (the default filter of plan and friends)."""

    def __repr__(self) -> str:
        return "ALL"


#: Pass as ``owner`` to act on the CIDs of every owner (the default).
ALL: Hashable = _All()


@dataclass(frozen=True)
class FetchOptions:
    """Options of the fetcher; validated once, here.

    Attributes:
        batch: Most CIDs in one ask (default 256).
        max_inflight: Most asks outstanding at once, over all peers (8).
        want_timeout_s: Seconds before an unanswered ask is retried (5.0).
        backoff_base_s: Backoff after a peer's first failure; it doubles with
            each further failure (0.5).
        backoff_cap_s: Longest backoff of one peer (30.0).
        max_attempts: Asks for one CID that may end without it before the CID
            is abandoned; None wants it until it arrives (default None).
    """

    batch: int = 256
    max_inflight: int = 8
    want_timeout_s: float = 5.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_inflight < 1:
            raise ValueError("batch and max_inflight must be >= 1")
        if self.want_timeout_s <= 0:
            raise ValueError("want_timeout_s must be > 0")
        if self.backoff_base_s <= 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_cap_s")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be None or >= 1")


@dataclass(frozen=True, slots=True)
class Ask:
    """One request to send: ask ``peer`` for ``cids`` (one ``hpcp/want``).

    ``id`` names the ask in :meth:`Fetcher.on_answer`/:meth:`Fetcher.on_failure`
    when the driver can match answers to requests; ``deadline`` is when
    :meth:`Fetcher.tick` gives up on it.
    """

    id: int
    peer: str
    cids: tuple[CID, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class Finished:
    """Wants that ended since the last :meth:`Fetcher.take_finished`."""

    done: tuple[CID, ...] = ()
    abandoned: tuple[CID, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchStatistics:
    """Counters of one fetcher (totals since it was built, except the first three)."""

    wanted: int
    stuck: int  # wanted CIDs with no provider left
    inflight: int  # asks outstanding
    asks: int
    answers: int
    blocks: int  # wanted blocks that arrived and were kept
    bad_blocks: int  # blocks that arrived but the driver refused
    missing: int  # CIDs a peer said it lacks
    timeouts: int  # asks that expired
    failures: int  # asks the transport could not deliver
    done: int
    abandoned: int


@dataclass(slots=True)
class _Want:
    owner: Hashable
    providers: set[str] = field(default_factory=set)
    hint: str | None = None
    ask: int | None = None  # the outstanding ask carrying this CID
    attempts: int = 0


@dataclass(slots=True)
class _AskState:
    peer: str
    cids: set[CID]
    deadline: float


class Fetcher:
    """Providers, hints, backoff and in-flight state of block fetching.

    Args:
        has: True when a block is present (the driver's store decides, so the
            fetcher never stores blocks itself).
        options: See :class:`FetchOptions`.
    """

    def __init__(self, has: Callable[[CID], bool], options: FetchOptions | None = None) -> None:
        self.has = has
        self.options = options or FetchOptions()
        self._wanted: dict[CID, _Want] = {}  # insertion order is asking order
        self._asks: dict[int, _AskState] = {}
        self._next_id = 1
        self._failures: dict[str, int] = {}  # peer -> failures since its last answer
        self._backoff: dict[str, float] = {}  # peer -> time before which it is not asked
        self._finished: dict[CID, tuple[Hashable, bool]] = {}  # cid -> (owner, done)
        self._counts = dict.fromkeys(
            ("asks", "answers", "blocks", "bad_blocks", "missing", "timeouts", "failures", "done", "abandoned"), 0
        )

    # -- what we want, from whom ----------------------------------------------------

    def want(self, cids: Iterable[CID], hint: str | None, now: float, *, owner: Hashable = None) -> None:
        """Want ``cids`` until they are present (or abandoned).

        Args:
            cids: Blocks to fetch; present ones are ignored.
            hint: A peer that should hold them, asked first; it also becomes
                a provider.  A CID keeps the first hint it was given (until
                that peer fails it).
            now: The current time (unused today; kept so every entry point
                takes the clock the same way).
            owner: Who consumes these blocks when the fetcher is shared; a
                CID already wanted keeps its first owner.
        """
        del now
        for cid in cids:
            w = self._wanted.get(cid)
            if w is None:
                if self.has(cid):
                    continue
                w = self._wanted[cid] = _Want(owner)
            if hint is not None:
                w.providers.add(hint)
                if w.hint is None:
                    w.hint = hint

    def abandon(self, cids: Iterable[CID]) -> None:
        """Stop wanting ``cids`` (a consumer's own retry limit): they end as abandoned.

        An ask still carrying one is left to finish; its answer is then
        unsolicited for that CID.
        """
        for cid in cids:
            w = self._wanted.get(cid)
            if w is not None:
                if w.ask is not None:
                    self._unask(cid, w)
                self._finish(cid, False)

    def add_provider(self, cid: CID, peer: str) -> None:
        """``peer`` holds ``cid``; ignored unless ``cid`` is wanted."""
        w = self._wanted.get(cid)
        if w is not None:
            w.providers.add(peer)

    def add_peers(self, peers: Iterable[str], *, owner: Hashable = ALL) -> None:
        """Offer ``peers`` as providers of every stuck CID (one with no provider left).

        Call it when peers show they hold much, e.g. when one announces heads
        we lack: it then holds their whole history.  Wanted CIDs that still
        have a provider are left alone, so hints keep their meaning.
        """
        peers = list(peers)
        for w in self._wanted.values():
            if not w.providers and (owner is ALL or w.owner == owner):
                w.providers.update(peers)

    def is_wanted(self, cid: CID, *, owner: Hashable = ALL) -> bool:
        w = self._wanted.get(cid)
        return w is not None and (owner is ALL or w.owner == owner)

    def stuck(self, *, owner: Hashable = ALL) -> list[CID]:
        """Wanted CIDs of ``owner`` that have no provider left."""
        return [c for c, w in self._wanted.items() if not w.providers and (owner is ALL or w.owner == owner)]

    def owner_of(self, cid: CID) -> Hashable | None:
        """The owner of a wanted ``cid``, or None when it is not wanted."""
        w = self._wanted.get(cid)
        return w.owner if w is not None else None

    def count_wanted(self, *, owner: Hashable = ALL) -> int:
        if owner is ALL:
            return len(self._wanted)
        # list(): a C-level copy, so a reader on another thread never sees the dict change size.
        return sum(1 for w in list(self._wanted.values()) if w.owner == owner)

    def take_finished(self, *, owner: Hashable = ALL) -> Finished:
        """The wants of ``owner`` that ended since the last call (and forget them).

        Ended wants are kept until taken, so a driver should drain them even
        when it does not care (the store already shows what arrived).
        """
        done: list[CID] = []
        abandoned: list[CID] = []
        for cid, (o, ok) in list(self._finished.items()):
            if owner is ALL or o == owner:
                (done if ok else abandoned).append(cid)
                del self._finished[cid]
        return Finished(tuple(done), tuple(abandoned))

    def statistics(self) -> FetchStatistics:
        return FetchStatistics(
            wanted=len(self._wanted),
            stuck=sum(1 for w in self._wanted.values() if not w.providers),
            inflight=len(self._asks),
            **self._counts,
        )

    # -- what happened ---------------------------------------------------------------

    def on_answer(self, source: int | str, got: Iterable[CID], missing: Iterable[CID], now: float) -> None:
        """An answer arrived: ``got`` blocks were handed to the driver, ``missing`` are lacking.

        Args:
            source: The ask id, or the peer when the driver cannot match answers
                to asks (HPCP's answer carries no id): then every ask to that peer
                that the answer mentions counts as answered.  A late answer (its
                ask already timed out) still ends the wants it brings.
            got: CIDs whose blocks the answer carried and the driver took (stored
                or refused); presence is then checked with ``has``.
            missing: CIDs the peer says it does not have.
            now: The current time.
        """
        del now
        got, missing = list(got), list(missing)
        peer, asks = self._resolve(source, set(got) | set(missing))
        self._counts["answers"] += 1
        # Any answer shows the peer is reachable again.
        self._failures.pop(peer, None)
        self._backoff.pop(peer, None)
        answered = set(got) | set(missing)
        for ask_id in asks:
            ask = self._asks.pop(ask_id)
            # CIDs asked for but neither sent nor reported missing were left
            # out for size: release them so the next plan asks again at once.
            for cid in ask.cids - answered:
                self._release(cid, ask_id)
        for cid in missing:
            w = self._wanted.get(cid)
            if w is None or w.ask not in asks:
                continue  # not asked of this peer: a stale or unsolicited report
            self._counts["missing"] += 1
            w.ask = None
            self._drop_provider(w, peer)
            self._attempt_failed(cid, w)
        for cid in got:
            w = self._wanted.get(cid)
            if w is None:
                continue  # unsolicited or duplicate
            if w.ask is not None:
                self._unask(cid, w)
            if self.has(cid):
                self._counts["blocks"] += 1
                self._finish(cid, True)
            else:
                # The driver refused the block: this peer cannot serve it.
                self._counts["bad_blocks"] += 1
                self._drop_provider(w, peer)
                self._attempt_failed(cid, w)

    def on_failure(self, source: int | str, now: float) -> None:
        """The transport could not deliver an ask (unreachable, reset): re-plan elsewhere.

        The peer stays a provider only where it is the only one (it may come
        back), and it is backed off exponentially so that an unreachable sole
        provider is not asked again in a tight loop.
        """
        peer, asks = self._resolve(source, None)
        for ask_id in asks:
            self._counts["failures"] += 1
            for cid in self._asks.pop(ask_id).cids:
                w = self._release(cid, ask_id)
                if w is not None:
                    self._rotate(w, peer)
                    self._attempt_failed(cid, w)
        n = self._failures.get(peer, 0) + 1
        self._failures[peer] = n
        o = self.options
        self._backoff[peer] = now + min(o.backoff_cap_s, o.backoff_base_s * 2 ** min(n - 1, 32))

    def tick(self, now: float, *, owner: Hashable = ALL) -> list[Ask]:
        """Expire asks past their deadline, then :meth:`plan`; call it periodically.

        A timed-out CID is asked of another provider when there is one, but
        the silent peer stays a fallback and is not backed off: on a lossy
        network a lost message is far likelier than a dead peer, and the
        timeout already waited.
        """
        for ask_id in [a for a, s in self._asks.items() if s.deadline <= now]:
            ask = self._asks.pop(ask_id)
            self._counts["timeouts"] += 1
            for cid in ask.cids:
                w = self._release(cid, ask_id)
                if w is not None:
                    self._rotate(w, ask.peer)
                    self._attempt_failed(cid, w)
        return self.plan(now, owner=owner)

    def plan(self, now: float, *, owner: Hashable = ALL) -> list[Ask]:
        """The asks to send now; each becomes one ``hpcp/want`` to ``ask.peer``.

        Args:
            now: The current time.
            owner: Plan only this owner's CIDs (a shared fetcher); in-flight
                limits and backoff still count every owner's asks.
        """
        # Wants satisfied along another path end here.
        for cid in [c for c in self._wanted if self.has(c)]:
            w = self._wanted[cid]
            if w.ask is not None:
                self._unask(cid, w)
            self._finish(cid, True)
        outstanding = len(self._asks)
        if outstanding >= self.options.max_inflight:
            return []
        by_peer: dict[str, list[CID]] = {}
        for cid, w in self._wanted.items():
            if w.ask is not None or not w.providers or (owner is not ALL and w.owner != owner):
                continue
            ready = [p for p in w.providers if self._backoff.get(p, 0.0) <= now]
            if not ready:
                continue  # every provider is backing off; tick() plans again later
            if w.hint in ready:
                peer = w.hint
            else:
                peer = min(ready, key=lambda p: (len(by_peer.get(p, ())), p))
            lst = by_peer.setdefault(peer, [])
            if len(lst) < self.options.batch:
                lst.append(cid)
        out: list[Ask] = []
        deadline = now + self.options.want_timeout_s
        for peer in sorted(by_peer, key=lambda p: -len(by_peer[p])):
            if outstanding >= self.options.max_inflight:
                break
            cids = by_peer[peer]
            ask_id = self._next_id
            self._next_id += 1
            self._asks[ask_id] = _AskState(peer, set(cids), deadline)
            for c in cids:
                self._wanted[c].ask = ask_id
            outstanding += 1
            self._counts["asks"] += 1
            out.append(Ask(ask_id, peer, tuple(cids), deadline))
        return out

    # -- internals ------------------------------------------------------------------

    def _resolve(self, source: int | str, mentioned: set[CID] | None) -> tuple[str, list[int]]:
        """The peer and the outstanding asks that ``source`` refers to."""
        if isinstance(source, int):
            ask = self._asks.get(source)
            return (ask.peer if ask else ""), ([source] if ask else [])
        asks = [
            a for a, s in self._asks.items()
            if s.peer == source and (mentioned is None or not s.cids.isdisjoint(mentioned))
        ]
        return source, asks

    def _release(self, cid: CID, ask_id: int) -> _Want | None:
        """Mark ``cid`` no longer in flight under ``ask_id``; its want, if still wanted."""
        w = self._wanted.get(cid)
        if w is None or w.ask != ask_id:
            return None
        w.ask = None
        return w

    def _unask(self, cid: CID, w: _Want) -> None:
        """Take ``cid`` out of its outstanding ask (it arrived along another way)."""
        ask = self._asks.get(w.ask) if w.ask is not None else None
        if ask is not None:
            ask.cids.discard(cid)
            if not ask.cids:
                del self._asks[w.ask]  # type: ignore[arg-type]
        w.ask = None

    def _drop_provider(self, w: _Want, peer: str) -> None:
        w.providers.discard(peer)
        if w.hint == peer:
            w.hint = None

    def _rotate(self, w: _Want, peer: str) -> None:
        """Prefer another provider next time, keeping ``peer`` as the last resort."""
        if w.hint == peer:
            w.hint = None
        if len(w.providers) > 1:
            w.providers.discard(peer)

    def _attempt_failed(self, cid: CID, w: _Want) -> None:
        w.attempts += 1
        limit = self.options.max_attempts
        if limit is not None and w.attempts >= limit:
            self._finish(cid, False)

    def _finish(self, cid: CID, done: bool) -> None:
        w = self._wanted.pop(cid)
        self._finished[cid] = (w.owner, done)
        self._counts["done" if done else "abandoned"] += 1
