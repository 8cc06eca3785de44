"""Engine authorization is decided before anything is fetched, and missing
signature blocks are ignored.

A signature CID in the engines registry is just a link anyone can add.  If
the host asked for missing signature blocks before refusing, a bogus CID that
nobody serves would make every attempt on every node wait for a fetch (15 s
in the runner) and fail.  And an engine that is not authorized must not make
the node fetch its manifest and files at all.  So the host decides on the
allow-list and the signatures already in its store, first; a refusal is an
immediate ``not authorized`` outcome, never ``EngineMissing`` (except for an
engine the node knows nothing of yet: no registry entry and no manifest).
"""

from __future__ import annotations

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engines import (AuthPolicy, EngineHost, EngineMissing, HostOptions, public_key_bytes, publish_native,
                     publish_signature)
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, DAG_CBOR

ENGINE = """\
import json, sys
json.dump({"ran": True}, sys.stdout)
"""
PUBLISHER = Ed25519PrivateKey.generate()
BOGUS = CID.for_block(DAG_CBOR, b"a signature nobody serves")


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "engine.py"
    path.write_text(ENGINE)
    return path


async def _host(nursery, store, policy) -> EngineHost:
    return await nursery.start(EngineHost(store, HostOptions(), policy).serve)


async def test_missing_signatures_are_ignored_not_fetched(engine_file):
    store = MemoryBlockStore()
    cid = publish_native(store, engine_file, "e", interpreter="python3")
    trusted = AuthPolicy(trusted_publishers=frozenset({public_key_bytes(PUBLISHER)}))
    async with trio.open_nursery() as nursery:
        host = await _host(nursery, store, trusted)
        with trio.fail_after(5):
            outcome = await host.run(cid, {}, signatures=[BOGUS])
        assert not outcome.ok
        assert outcome.error.startswith(f"not authorized: engine {cid}")
        assert "1 signature block(s) not in the store, ignored" in outcome.error
        assert host.statistics().refused == 1
        # The trusted signature, once here, authorizes; the bogus CID beside it changes nothing.
        sig = publish_signature(store, cid, PUBLISHER)
        outcome = await host.run(cid, {}, signatures=[BOGUS, sig])
        assert outcome.ok, outcome
        nursery.cancel_scope.cancel()


async def test_an_unauthorized_engine_is_refused_before_its_blocks_are_wanted():
    store = MemoryBlockStore()
    absent = CID.for_block(DAG_CBOR, b"a manifest this node does not hold")
    async with trio.open_nursery() as nursery:
        host = await _host(nursery, store, AuthPolicy())
        outcome = await host.run(absent, {}, signatures=[BOGUS])
        assert not outcome.ok and outcome.error.startswith("not authorized")
        # An engine this node knows nothing of (no registry entry, no manifest)
        # is fetched first: its registry entry may still be on its way.
        with pytest.raises(EngineMissing) as info:
            await host.run(absent, {}, signatures=[])
        assert info.value.missing == [absent]
        # An authorized one whose manifest is absent is fetched as before.
        allowed = await _host(nursery, store, AuthPolicy(allow_cids=frozenset({absent})))
        with pytest.raises(EngineMissing) as info:
            await allowed.run(absent, {}, signatures=[BOGUS])
        assert info.value.missing == [absent]
        nursery.cancel_scope.cancel()
