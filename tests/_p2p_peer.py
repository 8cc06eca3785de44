"""A child-process peer for the cross-process transport test.

Run as ``python -m tests._p2p_peer [bootstrap multiaddr]``.  It serves one
:class:`meshd.p2p.transport.Transport` on ``/ip4/127.0.0.1/tcp/0``, prints one JSON line
``{"peer_id": ..., "addrs": [...]}`` on stdout once listening, then:

* answers every request with the request's bytes, except ``b"hang"``, which
  it never answers, printing ``hang`` so the parent can kill us mid-request;
* re-broadcasts every gossip message it receives, prefixed with ``b"echo:"``.

It runs until killed or until stdin closes.
"""

from __future__ import annotations

import json
import os
import sys

import trio

from meshd.p2p import P2POptions, Transport
from meshd.p2p.budgets import BudgetOptions


async def _echo(peer_id: str, data: bytes) -> bytes:
    if data == b"hang":
        print("hang", flush=True)  # tells the parent we are mid-request
        await trio.sleep_forever()
    return data


async def main(bootstrap: tuple[str, ...]) -> None:
    # Requests are capped at 256 KiB by default; this echo peer takes the 4 MiB the test sends.
    budgets = BudgetOptions(max_request_bytes=8 * 1024 * 1024, request_bytes_per_s=16 * 1024 * 1024)
    transport = Transport(os.urandom(32), P2POptions(bootstrap=bootstrap, budgets=budgets))
    transport.set_request_handler(_echo)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve)
        print(json.dumps({"peer_id": transport.peer_id, "addrs": transport.listen_addrs()}), flush=True)

        async def rebroadcast() -> None:
            while True:
                _sender, data = await transport.receive()
                await transport.broadcast(b"echo:" + data)

        async def exit_when_stdin_closes() -> None:
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(rebroadcast)
        nursery.start_soon(exit_when_stdin_closes)


if __name__ == "__main__":
    trio.run(main, tuple(sys.argv[1:]))
