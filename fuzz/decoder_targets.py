"""Fuzz targets for every ``_untrusted`` decoder, one per decoder, by name.

A target takes raw fuzzer bytes, turns them into what the decoder receives in
the daemon (bytes from a peer, text from a URL, JSON from the API, a value
decoded from a peer's DAG-CBOR block) and calls the decoder.  The decoder's
documented ``Bad*`` error is caught; anything else escapes, and the fuzzer
reports it as a crash.  Decoders documented as "never raises" (the HPCP
syncer, presence, the rules record) have nothing caught.

Nothing here imports a meshd package at module level: :meth:`Target.prepare`
imports what a target needs, so that ``fuzz_decoders.py`` can import it under
atheris's instrumentation, and so that ``--list`` stays fast.

Each target also provides seeds (valid and invalid inputs, and the crashes
found so far) for ``fuzz/corpus/<target>/``; ``fuzz_decoders.py
--write-seeds`` writes them.  The seeds are deterministic: keys come from
fixed seeds and times are constants.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The key of the (hostile) peer that signs seeds; a fixed seed keeps corpora stable.
_PEER_SEED = b"\x07" * 32
#: "Now" for the HPCP syncer: announcements in the seeds use seq values below it.
_NOW = 1_700_000_000.0


def _text(data: bytes) -> str:
    """The string a URL/JSON layer could hand over: UTF-8 when valid, else latin-1 (any code point < 256)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _Skip(Exception):
    """The fuzz input cannot reach the decoder (e.g. not JSON where the API parses JSON first)."""


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _Skip() from None


def _cbor(data: bytes) -> Any:
    from lattice import codec
    from lattice.errors import BadInput

    try:
        return codec.decode_untrusted(data)
    except BadInput:
        raise _Skip() from None


@dataclass
class Target:
    """One decoder under fuzzing.

    Attributes:
        name: Selects the target on the command line and names its corpus directory.
        decoder: The decoder's dotted name, for reports.
        build: Imports what the target needs and returns ``(run, allowed)``:
            ``run(data)`` calls the decoder; ``allowed`` is the tuple of
            exceptions it may raise (empty: it must never raise).
        seeds: Returns ``{file name: bytes}`` seed inputs.
    """

    name: str
    decoder: str
    build: Callable[[], tuple[Callable[[bytes], Any], tuple[type[BaseException], ...]]]
    seeds: Callable[[], dict[str, bytes]]
    _prepared: tuple[Callable[[bytes], Any], tuple[type[BaseException], ...]] | None = field(default=None, repr=False)

    def prepare(self) -> None:
        """Import the decoder and build fixtures (call under instrumentation to fuzz)."""
        if self._prepared is None:
            self._prepared = self.build()

    def __call__(self, data: bytes) -> None:
        """Run one input; raises only when the decoder raised something it must not."""
        self.prepare()
        assert self._prepared is not None
        run, allowed = self._prepared
        try:
            run(data)
        except _Skip:
            pass
        except allowed:
            pass


# ----------------------------------------------------------------- shared fixtures


class _Fixtures:
    """Valid records signed by the fixed peer key (built on first use)."""

    def __init__(self) -> None:
        from lattice import codec, hpcp, records, signing
        from lattice.cid import DAG_CBOR, RAW, CID

        self.signer = signer = signing.Signer.from_seed(_PEER_SEED)
        self.genesis, self.genesis_block = records.make_genesis("queue", "fuzz")
        self.delta_cid, self.delta = records.sign_delta(signer, self.genesis, [], 1, [["add", "available", 1]])
        self.delta2_cid, self.delta2 = records.sign_delta(signer, self.genesis, [self.delta_cid], 2,
                                                          [["put", "k", {"x": [1, 2.5, "s", None]}]])
        self.part_cid, self.part = codec.encode_block({"t": "goho/part", "v": 1, "adds": [], "puts": []})
        self.snap_cid, self.snap = records.sign_snapshot(signer, self.genesis, [self.delta_cid], 1, [self.part_cid])
        self.announce = hpcp.encode_announce(signer, self.genesis, [self.delta2_cid], int(_NOW * 1000) - 5000)
        self.announce_snap = hpcp.encode_announce(signer, self.genesis, [self.delta2_cid], int(_NOW * 1000) - 4000,
                                                  self.snap_cid)
        self.query = hpcp.encode_query(self.genesis)
        self.want = hpcp.encode_want([self.delta_cid, self.delta2_cid])
        self.blocks = hpcp.encode_blocks([(self.delta_cid, self.delta), (self.delta2_cid, self.delta2)],
                                         [self.snap_cid])
        self.raw_cid = CID.for_block(RAW, b"file")
        self.dag_cid = CID.for_block(DAG_CBOR, b"\xa0")
        self.codec = codec
        self.CID = CID


_FIX: _Fixtures | None = None


def fx() -> _Fixtures:
    global _FIX
    if _FIX is None:
        _FIX = _Fixtures()
    return _FIX


def _cbor_seeds(**valid: bytes) -> dict[str, bytes]:
    """Valid seeds plus the generic hostile CBOR shapes every byte decoder gets."""
    import cbor2

    f = fx()
    return {
        **valid,
        "empty": b"",
        "ff": b"\xff",
        "zeros": b"\x00" * 64,
        "unsorted-keys": cbor2.dumps({"b": 1, "a": 2}),
        "float16": cbor2.dumps(1.5, canonical=True),
        "indefinite-array": b"\x9f\x01\xff",
        "non-minimal-int": b"\x18\x05",
        "link-without-prefix": cbor2.dumps(cbor2.CBORTag(42, b"\x01" + f.delta_cid.raw)),
        "link-dag-pb": cbor2.dumps(cbor2.CBORTag(42, b"\x00\x01\x70" + f.delta_cid.raw[2:])),
        "link-git-raw": cbor2.dumps(cbor2.CBORTag(42, b"\x00\x01\x78" + f.delta_cid.raw[2:])),
        "datetime-tag": cbor2.dumps(cbor2.CBORTag(1, 0)),
        "nan": cbor2.dumps(float("nan")),
        "too-deep": b"\x81" * 200 + b"\x00",
        "huge-length": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
        "truncated-delta": f.delta[:-1],
        "delta-trailing-byte": f.delta + b"\x00",
    }


def _json_seeds(**valid: Any) -> dict[str, bytes]:
    out = {k: json.dumps(v).encode() for k, v in valid.items()}
    out.update({"not-json": b"{", "null": b"null", "list": b"[1,2]", "string": b'"x"',
                "deep": b"[" * 5000 + b"]" * 5000, "big-int": b"1" + b"0" * 5000,
                "huge-float": b"1e999", "lone-surrogate": b'"\\ud800"'})
    return out


def _text_seeds(**valid: str) -> dict[str, bytes]:
    out = {k: v.encode() for k, v in valid.items()}
    out.update({"empty": b"", "one": b"b", "nul": b"b\x00", "latin1": b"z\xe9\xe9", "long": b"b" * 300,
                "non-ascii-base58": "zVl\u00a7\U000b0b8b".encode()})
    return out


# ----------------------------------------------------------------- lattice


def _codec_decode() -> tuple:
    from lattice import codec
    from lattice.errors import BadInput

    return (lambda d: codec.decode_untrusted(d)), (BadInput,)


def _cid_from_bytes() -> tuple:
    from lattice.cid import CID
    from lattice.errors import BadInput

    return (lambda d: CID.from_bytes_untrusted(d)), (BadInput,)


def _cid_parse() -> tuple:
    from lattice.cid import CID
    from lattice.errors import BadInput

    return (lambda d: CID.parse_untrusted(_text(d))), (BadInput,)


def _hashed(decoder: Callable[..., Any]) -> Callable[[bytes], Any]:
    """Call ``decoder(cid, data)`` with the CID of ``data`` (so decoding gets past the hash check)."""
    from lattice.cid import DAG_CBOR, CID

    return lambda d: decoder(CID.for_block(DAG_CBOR, d), d)


def _delta() -> tuple:
    from lattice import records
    from lattice.errors import BadInput

    return _hashed(records.delta_from_untrusted), (BadInput,)


def _snapshot() -> tuple:
    from lattice import records
    from lattice.errors import BadInput

    return _hashed(records.snapshot_from_untrusted), (BadInput,)


def _part() -> tuple:
    from lattice import records
    from lattice.errors import BadInput

    return _hashed(records.part_from_untrusted), (BadInput,)


def _record_type() -> tuple:
    from lattice import records
    from lattice.errors import BadInput

    return (lambda d: records.record_type_untrusted(d)), (BadInput,)


def _normalize_task() -> tuple:
    from lattice import codec, task
    from lattice.errors import BadInput

    return (lambda d: task.normalize_task_untrusted(codec.from_json(_json(d)))), (BadInput,)


def _task_from_json() -> tuple:
    from lattice import task
    from lattice.errors import BadInput

    return (lambda d: task.task_from_json_untrusted(_json(d))), (BadInput,)


def _task_block() -> tuple:
    from lattice import task
    from lattice.errors import BadInput

    return task.task_from_block_untrusted, (BadInput,)


def _definition_block() -> tuple:
    from lattice import task
    from lattice.errors import BadInput

    return task.definition_from_block_untrusted, (BadInput,)


def _hpcp_decode() -> tuple:
    from lattice import hpcp
    from lattice.errors import BadInput

    return (lambda d: hpcp.decode_message_untrusted(d)), (BadInput,)


def _hpcp_peek() -> tuple:
    from lattice import hpcp
    from lattice.errors import BadInput

    return (lambda d: hpcp.peek_genesis_untrusted(d)), (BadInput,)


def _follow_quota() -> tuple:
    from lattice import admission, hpcp
    from lattice.errors import BadInput

    quota = admission.FollowQuota(2, 4, hpcp.signed_announce_untrusted)

    def run(d: bytes) -> None:
        try:
            hpcp.signed_announce_untrusted(d)
        except BadInput:
            pass
        quota.admit_untrusted(d)  # documented: never raises

    return run, ()


def _hpcp_syncer() -> tuple:
    from lattice import blockstore, goho, hpcp, signing

    f = fx()
    me = signing.Signer.from_seed(b"\x01" * 32)

    def run(d: bytes) -> None:
        # A fresh replica per input keeps every run reproducible from its bytes.
        replica = goho.Replica.empty(f.genesis, blockstore.MemoryBlockStore())
        syncer = hpcp.Syncer(replica, me)
        syncer.receive_untrusted("peer", d, _NOW)
        syncer.tick(_NOW + 60)

    return run, ()  # documented: never raises


def _goho_receive() -> tuple:
    from lattice import blockstore, goho
    from lattice.errors import BadInput

    f = fx()

    def run(d: bytes) -> None:
        replica = goho.Replica.empty(f.genesis, blockstore.MemoryBlockStore())
        replica.receive_untrusted(f.delta_cid, f.delta)  # so children of the valid delta can apply
        _hashed(replica.receive_untrusted)(d)

    return run, (BadInput,)


def _hpcp_seeds() -> dict[str, bytes]:
    f = fx()
    c = f.codec
    announce = c.decode_untrusted(f.announce)
    forged = dict(announce, seq=announce["seq"] + 1)
    return _cbor_seeds(
        announce=f.announce, announce_snap=f.announce_snap, query=f.query, want=f.want, blocks=f.blocks,
        forged_announce=c.encode(forged),
        announce_v2=c.encode(dict(announce, v=2)),
        # Crash found by fuzzing: an unhashable author reached the replay table (TypeError).
        announce_list_author=c.encode(dict(announce, a=[1])),
        announce_map_author=c.encode(dict(announce, a={"x": 1})),
        announce_int_sig=c.encode(dict(announce, s=5)),
        want_not_links=c.encode({"t": "hpcp/want", "v": 1, "cids": ["notalink"]}),
        blocks_bad_entry=c.encode({"t": "hpcp/blocks", "v": 1, "blocks": [[1, b""]], "missing": []}),
        blocks_wrong_hash=c.encode({"t": "hpcp/blocks", "v": 1, "blocks": [[f.delta2_cid, f.delta]], "missing": []}),
        delta=f.delta,
    )


# ----------------------------------------------------------------- engines


def _manifest_seeds_records() -> dict[str, Any]:
    f = fx()
    native = {"t": "meshd/engine", "v": 1, "type": "bin-json-runner", "name": "echo",
              "platforms": {"linux-x86_64": {"file": f.raw_cid, "executable": "echo.py", "format": "exe"}},
              "protocol": "jsonl", "resources": {"cpu_s": 60, "memory_mb": 1024, "timeout_s": 60.0, "nofile": 256},
              "interpreter": "python3", "serve_args": ["--jsonl"]}
    docker = {"t": "meshd/engine", "v": 1, "type": "docker-json-runner", "name": "img",
              "image": {"tar": f.raw_cid, "id": "sha256:" + "ab" * 32, "tag": "x:1"}, "cmd": ["run"],
              "protocol": "json", "resources": {"cpu_s": 1, "memory_mb": 64, "timeout_s": 1.0, "nofile": 16}}
    return {
        "native": native, "docker": docker,
        "native-abs-executable": dict(native, platforms={"linux-x86_64": {"file": f.raw_cid, "executable": "/bin/sh",
                                                                          "format": "exe"}}),
        "docker-bad-id": dict(docker, image={"tar": f.raw_cid, "id": "latest"}),
        "negative-timeout": dict(native, resources={"timeout_s": -1.0}),
        "unknown-type": dict(native, type="wasm"),
        "v2": dict(native, v=2),
    }


def _manifest_record() -> tuple:
    from engines.errors import BadManifest
    from engines.manifest import manifest_from_record_untrusted

    return (lambda d: manifest_from_record_untrusted(_cbor(d))), (BadManifest,)


def _manifest_block() -> tuple:
    from engines.errors import BadManifest
    from engines.manifest import manifest_from_untrusted

    return (lambda d: manifest_from_untrusted(d)), (BadManifest,)


def _signature() -> tuple:
    from engines.errors import BadManifest
    from engines.manifest import signature_from_untrusted

    def run(d: bytes) -> None:
        signature_from_untrusted(d).verify()

    return run, (BadManifest,)


def _manifest_seeds() -> dict[str, bytes]:
    c = fx().codec
    return _cbor_seeds(**{k: c.encode(v) for k, v in _manifest_seeds_records().items()})


def _signature_seeds() -> dict[str, bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from engines.manifest import sign_manifest

    f = fx()
    key = Ed25519PrivateKey.from_private_bytes(_PEER_SEED)
    sig = sign_manifest(f.dag_cid, key)
    rec = sig.to_record()
    return _cbor_seeds(valid=sig.encode()[1],
                       short_key=f.codec.encode(dict(rec, publisher=b"\x01")),
                       sig_not_bytes=f.codec.encode(dict(rec, sig="x")),
                       engine_not_link=f.codec.encode(dict(rec, engine="b")))


# ----------------------------------------------------------------- conditions


def _condition() -> tuple:
    from conditions import ConditionError, parse_untrusted

    return (lambda d: parse_untrusted(_text(d))), (ConditionError,)


def _rule_json(f: _Fixtures) -> dict[str, Any]:
    return {"name": "r", "condition": f"exist(dataset(hpcp('{f.genesis}/split/results')))", "action": "map",
            "taskDefinition": {"/": str(f.delta_cid)},
            "source": {"dataset": {"/": str(f.genesis)}, "path": "split/results"},
            "result": {"action": "set", "destination": {"dataset": {"/": str(f.genesis)}, "path": "map/results"}}}


def _rule() -> tuple:
    from conditions import ConditionError
    from conditions.actions import Rule

    return (lambda d: Rule.from_json_untrusted(_json(d))), (ConditionError,)


def _rule_seeds() -> dict[str, bytes]:
    f = fx()
    rule = _rule_json(f)
    return _json_seeds(map=rule, enqueue=dict(rule, action="enqueue", input={"v": 1}),
                       reduce=dict(rule, action="reduce", split=rule["source"]),
                       bad_condition=dict(rule, condition="exist(("),
                       bad_link=dict(rule, taskDefinition={"/": "zé"}),
                       unknown_field=dict(rule, extra=1))


# ----------------------------------------------------------------- meshd


def _frame() -> tuple:
    from meshd.p2p.wire import BadFrame, decode_frame_untrusted

    def run(d: bytes) -> None:
        rest = d
        while rest:
            _, rest = decode_frame_untrusted(rest, 1 << 16)

    return run, (BadFrame,)


def _frame_reader() -> tuple:
    import trio

    from meshd.p2p.wire import BadFrame, FrameReader

    class Stream:
        """Hands out the input in chunks whose sizes come from the input itself."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, n: int) -> bytes:
            if not self.data:
                return b""
            size = max(1, min(n, self.data[0]))
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk

    async def frames(d: bytes) -> None:
        reader = FrameReader(Stream(d))
        for _ in range(64):
            await reader.read_frame_untrusted(1 << 16)

    return (lambda d: trio.run(frames, d)), (BadFrame,)


def _frame_seeds() -> dict[str, bytes]:
    from meshd.p2p.wire import encode_frame

    return {"one": encode_frame(b"hello"), "two": encode_frame(b"a") + encode_frame(b"b" * 300),
            "empty-frame": encode_frame(b""), "truncated": encode_frame(b"hello")[:-1],
            "overlong-varint": b"\xff" * 11, "non-minimal": b"\x80\x00", "too-big": b"\xff\xff\x7f",
            "empty": b""}


def _rules_record() -> tuple:
    from conditions import ConditionOptions

    from meshd.roles.jobs import rules_from_record_untrusted

    options = ConditionOptions()
    return (lambda d: rules_from_record_untrusted(_cbor(d), options)), ()  # documented: never raises


def _rules_record_seeds() -> dict[str, bytes]:
    from lattice import codec

    f = fx()
    rule = codec.from_json(_rule_json(f))
    rec = {"t": "meshd/rules", "v": 1, "rules": [{"rule": rule, "keyed": True}, {"rule": rule}]}
    return _cbor_seeds(valid=codec.encode(rec),
                       bad_entry=codec.encode(dict(rec, rules=[{"rule": 1}, "x", {"rule": rule, "keyed": 1}])),
                       keyed_enqueue=codec.encode(dict(rec, rules=[{"rule": dict(rule, action="enqueue",
                                                                                   input=1), "keyed": True}])),
                       v2=codec.encode(dict(rec, v=2)))


def _pipeline() -> tuple:
    from meshd.errors import ApiError
    from meshd.roles.jobs import Pipeline

    return (lambda d: Pipeline.from_json_untrusted(_json(d))), (ApiError,)


def _pipeline_seeds() -> dict[str, bytes]:
    from pathlib import Path

    out = {}
    examples = Path(__file__).resolve().parents[1] / "engines" / "examples" / "pipelines"
    for p in sorted(examples.glob("*.json")):
        out[p.stem] = p.read_bytes()
    out.update(_json_seeds(no_stages={"name": "x", "input": 1, "stages": []},
                           bad_name={"name": "../x", "input": 1, "stages": [{"name": "a"}]},
                           float_input={"input": 1.5, "stages": [{"name": "a", "engine_name": "e"}]}))
    return out


def _presence_peer() -> str:
    from lattice.signing import peer_id_of

    peer = peer_id_of(fx().signer.public)
    assert peer is not None
    return peer


def _presence() -> tuple:
    from lattice.peers import PeerTable

    peer = _presence_peer()

    def run(d: bytes) -> None:
        table = PeerTable("me")
        # The raw bytes, as a transport hands them over, and the decoded map, as the daemon's receive loop does.
        table.receive_presence_untrusted(peer, d, _NOW)
        obj = _cbor(d)
        table.receive_presence_untrusted(peer, obj, _NOW)
        json.dumps(table.peer_list(_NOW + 1))  # what GET /v1/peers serves must stay JSON
        json.dumps(table.rejected)

    return run, ()  # documented: malformed presence is counted, never raised


def _presence_seeds() -> dict[str, bytes]:
    f = fx()
    c = f.codec
    body = {"t": "meshd/presence", "v": 1, "peer": _presence_peer(), "roles": ["runner"], "inv": {"cpus": 2},
            "api": "", "seq": 5, "a": f.signer.public}
    signed = dict(body, s=f.signer.sign(c.encode(body)))
    binary = dict(body, inv={"k": b"\xff", "link": f.dag_cid}, api=b"\xff")
    binary["s"] = f.signer.sign(c.encode(binary))
    return _cbor_seeds(valid=c.encode(signed),
                       # Found while fuzzing: bytes in inv/api made GET /v1/peers fail to serialize (500).
                       binary_inventory=c.encode(binary),
                       # Crash found by fuzzing: a short key made peer_id_from_public_key raise IdentityError.
                       short_key=c.encode(dict(signed, a=b"\x01")),
                       str_key=c.encode(dict(signed, a="k" * 32)),
                       bad_sig=c.encode(dict(signed, s=b"\x00" * 64)),
                       seq_str=c.encode(dict(signed, seq="1")),
                       # links (membership): a signed presence whose links are not all peer ids.
                       hostile_links=c.encode(_resigned(f, dict(body, links=["p" * 200, 7, b"x", "", "ok"] * 40))))


def _resigned(f, body: dict) -> dict:
    return dict(body, s=f.signer.sign(f.codec.encode(body)))


def _mesh_core() -> tuple:
    import dataclasses

    from lattice import blockstore, goho, hpcp
    from lattice.errors import BadInput
    from lattice.meshcore import MeshCore, Request
    from lattice.signing import Signer, peer_id_of

    f = fx()
    me = Signer.from_seed(b"\x02" * 32)
    peer = _presence_peer()

    def run(d: bytes) -> None:
        # A fresh core per input (reproducible from its bytes) that follows the
        # fixtures' object and holds its first delta, so an announce, a query
        # or a want for it gets past the first checks.
        store = blockstore.MemoryBlockStore()
        store.put(f.genesis, f.genesis_block)
        store.put(f.delta_cid, f.delta)
        replica = goho.Replica.empty(f.genesis, store)
        replica.receive_untrusted(f.delta_cid, f.delta)
        core = MeshCore(peer_id_of(me.public) or "me", me, store, roles=["runner"], inventory={"cpus": 1})
        out = core.follow(replica, _NOW) + core.start(_NOW)
        # The two network entry points: gossip, and a block request to serve.
        out += core.receive(peer, d, _NOW)
        answer = core.serve(peer, d, _NOW)
        hpcp.decode_message_untrusted(answer, verify=False)  # what we serve is a valid hpcp/blocks
        # A hostile peer answers every request the input caused with the input itself.
        for o in out + core.tick(_NOW + 60):
            if isinstance(o, Request):
                core.on_response(o.ask_id, d, _NOW + 61)
        json.dumps(core.peer_list(_NOW + 62))  # GET /v1/peers must stay JSON
        json.dumps(dataclasses.asdict(core.statistics(_NOW + 62)), default=str)

    return run, (BadInput,)


def _mesh_core_seeds() -> dict[str, bytes]:
    f = fx()
    out = _hpcp_seeds()
    presence = _presence_seeds()
    out.update({f"presence_{k}": presence[k] for k in ("valid", "binary_inventory", "short_key", "bad_sig")})
    out["announce_unfollowed"] = f.codec.encode(dict(f.codec.decode_untrusted(f.announce), g=f.dag_cid))
    return out


def _mesh_secret() -> tuple:
    from meshd.p2p.secret import Sealer

    sealer = Sealer("correct horse battery staple")
    # Documented: returns (None, reason), never raises; once=False so the
    # fuzzer's repeated inputs are judged alike.
    return (lambda d: sealer.open_untrusted(d, b"g", "origin", once=False)), ()


def _mesh_secret_seeds() -> dict[str, bytes]:
    from meshd.p2p.secret import Sealer

    good = Sealer("correct horse battery staple").seal(b"payload", b"g", "origin")
    return {"valid": good, "wrong-tag": good[:-1] + bytes([good[-1] ^ 1]),
            "short": good[:10], "empty": b"", "no-magic": b"XX" + good[2:]}


def _pinset_record(decoder: str) -> tuple:
    from lattice import codec, pinset
    from lattice.errors import BadInput

    fn = getattr(pinset, decoder)
    return (lambda d: fn(codec.decode_untrusted(d))), (BadInput,)


def _pinset_seeds() -> dict[str, bytes]:
    from lattice import codec, pinset
    from lattice.signing import Signer

    cid = codec.cid_of({"pinned": 1})
    signer = Signer.from_seed(b"\x09" * 32)
    return {"pin": codec.encode(pinset.pin_op(cid, 2, "12D3KooWx", 1, name="n")[2]),
            "held": codec.encode(pinset.held_record(signer, cid, True, 1, 10, 1)),
            "empty-map": codec.encode({}), "int": codec.encode(1)}


def _unixfs_blocks() -> dict:
    """A small UnixFS file's blocks (3 levels of 2-link nodes): what a fuzzed root may link to."""
    from lattice.unixfs import encode_file

    return dict(encode_file(bytes(range(90)), chunk_size=10, max_links=2)[1])


def _unixfs_node() -> tuple:
    from lattice import unixfs
    from lattice.cid import DAG_PB, CID
    from lattice.errors import BadInput
    from meshd.store.archive import block_links_untrusted

    def run(data: bytes) -> None:
        node = unixfs.decode_node_untrusted(data)
        assert block_links_untrusted(CID.for_block(DAG_PB, data), data) == unixfs.links_untrusted(data)
        if node.data is not None:
            unixfs.file_data_untrusted(node.data)

    return run, (BadInput,)


def _unixfs_file() -> tuple:
    from lattice import unixfs
    from lattice.cid import DAG_PB, CID
    from lattice.errors import BadInput, BlockNotFound

    blocks = _unixfs_blocks()
    limits = unixfs.ReadLimits(max_size=1 << 20, max_blocks=1000)

    def run(data: bytes) -> None:
        root = CID.for_block(DAG_PB, data)
        store = {**blocks, root: data}

        def get(cid: CID) -> bytes:
            try:
                return store[cid]
            except KeyError:
                raise BlockNotFound(str(cid)) from None

        unixfs.missing_blocks_untrusted(get, store.__contains__, root, limits)
        unixfs.read_file_untrusted(get, root, limits)

    # BlockNotFound: a link to a block not in the store (passed on by design: the caller fetches it).
    return run, (BadInput, BlockNotFound)


def _unixfs_seeds() -> dict[str, bytes]:
    from lattice import unixfs
    from lattice.cid import DAG_PB, RAW

    blocks = _unixfs_blocks()
    nodes = [d for c, d in blocks.items() if c.codec == DAG_PB]
    leaf = next(c for c in blocks if c.codec == RAW)
    link = unixfs.encode_node([unixfs.Link(leaf, "", 10)], None)
    return {"root": nodes[-1], "inner": nodes[0], "link-no-data": link,
            "directory": unixfs.encode_node([unixfs.Link(leaf, "a", 10)], b"\x08\x01"),
            "data-first": b"\x0a\x02\x08\x02" + link, "empty": b"", "ff": b"\xff",
            "long-varint": b"\x0a" + b"\xff" * 11,
            "git-raw-link": b"\x12\x26\x0a\x24\x01\x78\x12\x20" + bytes(32),
            "cidv0-link": b"\x12\x24\x0a\x22\x12\x20" + bytes(32)}


def _known_peers() -> tuple:
    import tempfile
    from pathlib import Path

    from meshd.p2p.known_peers import load_untrusted

    path = Path(tempfile.mkdtemp(prefix="fuzz-peers-")) / "peers.json"

    def run(d: bytes) -> None:
        path.write_bytes(d)
        load_untrusted(path)  # documented: {} when malformed, never raises

    return run, ()


def _lifecycle_reason() -> tuple:
    import trio

    from meshd.api.lifecycle import _reason_untrusted
    from meshd.errors import ApiError

    async def run(d: bytes) -> None:
        await _reason_untrusted(_asgi_request(d))

    return (lambda d: trio.run(run, d)), (ApiError,)


def _publisher_key() -> tuple:
    from meshd.api.engine_admin import publisher_key_untrusted
    from meshd.errors import ApiError

    return (lambda d: publisher_key_untrusted(_text(d))), (ApiError,)


def _publisher_seeds() -> dict[str, bytes]:
    f = fx()
    return _text_seeds(hex=f.signer.public.hex(), peer_id=_presence_peer(), peer_id_typo=_presence_peer()[:-1] + "1",
                       b58_zeros="1" * 64)


def _admin_cid() -> tuple:
    from meshd.api.engine_admin import _cid_untrusted
    from meshd.errors import ApiError

    return (lambda d: _cid_untrusted(_text(d), "engine CID")), (ApiError,)


def _cid_text_seeds() -> dict[str, bytes]:
    f = fx()
    return _text_seeds(base32=str(f.delta_cid), base58=f.delta_cid.encode("base58btc"),
                       upper_base32=str(f.delta_cid).upper(), raw=str(f.raw_cid))


def _add_signature() -> tuple:
    import trio

    from lattice import blockstore
    from meshd.api.engine_admin import EngineAdmin
    from meshd.errors import ApiError

    class Objects:
        async def commit(self, obj: Any, ops: list[Any]) -> None:
            pass

    from types import SimpleNamespace

    node = SimpleNamespace(store=blockstore.MemoryBlockStore(), objects=Objects(), engines_obj=None)
    admin = EngineAdmin(node, None, None, max_image_bytes=1)

    def run(d: bytes) -> None:
        # Input: "<engine CID text>\n<signature record bytes>", as the route receives them.
        engine, _, record = d.partition(b"\n")
        trio.run(admin.add_signature_untrusted, _text(engine), record)

    return run, (ApiError,)


def _add_signature_seeds() -> dict[str, bytes]:
    f = fx()
    sigs = _signature_seeds()
    return {"valid": str(f.dag_cid).encode() + b"\n" + sigs["valid"],
            "other-engine": str(f.delta_cid).encode() + b"\n" + sigs["valid"],
            "bad-cid": "zé\n".encode() + sigs["valid"], "garbage": b"x\n\xff", "empty": b""}


def _asgi_request(body: bytes) -> Any:
    from starlette.requests import Request

    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return Request(scope, receive)


def _api_read_json() -> tuple:
    import trio

    from meshd.api.app import _read_json_untrusted
    from meshd.errors import ApiError

    async def run(d: bytes) -> None:
        await _read_json_untrusted(_asgi_request(d))

    return (lambda d: trio.run(run, d)), (ApiError,)


def _api_json_object() -> tuple:
    import trio

    from meshd.api.engines import _json_object_untrusted
    from meshd.errors import ApiError

    async def run(d: bytes) -> None:
        await _json_object_untrusted(_asgi_request(d))

    return (lambda d: trio.run(run, d)), (ApiError,)


_API_MODELS = ("TaskIn", "BulkTasksIn", "DatasetCreateIn", "DatasetPutIn", "EngineIn")


def _api_validate() -> tuple:
    from pydantic import TypeAdapter

    from meshd.api import models as api_models
    from meshd.api.app import _validate_untrusted
    from meshd.errors import ApiError

    adapters = [TypeAdapter(getattr(api_models, n)) for n in _API_MODELS]

    def run(d: bytes) -> None:
        # The first byte picks the request model; the rest is the JSON body.
        if not d:
            raise _Skip()
        _validate_untrusted(adapters[d[0] % len(adapters)], _json(d[1:]))

    return run, (ApiError,)


def _api_validate_seeds() -> dict[str, bytes]:
    import base64

    f = fx()
    task = {"input": {"value": 1}, "taskDefinition": {"runner": {"type": "bin-json-runner",
                                                                  "engine": {"/": str(f.dag_cid)}}}}
    engine = {"manifest": {"name": "echo", "executable": "echo.py", "interpreter": "python3"},
              "files": {"echo.py": base64.b64encode(b"print(1)").decode()}}
    bodies = {"task": (0, task), "bulk": (1, {"tasks": [task, task]}), "dataset": (2, {"name": "d", "value": {"a": 1}}),
              "put": (3, {"value": [1], "action": "append"}), "engine": (4, engine),
              "task-bad-cid": (0, dict(task, taskDefinition={"/": "zé"})),
              "engine-bad-base64": (4, dict(engine, files={"echo.py": "!!"})),
              "engine-path-escape": (4, dict(engine, files={"../echo.py": ""}))}
    out = {k: bytes([i]) + json.dumps(v).encode() for k, (i, v) in bodies.items()}
    out.update({"deep": b"\x00" + b"[" * 3000 + b"]" * 3000, "not-json": b"\x01{", "empty": b""})
    return out


def _upload_fields() -> tuple:
    from meshd.api.engines import upload_fields_untrusted
    from meshd.errors import ApiError

    return (lambda d: upload_fields_untrusted(d)), (ApiError,)


def _upload_seeds() -> dict[str, bytes]:
    return {"valid": b"name=img&tag=x%3A1&cmd=run&cmd=--jsonl&protocol=jsonl&timeout_s=5&memory_mb=64&sign=false",
            "empty": b"", "nan": b"timeout_s=nan", "inf": b"timeout_s=inf", "dup": b"name=a&name=b",
            "unknown": b"x=1", "non-ascii": b"name=\xff", "many": b"&".join([b"cmd=a"] * 200),
            "big-memory": b"memory_mb=" + b"9" * 5000, "pct": b"name=%ff%fe"}


def _api_guard() -> tuple:
    from meshd.api.guard import Access, GuardPolicy, check_untrusted
    from meshd.config import ApiOptions
    from meshd.errors import ApiError

    policy = GuardPolicy.from_options(ApiOptions(listen="127.0.0.1:7600", token="a" * 32, read_token="r" * 32,
                                                 allowed_hosts=("mesh.example", "[::1]:9")))
    methods = ("GET", "POST", "PUT", "HEAD", "DELETE", "PATCH")

    def run(d: bytes) -> None:
        # Byte 0 picks the method and the scope the route needs; the rest is "name: value" header lines.
        pick = d[0] if d else 0
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in d[1:].split(b"\n") if b":" in line]
        check_untrusted(policy, list(Access)[pick % 4], methods[(pick >> 2) % len(methods)],
                        [(n.lower(), v) for n, v in headers], 7600 if pick & 0x80 else None)

    return run, (ApiError,)


def _api_guard_seeds() -> dict[str, bytes]:
    ok = b"\x03host: 127.0.0.1:7600\nauthorization: Bearer " + b"a" * 32 + b"\ncontent-type: application/json"
    return {"valid": ok, "rebound": b"\x87host: rebind.example:7600", "origin": ok + b"\norigin: http://evil.example",
            "origin-null": ok + b"\norigin: null", "v6": b"\x80host: [::1]:9", "bad-v6": b"\x80host: [::1:9",
            "bad-port": b"\x80host: localhost:99999", "two-hosts": b"\x80host: a\nhost: b", "text": b"\x86" + ok[1:]
            + b"\ncontent-type: text/plain", "empty": b"", "latin1": b"\x80host: \xe9:7600",
            "userinfo": b"\x80host: u@127.0.0.1:7600", "origin-path": ok + b"\norigin: http://127.0.0.1:7600/x"}


def _archive_version() -> tuple:
    from lattice.errors import BadInput
    from meshd.store.archive import version_from_untrusted

    return _hashed(version_from_untrusted), (BadInput,)


def _archive_version_seeds() -> dict[str, bytes]:
    from meshd.store.archive import version_record

    f = fx()
    rec = version_record(f.genesis, [f.delta_cid], 1, 1000)
    return _cbor_seeds(valid=f.codec.encode(rec),
                       with_prev=f.codec.encode(version_record(f.genesis, [f.delta_cid], 2, 2000, prev=f.dag_cid)),
                       heads_not_links=f.codec.encode(dict(rec, heads=["x"])),
                       negative_height=f.codec.encode(dict(rec, h=-1)))


def _pin_record() -> tuple:
    from lattice.errors import BadInput
    from meshd.store.archive import pin_record_untrusted

    return (lambda d: pin_record_untrusted(_cbor(d))), (BadInput,)


def _pin_seeds() -> dict[str, bytes]:
    from meshd.store.archive import pin_record

    f = fx()
    rec = pin_record(f.signer, f.genesis, f.dag_cid, 1000)
    return _cbor_seeds(valid=f.codec.encode(rec), short_key=f.codec.encode(dict(rec, pk=b"\x01")),
                       other_archivist=f.codec.encode(dict(rec, archivist="12D3KooWx")),
                       forged=f.codec.encode(dict(rec, at=1001)))


# ----------------------------------------------------------------- registry


def _targets() -> list[Target]:
    def cbor_seeds() -> dict[str, bytes]:
        f = fx()
        return _cbor_seeds(delta=f.delta, snapshot=f.snap, part=f.part, genesis=f.genesis_block,
                           announce=f.announce)

    def json_task_seeds() -> dict[str, bytes]:
        f = fx()
        task = {"input": {"value": {"n": 1}}, "taskDefinition": {"runner": {"type": "bin-json-runner",
                                                                           "engine": {"/": str(f.dag_cid)}}},
                "result": {"action": "append", "destination": {"dataset": {"/": str(f.genesis)}, "path": "out"}},
                "constraints": [{"type": "arch", "value": "x86_64"}], "verify": {"replicas": 2, "quorum": 2}}
        return _json_seeds(inline=task, by_dataset=dict(task, input={"dataset": {"/": str(f.genesis)}, "path": "in"}),
                           bad_link=dict(task, input={"dataset": {"/": "zé"}, "path": "in"}),
                           float_nan_like=dict(task, input={"value": 1e308}),
                           abs_path=dict(task, input={"dataset": {"/": str(f.genesis)}, "path": "/etc"}))

    def task_block_seeds() -> dict[str, bytes]:
        from lattice import codec

        f = fx()
        td = {"runner": {"type": "bin-json-runner", "engine": f.dag_cid}}
        good = {"t": "meshd/task", "v": 1, "input": {"value": {"n": 1}}, "taskDefinition": td,
                "constraints": [{"type": "arch", "value": "x86_64"}]}
        return _cbor_seeds(task=codec.encode(good), linked=codec.encode(dict(good, taskDefinition=f.dag_cid)),
                           definition=codec.encode(td),
                           not_a_task=codec.encode({"constraints": [1]}),
                           constraint_int=codec.encode(dict(good, constraints=[1])),
                           engine_text=codec.encode(dict(good, taskDefinition={"runner": {
                               "type": "bin-json-runner", "engine": "x"}})),
                           definition_link_link=codec.encode(f.dag_cid))

    def cid_bytes_seeds() -> dict[str, bytes]:
        f = fx()
        return {"dag": f.dag_cid.raw, "raw": f.raw_cid.raw, "v0": b"\x12\x20" + b"\x00" * 32, "short": b"\x01",
                "empty": b"", "dag-pb": b"\x01\x70" + f.dag_cid.raw[2:]}

    return [
        Target("codec", "lattice.codec.decode_untrusted", _codec_decode, cbor_seeds),
        Target("cid_bytes", "lattice.cid.CID.from_bytes_untrusted", _cid_from_bytes, cid_bytes_seeds),
        Target("cid_text", "lattice.cid.CID.parse_untrusted", _cid_parse, _cid_text_seeds),
        Target("delta", "lattice.records.delta_from_untrusted (and _check_ops_untrusted)", _delta, cbor_seeds),
        Target("snapshot", "lattice.records.snapshot_from_untrusted", _snapshot, cbor_seeds),
        Target("part", "lattice.records.part_from_untrusted", _part, cbor_seeds),
        Target("record_type", "lattice.records.record_type_untrusted", _record_type, cbor_seeds),
        Target("task_normalize", "lattice.task.normalize_task_untrusted", _normalize_task, json_task_seeds),
        Target("task_json", "lattice.task.task_from_json_untrusted", _task_from_json, json_task_seeds),
        Target("task_block", "lattice.task.task_from_block_untrusted", _task_block, task_block_seeds),
        Target("task_definition_block", "lattice.task.definition_from_block_untrusted", _definition_block,
               task_block_seeds),
        Target("hpcp_message", "lattice.hpcp.decode_message_untrusted", _hpcp_decode, _hpcp_seeds),
        Target("hpcp_peek", "lattice.hpcp.peek_genesis_untrusted", _hpcp_peek, _hpcp_seeds),
        Target("follow_quota", "lattice.admission.FollowQuota.admit_untrusted and "
               "lattice.hpcp.signed_announce_untrusted", _follow_quota, _hpcp_seeds),
        Target("hpcp_syncer", "lattice.hpcp.Syncer.receive_untrusted", _hpcp_syncer, _hpcp_seeds),
        Target("goho_receive", "lattice.goho.Replica.receive_untrusted", _goho_receive, cbor_seeds),
        Target("manifest_record", "engines.manifest.manifest_from_record_untrusted", _manifest_record,
               _manifest_seeds),
        Target("manifest_block", "engines.manifest.manifest_from_untrusted", _manifest_block, _manifest_seeds),
        Target("engine_signature", "engines.manifest.signature_from_untrusted", _signature, _signature_seeds),
        Target("condition", "conditions.parse_untrusted", _condition,
               lambda: _text_seeds(exist="exist(dataset(hpcp('bafy/x')))", arith="1 + 2 * (3 - len('ab')) >= 4",
                                   deep="(" * 500 + "1" + ")" * 500, unterminated="'abc",
                                   not_not="!!!!exist(x)")),
        Target("rule", "conditions.actions.Rule.from_json_untrusted", _rule, _rule_seeds),
        Target("frame", "meshd.p2p.wire.decode_frame_untrusted (and _decode_varint_untrusted)", _frame,
               _frame_seeds),
        Target("frame_reader", "meshd.p2p.wire.FrameReader.read_frame_untrusted", _frame_reader, _frame_seeds),
        Target("rules_record", "meshd.roles.jobs.rules_from_record_untrusted", _rules_record, _rules_record_seeds),
        Target("pipeline", "meshd.roles.pipeline.Pipeline.from_json_untrusted", _pipeline, _pipeline_seeds),
        Target("presence", "lattice.peers.PeerTable.receive_presence_untrusted (what "
               "lattice.meshcore.MeshCore.receive calls; and _links_untrusted, its links)", _presence, _presence_seeds),
        Target("mesh_core", "lattice.meshcore.MeshCore.receive and MeshCore.serve (and on_response with the "
               "same bytes): the mesh core's network entry points", _mesh_core, _mesh_core_seeds),
        Target("mesh_secret", "meshd.p2p.secret.Sealer.open_untrusted", _mesh_secret, _mesh_secret_seeds),
        Target("pinset_pin", "lattice.pinset.pin_from_untrusted", lambda: _pinset_record("pin_from_untrusted"),
               _pinset_seeds),
        Target("pinset_held", "lattice.pinset.held_from_untrusted", lambda: _pinset_record("held_from_untrusted"),
               _pinset_seeds),
        Target("known_peers", "meshd.p2p.known_peers.load_untrusted", _known_peers,
               lambda: _json_seeds(ok={"t": "meshd/known-peers", "v": 1, "peers": {"p": ["/ip4/1.2.3.4/tcp/1"]}})),
        Target("cancel_reason", "meshd.api.lifecycle._reason_untrusted", _lifecycle_reason,
               lambda: _json_seeds(ok={"reason": "x"})),
        Target("publisher_key", "meshd.api.engine_admin.publisher_key_untrusted", _publisher_key, _publisher_seeds),
        Target("admin_cid", "meshd.api.engine_admin._cid_untrusted", _admin_cid, _cid_text_seeds),
        Target("add_signature", "meshd.api.engine_admin.EngineAdmin.add_signature_untrusted", _add_signature,
               _add_signature_seeds),
        Target("api_read_json", "meshd.api.app._read_json_untrusted", _api_read_json,
               lambda: _json_seeds(obj={"a": [1, 2]})),
        Target("api_validate", "meshd.api.app._validate_untrusted (every request model)", _api_validate,
               _api_validate_seeds),
        Target("api_json_object", "meshd.api.engines._json_object_untrusted", _api_json_object,
               lambda: _json_seeds(obj={"publisher": "ab" * 32})),
        Target("upload_fields", "meshd.api.engines.upload_fields_untrusted", _upload_fields, _upload_seeds),
        Target("api_guard", "meshd.api.guard.check_untrusted (Host, Origin, token, scope, type)", _api_guard,
               _api_guard_seeds),
        Target("archive_version", "meshd.store.archive.version_from_untrusted", _archive_version, _archive_version_seeds),
        Target("pin_record", "meshd.store.archive.pin_record_untrusted", _pin_record, _pin_seeds),
        Target("unixfs_node", "lattice.unixfs.decode_node_untrusted (and _link_untrusted), links_untrusted, "
               "file_data_untrusted; meshd.store.archive.block_links_untrusted", _unixfs_node, _unixfs_seeds),
        Target("unixfs_file", "lattice.unixfs.read_file_untrusted and missing_blocks_untrusted (a fuzzed root "
               "over a valid file's blocks)", _unixfs_file, _unixfs_seeds),
    ]


TARGETS: dict[str, Target] = {t.name: t for t in _targets()}
