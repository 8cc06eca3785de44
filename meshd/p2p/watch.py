"""The mesh pump's connection watch: greet peers that join, redial and probe
peers we lose, and keep our connections to the topology plan.

A part of :class:`meshd.p2p.mesh.Mesh`, which inherits it (its methods drive
the mesh's own core calls, under the same lock, so they need the mesh
itself, not a narrower port); kept in a module of its own because it is one
concept, membership over connections, apart from moving objects.  What it
decides about lost peers is :class:`meshd.p2p.redials.Redials` (pure); which
connections to keep is :mod:`lattice.topology` (pure).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from lattice import topology
from lattice.meshcore import MeshCore, MeshCoreOptions

from ..runtime.logs import get_logger
from .redials import PROBE_S, REDIAL_EVERY_S, Redials
from .wire import TransportError

__all__ = ["ConnectionWatch", "HOLD_OFF_S", "PLAN_EVERY_S", "TRIM_GRACE_S", "WATCH_FAST_FOR_S", "WATCH_QUIET_S",
           "WATCH_S"]

log = get_logger("meshd.mesh")

#: How often the pump looks at who is connected and subscribed ...
WATCH_S = 0.05
#: ... while connections changed within WATCH_FAST_FOR_S or a lost peer is
#: being redialled; otherwise every WATCH_QUIET_S or at the next connection
#: or subscription change, whichever comes first (an idle node's wake-ups:
#: issue 16).  The transport wakes us at a subscription and at a graft, so
#: the fast pace after a connection change is only a backstop.
WATCH_FAST_FOR_S = 3.0
WATCH_QUIET_S = 0.5
#: How often connections are weighed against ``max_peers`` (lattice.topology) ...
PLAN_EVERY_S = 1.0
#: ... sparing connections younger than this (a newcomer hears of the mesh through them) ...
TRIM_GRACE_S = 10.0
#: ... and not dialling again for this long a live peer that closed on us (it does not count us
#: as its neighbour yet; dialling it again would only be trimmed again).
HOLD_OFF_S = 30.0


class ConnectionWatch:
    """The connection watch of :class:`meshd.p2p.mesh.Mesh` (see the module doc)."""

    # Set by Mesh.__init__ and Mesh.serve.
    core: MeshCore
    transport: Any
    options: MeshCoreOptions
    _wake: trio.Event
    _nursery: trio.Nursery | None
    _neighbours: frozenset[str]
    # It also calls the mesh's peer_id, _peer_ids, _locked, _call and _carry.

    async def _watch_loop(self) -> None:
        """Watch who we can gossip with: greet peers that join, redial and probe peers we lose.

        Every ``WATCH_S`` (every ``WATCH_QUIET_S`` while no connection has
        changed for ``WATCH_FAST_FOR_S``, waking at the next change):

        * a peer that newly subscribed (connected, and its subscription
          arrived) gets our presence and heads at once
          (:meth:`MeshCore.peer_joined`): a restarted node is current on its
          peers, and they on it, within a round trip, not a period;
        * a peer whose connection went away is redialled at once, then every
          ``REDIAL_SOON_S`` for ``REDIAL_SOON_FOR_S`` (a restart takes a
          few seconds), then every ``REDIAL_EVERY_S`` for ``REDIAL_FOR_S``, at the addresses it last
          announced.  A node that restarts may have only dead bootstrap
          peers (the mesh outlived them); its former peers dialling it back
          is how it rejoins at once.  The first redial doubles as a probe:
          when it fails within ``PROBE_S`` (every address refused: nothing
          listens there, the process is gone) the peer is suspected dead at
          once (:meth:`MeshCore.suspect`) instead of after the presence
          horizon; a dial that hangs proves nothing and leaves it to the
          horizon.  Its next presence makes it live again, and while we hold
          no connection to it that presence is checked by a probe too (it
          may be one the dead process sent before it died, arriving late).
        """
        redials = Redials()
        was: set[str] = set()
        greeted: set[str] = set()
        dialing: set[str] = set()  # one dial per peer at a time
        closed_by_us: dict[str, float] = {}  # trimmed: not lost, not redialled
        closed_on_us: dict[str, float] = {}  # lost but alive: they trimmed us; not dialled for a while
        next_plan = 0.0
        subscribed = getattr(self.transport, "subscribed_peers", None)
        disconnect = getattr(self.transport, "disconnect", None)

        async def redial(peer: str, addrs: tuple[str, ...], probe: bool) -> None:
            dialing.add(peer)
            t0 = time.monotonic()
            try:
                ok = await self._dial(peer, addrs)
            finally:
                dialing.discard(peer)
            if probe and ok is False and time.monotonic() - t0 < PROBE_S:
                log.info("peer_suspected", peer=peer, why="connection lost and refused at every address")
                self._locked(self.core.suspect, peer)
                redials.refused(peer)  # probed again should it count as live before we reconnect
            elif probe and ok:
                closed_on_us[peer] = time.monotonic()

        async def trim(peer: str) -> None:
            assert disconnect is not None
            closed_by_us[peer] = time.monotonic()
            try:
                await disconnect(peer)
                log.info("peer_trimmed", peer=peer, why=f"over [p2p] max_peers={self.options.max_peers}")
            except TransportError as exc:
                log.info("trim_failed", peer=peer, error=repr(exc)[:200])

        while True:
            now = time.monotonic()
            connected = set(self._peer_ids())
            joined = (subscribed() if subscribed is not None else connected) - greeted
            if joined:
                for peer in sorted(joined):
                    await self._carry(await self._call(self.core.peer_joined, peer, time.time()))
                self._wake.set()
            greeted = (greeted | joined) & connected
            for peer in was - connected:
                if now - closed_by_us.pop(peer, float("-inf")) > REDIAL_EVERY_S:
                    redials.lose(peer, now)
            if was - connected:
                # Our presence lists our connections (links), on whose word peers
                # not connected to the lost one count it live: say so now, not
                # at the next period.
                await self._call(self.core.presence_now)
                self._wake.set()
            was = connected
            assert self._nursery is not None
            full = len(connected) >= self.options.max_peers
            wall = time.time()
            # A lost peer that is not one of our neighbours is left to the
            # presence horizon once we hold enough connections.
            for peer, addrs, probe in redials.due(now, connected=connected, addrs=self.core.peers.addrs,
                                                  keep=lambda p: not full or p in self._neighbours,
                                                  dialing=dialing, live=lambda p, at=wall: self.core.peers.is_live(p, at)):
                self._nursery.start_soon(redial, peer, addrs, probe)
            if now >= next_plan:
                next_plan = now + PLAN_EVERY_S
                step = self._plan(now, closed_on_us)
                for peer in step.close:
                    if disconnect is not None:
                        self._nursery.start_soon(trim, peer)
                for peer in step.dial:
                    addrs = self.core.peers.addrs(peer)
                    if addrs and peer not in dialing and redials.may_plan(peer, now):
                        self._nursery.start_soon(redial, peer, tuple(addrs), False)
            await self._watch_pause(bool(redials.lost or dialing))

    async def _watch_pause(self, busy: bool) -> None:
        """The watch loop's sleep: short while connections change, long (but
        cut short by a connect or disconnect) while they do not."""
        quiet_s = getattr(self.transport, "quiet_s", None)
        wait_churn = getattr(self.transport, "wait_churn", None)
        if busy or quiet_s is None or wait_churn is None or quiet_s() < WATCH_FAST_FOR_S:
            await trio.sleep(WATCH_S)
        else:
            await wait_churn(WATCH_QUIET_S)

    def _plan(self, now: float, closed_on_us: dict[str, float]) -> topology.Plan:
        """Our neighbours now (:mod:`lattice.topology`), and which connections to open and close."""
        wall = time.time()
        infos = {getattr(p, "peer_id", str(p)): p for p in self.transport.peers()}
        live = self.core.live(wall)
        self._neighbours = frozenset(topology.neighbours(self.peer_id, live, self.options.max_peers))
        for peer, at in list(closed_on_us.items()):
            if now - at > HOLD_OFF_S:
                del closed_on_us[peer]
        young = {p for p, info in infos.items() if wall - getattr(info, "connected_since", 0.0) < TRIM_GRACE_S}
        return topology.plan(self.peer_id, live, set(infos), cap=self.options.max_peers, young=young,
                             avoid=set(closed_on_us))

    async def _dial(self, peer: str, addrs: tuple[str, ...]) -> bool | None:
        """Connect to ``peer``; True when connected, False when every address failed,
        None when the transport cannot dial (the in-process fake)."""
        connect_any = getattr(self.transport, "connect_any", None)
        if connect_any is not None:  # every address at once, staggered (meshd.p2p.dialing)
            try:
                await connect_any(peer, list(addrs))
                log.info("dialed_peer", peer=peer)
                return True
            except TransportError as exc:
                log.info("dial_failed", peer=peer, error=repr(exc)[:200])
            return False
        connect = getattr(self.transport, "connect", None)
        if connect is None:
            return None
        for addr in addrs:
            try:
                with trio.move_on_after(5):
                    await connect(addr)
                    log.info("dialed_peer", peer=peer, addr=addr)
                    return True
            except TransportError as exc:  # try the next address
                log.info("dial_failed", peer=peer, addr=addr, error=repr(exc)[:200])
        return False
