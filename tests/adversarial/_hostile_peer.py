"""A hostile peer: a real libp2p process that speaks meshd's wire protocol.

Run as ``python -m tests.adversarial._hostile_peer <topic> <bootstrap multiaddr>``.
It serves one plain :class:`meshd.p2p.transport.Transport` (no mesh secret,
no meshd node behind it), dials the bootstrap peer, prints one JSON line
``{"peer_id": ..., "addrs": [...]}`` and then obeys JSON commands, one per
stdin line, answering each with one JSON line on stdout:

* ``{"op": "flood_requests", "peer": id, "bytes": n, "count": k, "parallel": p}``:
  send ``k`` garbage requests of ``n`` bytes, ``p`` at a time; answers
  ``{"sent": k, "answered": a, "seconds": s}``;
* ``{"op": "flood_gossip", "bytes": n, "count": k}``: publish ``k`` garbage
  gossip messages of ``n`` bytes;
* ``{"op": "fake_peers", "count": n, "addrs": [...], "roles": [...]}``: sign
  and gossip a valid presence for ``n`` made-up peer ids (fresh keys), each
  claiming its made-up id as the gossip origin and offering ``addrs`` (where
  the attacker wants the node to dial);
* ``{"op": "heard"}``: every gossip message received so far, hex encoded
  (``{"messages": [[origin, hex], ...]}``): what an eavesdropper reads;
* ``{"op": "replay"}``: publish again every gossip message received so far,
  byte for byte, each under its original origin;
* ``{"op": "want", "peer": id, "cids": [...]}``: send an ``hpcp/want`` for
  ``cids`` and answer how many blocks came back (``{"blocks": n}``, or
  ``{"error": ...}``);
* ``{"op": "raw_request", "peer": id, "hex": data}``: send those bytes as a
  request; answers ``{"hex": answer}`` or ``{"error": ...}``.

The HPCP attacks below sign deltas, snapshots and announcements with the
peer's own key (its libp2p identity), announce them in a signed
``hpcp/announce`` as any member does, and answer the ``hpcp/want`` requests
of the nodes that fetch them from the blocks the attack made (and nothing
else).  Each answers ``{"genesis": ..., "heads": [...], ...}``:

* ``{"op": "poison_snapshot", "signed": bool}``: a new object (a dataset
  genesis no one has) whose announcement names a snapshot, signed by the
  attacker (``signed``) or with a broken signature, whose one part adds
  ``"poison"`` to the set ``items``; its head is an honest delta that adds
  ``"delta"``;
* ``{"op": "bad_height", "genesis": g, "key": k, "value": v}``: a delta of
  object ``g`` that puts ``v`` at ``k`` with height 2^53 on a parent of
  height 1 (it would win that register for good);
* ``{"op": "forged_verdicts", "genesis": g, "victim": id, "engine": cid}``:
  a delta of the verdicts object ``g`` with two verdicts that call ``victim``
  invalid on made-up tasks (enough for a ban) and five that call the attacker
  valid (enough to be trusted), each correctly signed by the attacker;
* ``{"op": "poison_signature", "genesis": g, "engine": cid}``: a delta of
  the engines registry ``g`` that adds a signature CID for ``engine`` whose
  block nobody serves.

It exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import time

import trio

from lattice import codec, hpcp, records, trust
from lattice.blockstore import MemoryBlockStore
from lattice.cid import CID
from lattice.peers import PeerTable
from lattice.signing import Signer, peer_id_of
from meshd.p2p import P2POptions, Transport
from meshd.p2p.wire import TransportError


def _payload(size: int, kind: str) -> bytes:
    """``size`` bytes (about) of garbage, or of canonical DAG-CBOR that is costly to decode (tiny maps)."""
    if kind == "cbor":
        return codec.encode({"t": "hpcp/want", "v": 1, "x": [{"a": i} for i in range(size // 8)]})
    return os.urandom(size)


async def _flood_requests(t: Transport, cmd: dict) -> dict:
    payload = _payload(cmd["bytes"], cmd.get("kind", "random"))
    answered = 0
    start = time.monotonic()
    limit = trio.CapacityLimiter(cmd.get("parallel", 4))

    async def one() -> None:
        nonlocal answered
        async with limit:
            try:
                await t.request(cmd["peer"], payload, timeout_s=30)
                answered += 1
            except TransportError:
                pass

    async with trio.open_nursery() as n:
        for _ in range(cmd["count"]):
            n.start_soon(one)
    return {"sent": cmd["count"], "answered": answered, "seconds": round(time.monotonic() - start, 3)}


async def _flood_gossip(t: Transport, cmd: dict) -> dict:
    for _ in range(cmd["count"]):
        await t.broadcast(_payload(cmd["bytes"], cmd.get("kind", "random")))
    return {"sent": cmd["count"]}


async def _publish_as(t: Transport, origin: str, data: bytes) -> None:
    """Gossip ``data`` claiming ``origin`` as its author: libp2p does not sign meshd's gossip,
    so the origin of a message is whatever its first sender writes there."""
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2

    pubsub = t._pubsub
    msg = rpc_pb2.Message(data=data, topicIDs=[t._options.topic], from_id=ID.from_base58(origin).to_bytes(),
                          seqno=pubsub._next_seqno())
    await t._wait_for_queue_room(pubsub)  # py-libp2p drops what does not fit its 32-RPC queue
    await pubsub.push_msg(pubsub.my_id, msg)


async def _fake_peers(t: Transport, cmd: dict) -> dict:
    ids = []
    for _ in range(cmd["count"]):
        s = Signer.generate()
        table = PeerTable(peer_id_of(s.public), roles=cmd.get("roles", ["runner"]))
        await _publish_as(t, table.me, table.encode_presence(
            s, inventory={"cpus": 64, "slots": 64}, api="http://127.0.0.1:1", addrs=cmd.get("addrs", []),
            now=time.time()))
        ids.append(table.me)
        await trio.sleep(0)
    return {"ids": ids}


async def _want(t: Transport, cmd: dict) -> dict:
    try:
        answer = await t.request(cmd["peer"], hpcp.encode_want([CID.parse_untrusted(c) for c in cmd["cids"]]),
                                 timeout_s=10)
    except TransportError as exc:
        return {"error": type(exc).__name__}
    try:
        msg = hpcp.decode_message_untrusted(answer, verify=False)
    except Exception as exc:  # noqa: BLE001 - the answer of a sealed mesh is not ours to read
        return {"error": f"undecodable answer: {type(exc).__name__}", "bytes": len(answer)}
    return {"blocks": len(msg.get("blocks", [])) if isinstance(msg, dict) else 0}


async def _raw_request(t: Transport, cmd: dict) -> dict:
    try:
        return {"hex": (await t.request(cmd["peer"], bytes.fromhex(cmd["hex"]), timeout_s=10)).hex()}
    except TransportError as exc:
        return {"error": type(exc).__name__}


class Hpcp:
    """The attacker's side of HPCP: the blocks it serves and its signed announcements."""

    def __init__(self, transport: Transport, signer: Signer) -> None:
        self.transport = transport
        self.signer = signer
        self.me = peer_id_of(signer.public)
        self.blocks = MemoryBlockStore()
        self.wants = 0

    async def answer(self, peer: str, data: bytes) -> bytes:
        """Serve a want from the attack's blocks, as an honest member serves its store."""
        try:
            msg = hpcp.decode_message_untrusted(data, verify=False)
        except Exception:  # noqa: BLE001 - a node's request we cannot read gets an empty answer
            return hpcp.encode_blocks([], [])
        if msg.get("t") != "hpcp/want":
            return hpcp.encode_blocks([], [])
        self.wants += 1
        return hpcp.serve_want(self.blocks, msg["cids"], 4 * 1024 * 1024)

    def put(self, cid: CID, data: bytes) -> CID:
        self.blocks.put(cid, data)
        return cid

    async def announce(self, genesis: CID, heads: list[CID], snap: CID | None = None) -> dict:
        """Announce ``heads`` of ``genesis`` a few times (gossip meshes form
        while the attack runs; a node that heard it once ignores repeats)."""
        for _ in range(3):
            await self.transport.broadcast(hpcp.encode_announce(
                self.signer, genesis, heads, int(time.time() * 1000), snap))
            await trio.sleep(0.5)
        return {"genesis": str(genesis), "heads": [str(h) for h in heads], "snap": str(snap) if snap else None}

    def delta(self, genesis: CID, ops: list, *, parents: tuple[CID, ...] = (), height: int = 1) -> CID:
        cid, data = records.sign_delta(self.signer, genesis, list(parents), height, ops, [])
        return self.put(cid, data)


async def _poison_snapshot(h: Hpcp, cmd: dict) -> dict:
    genesis = h.put(*records.make_genesis("dataset", f"poison-{os.urandom(8).hex()}"))
    head = h.delta(genesis, [["add", "items", "delta"]])
    part = h.put(*codec.encode_block({"t": "goho/snapshot-part", "v": 1, "adds": [["items", ["poison"]]],
                                      "puts": []}))
    body = {"t": "goho/snapshot", "v": 1, "g": genesis, "covers": [head], "h": 1, "parts": [part],
            "a": h.signer.public}
    body["s"] = h.signer.sign(codec.encode(body)) if cmd.get("signed", True) else bytes(64)
    snap = h.put(*codec.encode_block(body))
    return await h.announce(genesis, [head], snap)


async def _bad_height(h: Hpcp, cmd: dict) -> dict:
    genesis = CID.parse_untrusted(cmd["genesis"])
    value = CID.parse_untrusted(cmd["value"]) if cmd.get("link") else cmd["value"]
    # A root delta must have height 1 (the decoder refuses any other), so the
    # attack builds on a root of its own: the height is wrong only against
    # the parent's, which the node checks once it holds the parent.
    root = h.delta(genesis, [["put", "hostile/root", 1]])
    head = h.delta(genesis, [["put", cmd["key"], value]], parents=(root,), height=2**53)
    return await h.announce(genesis, [head])


async def _forged_verdicts(h: Hpcp, cmd: dict) -> dict:
    genesis = CID.parse_untrusted(cmd["genesis"])
    engine = CID.parse_untrusted(cmd["engine"])
    now = int(time.time() * 1000)
    ops = []
    for i in range(7):
        task = codec.cid_of({"made up task": i, "nonce": os.urandom(8).hex()})
        output = codec.cid_of({"made up output": i})
        ban = i < 2
        rec = trust.verdict_record(h.signer, task, engine, output, [] if ban else [h.me],
                                   [cmd["victim"]] if ban else [], h.me, now + i)
        ops.append(trust.verdict_op(rec))
    head = h.delta(genesis, ops)
    return await h.announce(genesis, [head])


async def _poison_signature(h: Hpcp, cmd: dict) -> dict:
    genesis = CID.parse_untrusted(cmd["genesis"])
    bogus = codec.cid_of({"signature nobody serves": os.urandom(8).hex()})
    head = h.delta(genesis, [["add", cmd["engine"], bogus]])
    out = await h.announce(genesis, [head])
    out["bogus"] = str(bogus)
    return out


_HPCP_ATTACKS = {"poison_snapshot": _poison_snapshot, "bad_height": _bad_height,
                 "forged_verdicts": _forged_verdicts, "poison_signature": _poison_signature}


async def main(topic: str, bootstrap: tuple[str, ...]) -> None:
    seed = os.urandom(32)
    transport = Transport(seed, P2POptions(bootstrap=bootstrap, topic=topic))
    attacker = Hpcp(transport, Signer.from_seed(seed))
    assert attacker.me == transport.peer_id, "the attacker signs with its libp2p identity"
    transport.set_request_handler(attacker.answer)
    heard: list[tuple[str, bytes]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve)

        async def listen() -> None:
            while True:
                heard.append(await transport.receive())
                del heard[:-2000]

        nursery.start_soon(listen)
        await transport.wait_peers(1)
        print(json.dumps({"peer_id": transport.peer_id, "addrs": transport.listen_addrs()}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        while True:
            chunk = await stdin.receive_some()
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd = json.loads(line)
                op = cmd["op"]
                if op == "flood_requests":
                    out = await _flood_requests(transport, cmd)
                elif op == "flood_gossip":
                    out = await _flood_gossip(transport, cmd)
                elif op == "fake_peers":
                    out = await _fake_peers(transport, cmd)
                elif op == "heard":
                    out = {"messages": [[p, d.hex()] for p, d in heard]}
                elif op == "replay":
                    for origin, d in list(heard):
                        await _publish_as(transport, origin, d)
                    out = {"sent": len(heard)}
                elif op == "want":
                    out = await _want(transport, cmd)
                elif op == "raw_request":
                    out = await _raw_request(transport, cmd)
                elif op in _HPCP_ATTACKS:
                    out = await _HPCP_ATTACKS[op](attacker, cmd)
                elif op == "wants":
                    out = {"wants": attacker.wants}
                else:
                    out = {"error": f"unknown op {op}"}
                print(json.dumps(out), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], tuple(sys.argv[2:]))
