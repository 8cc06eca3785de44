"""Only engines signed by a trusted publisher or allow-listed run; refused ones never start."""

from __future__ import annotations

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engines import (AuthPolicy, EngineHost, EngineMissing, EngineNotAuthorized, EngineSignature, HostOptions,
                     authorize, public_key_bytes, publish_native, publish_signature, sign_manifest)
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID, DAG_CBOR

# Whether it ran shows in its output and the host's counters (a jailed
# engine cannot leave a file behind on the host to prove it).
MARKER_ENGINE = """\
import json, sys
task = json.load(sys.stdin)
json.dump({"ran": True}, sys.stdout)
"""

ENGINE = CID.for_block(DAG_CBOR, b"engine")
PUBLISHER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def policy(**kw) -> AuthPolicy:
    return AuthPolicy(trusted_publishers=frozenset({public_key_bytes(PUBLISHER)}), **kw)


def test_allow_listed_engine_is_authorized_without_signature():
    assert authorize(ENGINE, [], policy(allow_cids=frozenset({ENGINE}))).basis == "allow-list"


def test_trusted_signature_authorizes():
    auth = authorize(ENGINE, [sign_manifest(ENGINE, PUBLISHER)], policy())
    assert auth.basis == "signed" and auth.publisher == public_key_bytes(PUBLISHER)


@pytest.mark.parametrize("case, detail", [
    ("unsigned", "no signatures offered"),
    ("untrusted key", "untrusted publishers"),
    ("forged", "failed to verify"),
    ("other engine", "other engines"),
])
def test_refusals_name_the_engine_and_the_reason(case, detail):
    sigs = {
        "unsigned": [],
        "untrusted key": [sign_manifest(ENGINE, STRANGER)],
        # The stranger's signature relabelled as the trusted publisher's.
        "forged": [EngineSignature(ENGINE, public_key_bytes(PUBLISHER), sign_manifest(ENGINE, STRANGER).sig)],
        "other engine": [sign_manifest(CID.for_block(DAG_CBOR, b"other"), PUBLISHER)],
    }[case]
    with pytest.raises(EngineNotAuthorized) as info:
        authorize(ENGINE, sigs, policy())
    message = str(info.value)
    assert f"engine {ENGINE} is not signed by a trusted publisher and not on the allow-list" in message
    assert detail in message


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "marker_engine.py"
    path.write_text(MARKER_ENGINE)
    return path


async def start_host(nursery, store, pol) -> EngineHost:
    return await nursery.start(EngineHost(store, HostOptions(), pol).serve)


@pytest.mark.parametrize("case", ["unsigned", "untrusted key", "forged"])
async def test_refused_engine_never_runs(case, engine_file, tmp_path):
    store = MemoryBlockStore()
    cid = publish_native(store, engine_file, "marker", interpreter="python3")
    marker = tmp_path / "marker"
    sigs = {
        "unsigned": [],
        "untrusted key": [publish_signature(store, cid, STRANGER)],
        "forged": [EngineSignature(cid, public_key_bytes(PUBLISHER), sign_manifest(cid, STRANGER).sig)],
    }[case]
    async with trio.open_nursery() as nursery:
        host = await start_host(nursery, store, policy())
        outcome = await host.run(cid, {"marker": str(marker)}, signatures=sigs)
        assert not outcome.ok
        assert outcome.error.startswith(f"not authorized: engine {cid} is not signed by a trusted publisher")
        stats = host.statistics()
        assert stats.refused == 1 and stats.cold == 0 and host.native.statistics().runs == 0
        nursery.cancel_scope.cancel()


async def test_signed_engine_runs_with_signature_record_or_its_cid(engine_file, tmp_path):
    store = MemoryBlockStore()
    cid = publish_native(store, engine_file, "marker", interpreter="python3")
    sig_cid = publish_signature(store, cid, PUBLISHER)
    async with trio.open_nursery() as nursery:
        host = await start_host(nursery, store, policy())
        for i, sigs in enumerate([[sig_cid], [sign_manifest(cid, PUBLISHER)]]):
            marker = tmp_path / f"marker{i}"
            outcome = await host.run(cid, {"marker": str(marker)}, signatures=sigs)
            assert outcome.ok, outcome
            assert outcome.output == {"ran": True} and host.native.statistics().ok == i + 1
        nursery.cancel_scope.cancel()


async def test_allow_listed_engine_runs(engine_file, tmp_path):
    store = MemoryBlockStore()
    cid = publish_native(store, engine_file, "marker", interpreter="python3")
    async with trio.open_nursery() as nursery:
        host = await start_host(nursery, store, AuthPolicy(allow_cids=frozenset({cid})))
        outcome = await host.run(cid, {"marker": str(tmp_path / "m")})
        assert outcome.ok and outcome.runner == "native-cold"
        nursery.cancel_scope.cancel()


async def test_missing_manifest_or_chunks_raise_engine_missing(tmp_path):
    big = tmp_path / "big.py"
    big.write_text(MARKER_ENGINE + "#" + "x" * 600_000 + "\n")  # > one 256 KiB chunk
    store = MemoryBlockStore()
    cid = publish_native(store, big, "big", interpreter="python3")
    sig_cid = publish_signature(store, cid, PUBLISHER)
    async with trio.open_nursery() as nursery:
        host = await start_host(nursery, store, policy())
        absent = CID.for_block(DAG_CBOR, b"absent")
        allowed = await start_host(nursery, store, AuthPolicy(allow_cids=frozenset({absent})))
        with pytest.raises(EngineMissing) as info:
            await allowed.run(absent, {})
        assert info.value.missing == [absent]

        chunks = [c for c in store.cids() if c.codec == 0x55]
        store.delete(chunks[-1])
        with pytest.raises(EngineMissing) as info:
            await host.run(cid, {"marker": str(tmp_path / "m")}, signatures=[sig_cid])
        assert info.value.missing == [chunks[-1]]

        store.delete(sig_cid)
        # A host caches granted authorizations, so ask a fresh one: a missing
        # signature block is ignored (see test_engine_authorization_comes_before_any_fetch).
        fresh = await start_host(nursery, store, policy())
        outcome = await fresh.run(cid, {}, signatures=[sig_cid])
        assert not outcome.ok and outcome.error.startswith("not authorized")
        nursery.cancel_scope.cancel()



async def test_a_signature_block_nobody_has_does_not_hold_up_an_authorized_engine(engine_file, tmp_path):
    # The registry may name signature blocks this node lacks (another
    # publisher's, or a bogus CID): one trusted local signature, or the
    # allow-list, is enough; the missing ones are ignored.
    store = MemoryBlockStore()
    cid = publish_native(store, engine_file, "marker", interpreter="python3")
    sig_cid = publish_signature(store, cid, PUBLISHER)
    nobody_has = CID.for_block(DAG_CBOR, b"a signature nobody serves")
    async with trio.open_nursery() as nursery:
        host = await start_host(nursery, store, policy())
        outcome = await host.run(cid, {"marker": str(tmp_path / "m1")}, signatures=[nobody_has, sig_cid])
        assert outcome.ok, outcome
        allowed = await start_host(nursery, store, AuthPolicy(allow_cids=frozenset({cid})))
        outcome = await allowed.run(cid, {"marker": str(tmp_path / "m2")}, signatures=[nobody_has])
        assert outcome.ok, outcome
        untrusted = await start_host(nursery, store, AuthPolicy())
        outcome = await untrusted.run(cid, {}, signatures=[sig_cid, nobody_has])  # refused at once
        assert not outcome.ok and outcome.error.startswith("not authorized")
        nursery.cancel_scope.cancel()
