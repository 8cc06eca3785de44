"""Two objects' syncers on one node share one fetcher (one in-flight limit,
one backoff table) and still each fetch only their own deltas."""

from __future__ import annotations

import random

import pytest

from lattice import codec, goho, hpcp, queue, records, signing
from lattice.blockstore import MemoryBlockStore
from lattice.fetcher import Fetcher, FetchOptions


def _node(seed: int, genesises):
    store = MemoryBlockStore()
    # A replica stores every delta it accepts, so the node's store tells
    # whether any object's block is here.
    fetcher = Fetcher(store.has, FetchOptions(batch=4, max_inflight=2, want_timeout_s=1.0, backoff_cap_s=1.0))
    signer = signing.Signer.from_seed(bytes([seed]) * 32)
    reps = {g: goho.Replica.empty(g, store) for g in genesises}
    syncers = {g: hpcp.Syncer(r, signer, hpcp.SyncOptions(batch=4, want_timeout_s=1.0), fetcher=fetcher)
               for g, r in reps.items()}
    return signer, reps, syncers, fetcher


@pytest.mark.parametrize("seed", [1, 2])
def test_two_objects_converge_through_a_shared_fetcher_on_a_lossy_net(seed: int) -> None:
    rng = random.Random(seed)
    gq = records.make_genesis("queue", f"shared{seed}")[0]
    gr = records.make_genesis("results", f"shared{seed}")[0]
    nodes = {name: _node(i + 1, (gq, gr)) for i, name in enumerate("ab")}
    sa, reps_a, _, _ = nodes["a"]
    for i in range(20):
        for g in (gq, gr):
            reps_a[g].update(queue.enqueue_ops([codec.cid_of({"t": i, "g": str(g)})]), sa)
    inbox: list[tuple[str, str, object, bytes]] = []  # (src, dst, genesis, data)

    def send(src: str, g, outs) -> None:
        for o in outs:
            for dst in [o.to] if o.to is not None else [n for n in nodes if n != src]:
                if rng.random() < 0.2:
                    continue  # dropped
                for _ in range(2 if rng.random() < 0.1 else 1):
                    inbox.insert(rng.randint(0, len(inbox)), (src, dst, g, o.data))  # reordered

    now = 0.0
    for step in range(3000):
        if all(nodes["b"][1][g].heads == reps_a[g].heads for g in (gq, gr)):
            break
        if step % 20 == 0:
            for name, (_, _, syncers, _) in nodes.items():
                for g, s in syncers.items():
                    send(name, g, [hpcp.Outgoing(None, s.announce(now))])
        now += 0.1
        batch, inbox[:] = list(inbox), []
        for src, dst, g, data in batch:
            send(dst, g, nodes[dst][2][g].receive_untrusted(src, data, now))
        for name, (_, _, syncers, fetcher) in nodes.items():
            for g, s in syncers.items():
                outs = s.tick(now)
                # Every ask a syncer sends carries only its own object's deltas.
                for o in outs:
                    cids = codec.decode_trusted(o.data)["cids"]
                    assert all(fetcher.is_wanted(c, owner=g) for c in cids)
                send(name, g, outs)
            assert fetcher.statistics().inflight <= 2
    _, reps_b, syncers_b, fetcher_b = nodes["b"]
    for g in (gq, gr):
        assert reps_b[g].heads == reps_a[g].heads
        assert reps_b[g].state.count("available") == 20
        assert not syncers_b[g].syncing
    assert fetcher_b.statistics().done > 0
