"""The daemon's configuration: ``<home>/config.toml`` as frozen, validated records.

Each TOML table maps onto one frozen dataclass whose fields carry the
documented defaults; validation happens once, in ``__post_init__``, so a
:class:`Config` that exists is a valid one.  Unknown tables or keys are
rejected with a :class:`~meshd.errors.ConfigError` that names them, because a
misspelt key silently falling back to its default is the classic way a node
ends up listening where nobody expects.

Example ``config.toml`` (every key optional)::

    [node]
    roles = ["manager", "runner"]
    name = "build-box"
    shutdown_grace_s = 8.0

    [api]
    listen = "127.0.0.1:7600"
    max_body_bytes = 8388608
    allowed_hosts = []

    [runner]
    slots = 8
    max_attempts = 3
    lease_s = 10.0
    task_timeout_s = 60.0
    warm = true
    drain_deadline_s = 3.0
    weak_sandbox = false
    engine_network = false

    [engines]
    trusted_publishers = []
    allow = []

    [p2p]
    listen = ["/ip4/0.0.0.0/tcp/4601"]
    bootstrap = []
    announce = []
    no_announce = []
    mdns = false
    mdns_interfaces = []

    [ipfs]
    api = ""

    [docker]
    host = ""
    max_image_mb = 4096

    [store]
    max_bytes = 0          # no budget; e.g. 10737418240 keeps the block store near 10 GiB
    min_holders = 2

    [log]
    level = "info"

The roles' tables (``[runner]``, ``[verify]``, ``[archive]``) are defined in
:mod:`meshd.roles.config` and re-exported here.

This module reads only the file it is given; the environment is the CLI's
business (see :mod:`meshd.cli`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import tomli_w

from lattice.cid import CID
from lattice.errors import BadCID

from .errors import ConfigError
from .roles.config import ArchiveConfig, RunnerConfig, VerifyConfig
from .runtime.checks import bool_field as _bool
from .runtime.checks import int_field as _int
from .runtime.checks import multiaddr as _multiaddr
from .runtime.checks import parse_host_port
from .runtime.checks import positive_float as _positive_float
from .runtime.checks import set_field as _set
from .runtime.checks import str_tuple as _str_tuple

MIB: Final = 1024 * 1024
CONFIG_FILE: Final = "config.toml"
ROLES: Final = frozenset({"manager", "runner", "archivist", "evaluator", "verifier"})
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class NodeConfig:
    """``[node]``: what this node does and how it names itself.

    Attributes:
        roles: Subset of ``{"manager", "runner"}``; default both.  A manager
            accepts and evaluates tasks, a runner executes them.
        name: Human label shown to peers; default the host name.
        mesh: Name of the mesh this node belongs to; the well-known queue,
            results and engine-registry objects are derived from it, so every
            node of one mesh follows the same genesis CIDs.  Default "default".
        labels: Free-form labels matched by ``label`` task constraints.
        shutdown_grace_s: After SIGTERM/SIGINT, how long the graceful stop
            may take before the daemon kills its engines and exits hard
            (``shutdown_forced``); default 8.0, at most 600.  Keep it under
            the supervisor's own stop timeout (systemd: 90 s).
    """

    roles: tuple[str, ...] = ("manager", "runner")
    name: str = field(default_factory=lambda: socket.gethostname()[:64] or "meshd")
    mesh: str = "default"
    labels: tuple[str, ...] = ()
    shutdown_grace_s: float = 8.0

    def __post_init__(self) -> None:
        roles = _str_tuple(self, "node", "roles", allow_empty=False)
        unknown = sorted(set(roles) - ROLES)
        if unknown:
            raise ConfigError(f"[node] roles: unknown role(s) {unknown}; choose from {sorted(ROLES)}")
        if len(set(roles)) != len(roles):
            raise ConfigError("[node] roles must not repeat a role")
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 64:
            raise ConfigError(f"[node] name must be a string of 1..64 characters, got {self.name!r}")
        if not isinstance(self.mesh, str) or not 0 < len(self.mesh) <= 64:
            raise ConfigError(f"[node] mesh must be a string of 1..64 characters, got {self.mesh!r}")
        _str_tuple(self, "node", "labels")
        if _positive_float(self, "node", "shutdown_grace_s") > 600:
            raise ConfigError(f"[node] shutdown_grace_s must be at most 600, got {self.shutdown_grace_s}")


@dataclass(frozen=True)
class ApiOptions:
    """``[api]``: the local HTTP API's options (also the API component's options).

    Every request but ``GET /v1/health`` needs a bearer token, on loopback
    too (see :mod:`meshd.api.guard` for why and for the scopes).

    Attributes:
        listen: ``HOST:PORT`` to bind; default ``127.0.0.1:7600``.  Port 0
            binds a free port (tests).
        max_body_bytes: Largest request body accepted; default 8 MiB.  Larger
            bodies get 413 before the application sees them.
        allowed_hosts: Extra ``Host`` (and ``Origin``) names the API answers
            to, ``"name"`` (any port) or ``"name:port"``; default none, which
            admits only the listen address and the loopback names on its port.
        token: The ``admin`` token; ``read_token``/``submit_token`` the
            narrower ones.  Never read from ``config.toml``: the daemon fills
            them from ``<home>/api*.token``.
    """

    listen: str = "127.0.0.1:7600"
    max_body_bytes: int = 8 * MIB
    allowed_hosts: tuple[str, ...] = ()
    # repr=False: a logged or printed ApiOptions never shows a secret.
    token: str | None = field(default=None, repr=False)
    read_token: str | None = field(default=None, repr=False)
    submit_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parse_host_port(self.listen)
        _int(self, "api", "max_body_bytes", minimum=1, maximum=1024 * MIB)
        for host in _str_tuple(self, "api", "allowed_hosts"):
            if not _HOST_ENTRY.fullmatch(host):
                raise ConfigError(f"[api] allowed_hosts: {host!r} is not NAME or NAME:PORT (no scheme, no path)")
        for name in _TOKEN_FIELDS:
            token = getattr(self, name)
            if token is not None and (not isinstance(token, str) or len(token) < 16):
                raise ConfigError(f"[api] {name} must be a string of at least 16 characters")

    @property
    def host(self) -> str:
        """The host part of :attr:`listen`."""
        return parse_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of :attr:`listen`."""
        return parse_host_port(self.listen)[1]


_TOKEN_FIELDS: Final = frozenset({"token", "read_token", "submit_token"})
_HOST_ENTRY: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")


@dataclass(frozen=True)
class EnginesConfig:
    """``[engines]``: which engines this node agrees to run.

    Attributes:
        trusted_publishers: Hex Ed25519 public keys (64 hex digits) whose
            signed engines are accepted; default none.
        allow: Engine CIDs accepted regardless of publisher; default none.
        interpreters: Interpreter name -> absolute program on this node, for
            manifests that name one (``"python3"``); default: ``python3`` and
            ``python`` run the daemon's own Python.
    """

    trusted_publishers: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    interpreters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in _str_tuple(self, "engines", "trusted_publishers"):
            if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
                raise ConfigError(f"[engines] trusted_publishers: {key!r} is not 64 hex digits")
        allow = []
        for text in _str_tuple(self, "engines", "allow"):
            try:
                allow.append(str(CID.parse_untrusted(text)))
            except BadCID as exc:
                raise ConfigError(f"[engines] allow: {text!r} is not a CID: {exc}") from None
        _set(self, "allow", tuple(allow))
        if not isinstance(self.interpreters, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and os.path.isabs(v) for k, v in self.interpreters.items()
        ):
            raise ConfigError("[engines] interpreters must map names to absolute program paths")


@dataclass(frozen=True)
class P2PConfig:
    """``[p2p]``: libp2p transport and discovery.

    Attributes:
        listen: Multiaddrs to listen on; default ``["/ip4/0.0.0.0/tcp/4601"]``.
        bootstrap: Peer multiaddrs (with ``/p2p/<id>``) dialled at start.
        announce: Multiaddrs offered to peers instead of the listen ones
            (wildcards expanded to interface addresses) and the observed
            ones, like Kubo's ``Addresses.Announce``; default none.
        no_announce: Multiaddrs, prefixes or ``/ip4/<net>/ipcidr/<bits>``
            ranges never offered (Kubo's ``Addresses.NoAnnounce``).
        mdns: Discover peers on the local network; default false.
        mdns_interfaces: IPv4 addresses of the interfaces mDNS may use;
            required when ``mdns`` is on (discovery is never on every
            interface by accident).
        allow_peers: Membership allow-list of peer ids ("12D3KooW…"); empty
            (the default) is an open mesh.  When set, gossip, block requests
            and deltas from anyone else are refused and counted.
        gossip_per_s: Gossip messages accepted per second per peer (burst
            twice that); more are dropped and counted.  Default 500.
        requests_per_s: Block requests served per second per peer (burst
            twice that).  Default 200.
        secret: A shared mesh secret: when set, every message must carry its
            HMAC (a private mesh, see :mod:`meshd.p2p.secret`); default "".
        max_peers: Connections kept (2..10000, default 32).  A mesh of at
            most this many other live nodes is a full mesh; above it each
            node keeps the neighbours :mod:`lattice.topology` picks, a
            bounded-degree mesh that stays connected when any node dies.
    """

    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4601",)
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    no_announce: tuple[str, ...] = ()
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    allow_peers: tuple[str, ...] = ()
    gossip_per_s: float = 500.0
    requests_per_s: float = 200.0
    secret: str = ""
    max_peers: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or (self.secret and len(self.secret) < 16):
            raise ConfigError("[p2p] secret must be empty or at least 16 characters")
        for addr in _str_tuple(self, "p2p", "listen"):
            _multiaddr("p2p", "listen", addr)
        for name in ("bootstrap", "announce", "no_announce"):
            for addr in _str_tuple(self, "p2p", name):
                _multiaddr("p2p", name, addr)
        _bool(self, "p2p", "mdns")
        _str_tuple(self, "p2p", "mdns_interfaces")
        if self.mdns and not self.mdns_interfaces:
            raise ConfigError("[p2p] mdns = true needs mdns_interfaces (the IPv4 addresses to announce on)")
        for pid in _str_tuple(self, "p2p", "allow_peers"):
            if not pid.startswith(("12D3KooW", "Qm")) or len(pid) > 128:
                raise ConfigError(f"[p2p] allow_peers: {pid!r} is not a libp2p peer id")
        _positive_float(self, "p2p", "gossip_per_s")
        _positive_float(self, "p2p", "requests_per_s")
        _int(self, "p2p", "max_peers", minimum=2, maximum=10_000)


@dataclass(frozen=True)
class IpfsConfig:
    """``[ipfs]``: where blocks live.

    Attributes:
        api: URL or multiaddr of a Kubo RPC API; empty (the default) means the
            embedded block store under ``<home>/blocks``.
    """

    api: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.api, str):
            raise ConfigError(f"[ipfs] api must be a string, got {self.api!r}")
        if self.api and not self.api.startswith(("/", "http://", "https://")):
            raise ConfigError(f"[ipfs] api must be empty, an http(s) URL or a multiaddr, got {self.api!r}")


@dataclass(frozen=True)
class DockerConfig:
    """``[docker]``: the Docker engine that runs ``docker-json-runner`` engines.

    Attributes:
        host: Docker daemon URL (``unix:///run/docker.sock``, ``tcp://h:2375``);
            ``"off"`` disables Docker.  Empty (the default) means the
            ``DOCKER_HOST`` the CLI passes, else ``unix:///var/run/docker.sock``
            when that socket exists.  An unreachable daemon is logged and the
            node runs without Docker (docker tasks then fail with a reason).
        max_image_mb: Largest ``docker save`` tarball ``POST /v1/engines/docker``
            accepts, in MiB; default 4096.  Independent of ``[api]
            max_body_bytes``: image uploads are streamed to disk, not buffered.
    """

    host: str = ""
    max_image_mb: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise ConfigError(f"[docker] host must be a string, got {self.host!r}")
        if self.host not in ("", "off") and "://" not in self.host:
            raise ConfigError(f"[docker] host must be empty, \"off\" or a URL such as unix:///run/docker.sock, "
                              f"got {self.host!r}")
        _int(self, "docker", "max_image_mb", minimum=1, maximum=1024 * 1024)


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: logging.

    Attributes:
        level: One of debug, info, warning, error; default info.
    """

    level: str = "info"

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS:
            raise ConfigError(f"[log] level must be one of {list(LOG_LEVELS)}, got {self.level!r}")


@dataclass(frozen=True)
class Config:
    """The whole ``config.toml``: one record per table, all defaulted."""

    node: NodeConfig = field(default_factory=NodeConfig)
    api: ApiOptions = field(default_factory=ApiOptions)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    ipfs: IpfsConfig = field(default_factory=IpfsConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    # Defined below Config; the lambdas defer the lookup to instantiation.
    owner: "OwnerConfig" = field(default_factory=lambda: OwnerConfig())
    store: "StoreConfig" = field(default_factory=lambda: StoreConfig())
    log: LogConfig = field(default_factory=LogConfig)

    def to_toml_dict(self) -> dict[str, dict[str, Any]]:
        """The file form: tuples as lists, and without the API token."""
        out: dict[str, dict[str, Any]] = {}
        for section in dataclasses.fields(self):
            record = getattr(self, section.name)
            out[section.name] = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(record).items()
                if key in _FILE_KEYS[section.name]
            }
        return out


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: the storage budget (:mod:`meshd.store.collector`).

    Attributes:
        max_bytes: The block store's budget in bytes; default 0, no budget
            (nothing is ever collected).  Over it, the node drops blocks least
            recently used first, down to ``low_water`` of it, but never a block
            it pins, one in use, or one fewer than ``min_holders`` archivists
            hold.  The embedded store only: with ``[ipfs] api`` the IPFS node's
            own ``Datastore.StorageMax`` and ``repo gc`` apply, and a non-zero
            value is a start-up error.
        min_holders: Live archivists, other than this node, whose signed
            reports must cover a block before it is dropped; default 2 (as
            ``[archive] min_archivists``), so one lost disk never loses data.
        low_water: A round collects down to this fraction of ``max_bytes``;
            default 0.9.
        check_s: How often the store's size is compared with the budget;
            default 2.0.
        min_idle_s: Blocks read or written this recently are in use (being
            served, fetched, or just written) and kept; default 30.0.
    """

    max_bytes: int = 0
    min_holders: int = 2
    low_water: float = 0.9
    check_s: float = 2.0
    min_idle_s: float = 30.0

    def __post_init__(self) -> None:
        _int(self, "store", "max_bytes", minimum=0)
        _int(self, "store", "min_holders", minimum=1, maximum=1000)
        if _positive_float(self, "store", "low_water") > 1:
            raise ConfigError(f"[store] low_water must be in (0, 1], got {self.low_water}")
        if _positive_float(self, "store", "check_s") > 3600:
            raise ConfigError(f"[store] check_s must be at most 3600, got {self.check_s}")
        min_idle = self.min_idle_s
        if isinstance(min_idle, bool) or not isinstance(min_idle, (int, float)) or not 0 <= min_idle <= 86_400:
            raise ConfigError(f"[store] min_idle_s must be a number in [0, 86400], got {min_idle!r}")
        _set(self, "min_idle_s", float(min_idle))


@dataclass(frozen=True)
class OwnerConfig:
    """``[owner]``: when the machine's owner lets meshd run (:mod:`meshd.owner`).

    Attributes:
        preset: ``server`` (always run; the default) or ``desktop``
            (HTCondor-like: start after 15 idle minutes, suspend on input or
            the owner's CPU load, memory/I/O pressure or battery, continue
            after 5 idle minutes, vacate after 10 suspended).
        signal_file: A JSON file of readings to use instead of the machine's
            own signals (tests, unusual machines); default "" (none).
        poll_s: How often the signals are read; default 0.5.
        windows: Daily ``HH:MM-HH:MM`` local windows in which work may run;
            default none (any time).
        engine_cpu_pct: All native engines together use at most this
            percentage of the machine's CPUs (cgroup v2 ``cpu.max``; Docker
            engines: each container's ``nano_cpus``); default 0 (no cap).
        engine_memory_headroom_mb: Native engines together may use what the
            owner leaves free minus this many MiB (cgroup v2 ``memory.max``,
            recomputed as the owner's use changes); default 0 (no cap).
            Both need a writable cgroup v2 group with the controllers; where
            there is none the daemon logs ``engine_cgroup_unavailable`` with
            the reason and runs engines without these caps.
    """

    preset: str = "server"
    signal_file: str = ""
    poll_s: float = 0.5
    windows: tuple[str, ...] = ()
    engine_cpu_pct: float = 0.0
    engine_memory_headroom_mb: int = 0

    def __post_init__(self) -> None:
        if self.preset not in ("server", "desktop"):
            raise ConfigError(f"[owner] preset must be \"server\" or \"desktop\", got {self.preset!r}")
        if not isinstance(self.signal_file, str):
            raise ConfigError("[owner] signal_file must be a string")
        if _positive_float(self, "owner", "poll_s") > 60:
            raise ConfigError(f"[owner] poll_s must be at most 60, got {self.poll_s}")
        for w in _str_tuple(self, "owner", "windows"):
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", w):
                raise ConfigError(f"[owner] windows: {w!r} is not HH:MM-HH:MM")
        pct = self.engine_cpu_pct
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
            raise ConfigError(f"[owner] engine_cpu_pct must be a number in [0, 100], got {pct!r}")
        _set(self, "engine_cpu_pct", float(pct))
        _int(self, "owner", "engine_memory_headroom_mb", minimum=0, maximum=10**7)


_SECTIONS: Final[dict[str, type]] = {
    "node": NodeConfig,
    "api": ApiOptions,
    "runner": RunnerConfig,
    "engines": EnginesConfig,
    "p2p": P2PConfig,
    "ipfs": IpfsConfig,
    "docker": DockerConfig,
    "verify": VerifyConfig,
    "archive": ArchiveConfig,
    "log": LogConfig,
    "owner": OwnerConfig,
    "store": StoreConfig,
}
# Keys accepted in the file; the API tokens are deliberately absent (they live
# in their own 0600 files so that config.toml can be shared or pasted safely).
_FILE_KEYS: Final[dict[str, frozenset[str]]] = {
    name: frozenset(f.name for f in dataclasses.fields(cls)) - (_TOKEN_FIELDS if name == "api" else set())
    for name, cls in _SECTIONS.items()
}


def config_from_mapping(data: Mapping[str, Any], *, base: Config | None = None, source: str = "config") -> Config:
    """Build a validated :class:`Config` from TOML-shaped tables.

    Args:
        data: ``{"section": {"key": value}}``; missing keys keep ``base``'s values.
        base: Values to start from; default :class:`Config` defaults.
        source: Named in error messages (a path, or ``"overrides"``).

    Returns:
        The merged, validated configuration.

    Raises:
        ConfigError: An unknown table or key, or a value out of range.
    """
    base = base or Config()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: top level must be a table")
    sections: dict[str, object] = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown table [{name}]; known tables: {sorted(_SECTIONS)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table")
        for key in table:
            if key not in _FILE_KEYS[name]:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in [{name}]; known keys: {sorted(_FILE_KEYS[name])}"
                )
        try:
            sections[name] = dataclasses.replace(getattr(base, name), **dict(table))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return dataclasses.replace(base, **sections)


def load_config(home: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``<home>/config.toml`` and apply ``overrides`` on top.

    Args:
        home: The meshd home directory.
        overrides: Tables that win over the file, e.g. ``{"api": {"listen": ...}}``
            from command-line flags.

    Raises:
        ConfigError: The file is missing, not TOML, or invalid.
    """
    path = Path(home) / CONFIG_FILE
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (run `meshd init`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    config = config_from_mapping(data, source=str(path))
    if overrides:
        config = config_from_mapping(overrides, base=config, source="overrides")
    return config


def write_config(home: str | os.PathLike[str], config: Config) -> Path:
    """Write ``config`` to ``<home>/config.toml`` atomically.

    The temporary file is renamed over the old one so a crash leaves either
    the old or the new file, never half of one.
    """
    path = Path(home) / CONFIG_FILE
    tmp = path.with_name(CONFIG_FILE + ".tmp")
    tmp.write_bytes(tomli_w.dumps(config.to_toml_dict()).encode())
    os.replace(tmp, path)
    return path


def write_default_config(home: str | os.PathLike[str], **overrides: Mapping[str, Any]) -> Config:
    """Write a complete default ``config.toml``, with ``overrides`` applied.

    Every key is written explicitly so users can see what they may change.

    Args:
        home: The meshd home directory (must exist).
        **overrides: Tables by name, e.g. ``api={"listen": "0.0.0.0:7600"}``.

    Returns:
        The configuration written.

    Raises:
        ConfigError: An override names an unknown key or is invalid.
    """
    config = config_from_mapping(overrides, source="overrides")
    write_config(home, config)
    return config
