"""A commit that may wait (a lease renewal) rides in the next commit of its object.

A runner's renewal of the task that just started and the completion of the
task that freed its slot are made milliseconds apart; each used to be its own
signed delta, gossiped to and applied by every member.  ``defer_s`` lets the
renewal wait that long for company: the next ordinary commit takes it along
and is flushed at once, and a renewal with no company is flushed alone when
``defer_s`` runs out.  Real time (worker threads and a virtual clock do not
mix), with deferrals long enough that the bounds are generous.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from lattice.diskstore import DiskBlockStore
from lattice.signing import Signer
from meshd.store.heads import HeadsStore
from meshd.store.objects import CommitOptions, Followed, ObjectHost

DEFER_S = 2.0


class CountingStore(DiskBlockStore):
    """The disk store, counting delta writes (``put``; linked blocks use ``put_many``)."""

    deltas = 0

    def put(self, cid, data) -> None:  # type: ignore[no-untyped-def]
        self.deltas += 1
        super().put(cid, data)


def _host(tmp_path: Path) -> tuple[ObjectHost, CountingStore, Followed]:
    """A host, its store (delta count at 0) and one followed object."""
    store = CountingStore.open(tmp_path / "blocks.db")
    heads = HeadsStore.open(tmp_path / "heads.db")
    host = ObjectHost(store, heads, Signer.from_seed(b"\x09" * 32), CommitOptions(window_s=0.002))
    obj = host.follow("queue", "m")
    store.deltas = 0
    return host, store, obj


async def test_a_deferred_commit_and_the_next_commit_share_one_delta_without_delaying_it(tmp_path: Path) -> None:
    host, store, obj = _host(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        renewed = trio.Event()

        async def renew() -> None:
            await host.commit(obj, [["add", "k", "renewal"]], defer_s=DEFER_S)
            renewed.set()

        nursery.start_soon(renew)
        await trio.sleep(0.05)
        assert not renewed.is_set() and store.deltas == 0  # waiting for company
        t0 = time.monotonic()
        await host.commit(obj, [["add", "k", "completion"]])
        elapsed = time.monotonic() - t0
        await renewed.wait()
        nursery.cancel_scope.cancel()
    assert elapsed < DEFER_S / 2  # the ordinary commit did not wait out the deferral
    assert store.deltas == 1  # one delta carried both
    assert len(obj.replica.heads) == 1


async def test_a_deferred_commit_with_no_company_is_flushed_when_its_deferral_ends(tmp_path: Path) -> None:
    host, store, obj = _host(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        t0 = time.monotonic()
        await host.commit(obj, [["add", "k", "renewal"]], defer_s=DEFER_S)
        elapsed = time.monotonic() - t0
        nursery.cancel_scope.cancel()
    assert DEFER_S * 0.9 <= elapsed < DEFER_S + 5
    assert store.deltas == 1


async def test_a_deferred_commit_is_flushed_at_shutdown(tmp_path: Path) -> None:
    host, store, obj = _host(tmp_path)
    done = trio.Event()
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            await nursery.start(host.serve)

            async def renew() -> None:
                with trio.CancelScope(shield=True):  # as the runner records: the caller outlives serve()
                    await host.commit(obj, [["add", "k", "renewal"]], defer_s=60.0)
                done.set()

            outer.start_soon(renew)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()  # serve() ends: its flushers flush what waits
        with trio.fail_after(10):
            await done.wait()
    assert store.deltas == 1
