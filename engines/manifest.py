"""Engine manifests, chunked engine files and publisher signatures.

An engine is named by the CID of its manifest: a small DAG-CBOR record whose
links pin every byte the engine runs.  Three record kinds live here:

``meshd/engine`` v1, type ``bin-json-runner`` (a native program)::

    {"t": "meshd/engine", "v": 1, "type": "bin-json-runner", "name": "fib",
     "platforms": {"linux-x86_64": {"file": CID, "executable": "bin/fib",
                                    "format": "exe" | "tar"}},
     "protocol": "json" | "jsonl" | "python",
     "resources": {"cpu_s": 60, "memory_mb": 1024, "timeout_s": 60.0, "nofile": 256},
     # optional:
     "interpreter": "python3",      # run as <node's interpreter> <executable>
     "args": ["map"],               # extra argv after the executable
     "serve_args": ["--jsonl"],     # argv that switches a "json" engine to jsonl serving
     "entry": "fibsum:map_range",   # protocol "python": module:function
     "comparator": {...},
     "deterministic": true}         # same input, same output: results may be reused

``deterministic`` (both engine types, optional, written only when true) lets
the mesh's result cache (:mod:`lattice.resultcache`) complete a task from an
earlier result of the same engine on the same input instead of running it.
The record stays v1: a manifest without the field is the same record as
before, and a node that predates the field refuses a manifest that carries
it (unknown field), so such an engine simply does not run there.

* ``file`` is the CID of the content.  For format ``exe`` it is the program
  itself (``executable`` is the name it is written under); for ``tar`` it is a
  tar archive that is unpacked and ``executable`` is a path inside it.
* ``interpreter`` is a *name*, never a path: the node maps it to a local
  program (``HostOptions.interpreters``; ``"python3"`` maps to the node's own
  ``sys.executable``).  Without it the executable is run directly, so a ``#!``
  script works as long as its interpreter is on the sandbox ``PATH``.
* Protocols: ``json`` reads one JSON document on stdin and writes one on
  stdout, then exits; with ``serve_args`` it can also run warm, speaking
  ``jsonl``.  ``jsonl`` always speaks one JSON object per line in, one per line
  out (a cold run sends one line).  ``python`` imports ``entry`` from the
  engine directory and calls ``function(input) -> output`` (cold: in a fresh
  sandboxed interpreter; warm: in a pool worker).

``meshd/engine`` v1, type ``docker-json-runner``::

    {"t": "meshd/engine", "v": 1, "type": "docker-json-runner", "name": ...,
     "image": {"tar": CID, "id": "sha256:...", "tag": "..."},
     "cmd": [...], "protocol": "json" | "jsonl", "resources": {...},
     "deterministic": true}         # optional, as above

``meshd/engine-sig`` v1 (a detached publisher signature)::

    {"t": "meshd/engine-sig", "v": 1, "engine": CID,
     "publisher": <32-byte Ed25519 public key>, "sig": <64 bytes>}

The signed message is ``b"meshd/engine-sig/v1\\x00" + engine_cid.raw``; the
prefix keeps these signatures from being replayed as any other meshd record.

Files (the content a manifest links) are stored and read by
:mod:`engines.files`; its functions are re-exported here.
"""

from __future__ import annotations

import math
import platform as _platform
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lattice.cid import CID, DAG_CBOR
from lattice.codec import decode_untrusted, encode_block
from lattice.errors import BadInput, BlockNotFound

from .errors import BadManifest, EngineMissing
from .files import CHUNK_SIZE, FILE_TAG, missing_file_blocks, put_file, read_file

if TYPE_CHECKING:  # pragma: no cover
    from lattice.blockstore import BlockStore

ENGINE_TAG: Final = "meshd/engine"
SIG_TAG: Final = "meshd/engine-sig"
_SIG_DOMAIN: Final = b"meshd/engine-sig/v1\x00"

Protocol_ = Literal["json", "jsonl", "python"]
_PROTOCOLS: Final = frozenset({"json", "jsonl", "python"})
_DOCKER_PROTOCOLS: Final = frozenset({"json", "jsonl"})
_FORMATS: Final = frozenset({"exe", "tar"})
_PLATFORM_RE: Final = re.compile(r"^[a-z0-9]+-[a-z0-9_]+$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_ENTRY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
_INTERP_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def current_platform() -> str:
    """This node's platform key, e.g. ``"linux-x86_64"`` (the keys of ``platforms``)."""
    machine = _platform.machine().lower() or "unknown"
    return f"{sys.platform}-{ {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(machine, machine)}"


@dataclass(frozen=True)
class Resources:
    """Per-run limits an engine declares (the node may clamp them).

    Attributes:
        cpu_s: CPU seconds (RLIMIT_CPU) of a cold run.  Default 60.
        memory_mb: Address-space limit (RLIMIT_AS) in MiB.  Default 1024.
        timeout_s: Wall-clock limit of one task.  Default 60.0.
        nofile: Open-file limit (RLIMIT_NOFILE).  Default 256.
    """

    cpu_s: int = 60
    memory_mb: int = 1024
    timeout_s: float = 60.0
    nofile: int = 256

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_mb", "nofile"):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= 10**7:
                raise BadManifest(f"resources.{name} must be an integer in 1..10^7")
        t = self.timeout_s
        if type(t) not in (int, float) or not math.isfinite(t) or not 0 < t <= 86400:
            raise BadManifest("resources.timeout_s must be a number in (0, 86400]")

    def to_record(self) -> dict[str, Any]:
        return {"cpu_s": self.cpu_s, "memory_mb": self.memory_mb,
                "timeout_s": float(self.timeout_s), "nofile": self.nofile}


@dataclass(frozen=True)
class PlatformBuild:
    """One platform's program: the file CID, the path to execute, its format."""

    file: CID
    executable: str
    format: Literal["exe", "tar"] = "exe"

    def __post_init__(self) -> None:
        if type(self.file) is not CID:
            raise BadManifest("platform file must be a CID link")
        if self.format not in _FORMATS:
            raise BadManifest(f"platform format must be one of {sorted(_FORMATS)}")
        _check_relpath(self.executable, "executable")

    def to_record(self) -> dict[str, Any]:
        return {"file": self.file, "executable": self.executable, "format": self.format}


@dataclass(frozen=True)
class NativeManifest:
    """A ``bin-json-runner`` engine (see the module docstring for the record)."""

    name: str
    platforms: Mapping[str, PlatformBuild]
    protocol: Protocol_ = "json"
    resources: Resources = field(default_factory=Resources)
    interpreter: str | None = None
    args: tuple[str, ...] = ()
    serve_args: tuple[str, ...] | None = None
    entry: str | None = None
    comparator: Mapping[str, Any] | None = None
    deterministic: bool = False

    type: Literal["bin-json-runner"] = field(default="bin-json-runner", init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.platforms, Mapping) or not self.platforms:
            raise BadManifest("platforms must be a non-empty map")
        for key, build in self.platforms.items():
            if type(key) is not str or not _PLATFORM_RE.match(key):
                raise BadManifest(f"bad platform key {key!r} (want e.g. 'linux-x86_64')")
            if type(build) is not PlatformBuild:
                raise BadManifest("platform entries must be PlatformBuild")
        object.__setattr__(self, "platforms", MappingProxyType(dict(self.platforms)))
        if self.protocol not in _PROTOCOLS:
            raise BadManifest(f"protocol must be one of {sorted(_PROTOCOLS)}")
        if type(self.resources) is not Resources:
            raise BadManifest("resources must be Resources")
        if self.interpreter is not None and (type(self.interpreter) is not str or not _INTERP_RE.match(self.interpreter)):
            raise BadManifest("interpreter must be a short name such as 'python3', never a path")
        object.__setattr__(self, "args", _check_args(self.args, "args"))
        if self.serve_args is not None:
            object.__setattr__(self, "serve_args", _check_args(self.serve_args, "serve_args"))
        if self.protocol == "python":
            if type(self.entry) is not str or not _ENTRY_RE.match(self.entry):
                raise BadManifest("protocol 'python' needs entry 'module:function'")
        elif self.entry is not None:
            raise BadManifest("entry is only allowed with protocol 'python'")
        if self.comparator is not None and not isinstance(self.comparator, Mapping):
            raise BadManifest("comparator must be a map")
        if type(self.deterministic) is not bool:
            raise BadManifest("deterministic must be true or false")

    @property
    def warm_capable(self) -> bool:
        """True when the engine can be hosted by a long-lived pool worker."""
        return self.protocol in ("jsonl", "python") or self.serve_args is not None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "t": ENGINE_TAG, "v": 1, "type": self.type, "name": self.name,
            "platforms": {k: b.to_record() for k, b in self.platforms.items()},
            "protocol": self.protocol, "resources": self.resources.to_record(),
        }
        if self.interpreter is not None:
            rec["interpreter"] = self.interpreter
        if self.args:
            rec["args"] = list(self.args)
        if self.serve_args is not None:
            rec["serve_args"] = list(self.serve_args)
        if self.entry is not None:
            rec["entry"] = self.entry
        if self.comparator is not None:
            rec["comparator"] = dict(self.comparator)
        if self.deterministic:
            rec["deterministic"] = True
        return rec

    def links(self) -> list[CID]:
        """CIDs of every platform file (not their chunks)."""
        return [b.file for b in self.platforms.values()]


@dataclass(frozen=True)
class DockerImage:
    """A ``docker save`` tarball (file CID) plus the image id and tag inside it."""

    tar: CID
    id: str
    tag: str = ""

    def __post_init__(self) -> None:
        if type(self.tar) is not CID:
            raise BadManifest("image.tar must be a CID link")
        if type(self.id) is not str or not re.fullmatch(r"sha256:[0-9a-f]{64}", self.id):
            raise BadManifest("image.id must be 'sha256:' + 64 hex digits")
        if type(self.tag) is not str or len(self.tag) > 256:
            raise BadManifest("image.tag must be a string of at most 256 characters")

    def to_record(self) -> dict[str, Any]:
        return {"tar": self.tar, "id": self.id, "tag": self.tag}


@dataclass(frozen=True)
class DockerManifest:
    """A ``docker-json-runner`` engine (see the module docstring for the record)."""

    name: str
    image: DockerImage
    cmd: tuple[str, ...] = ()
    protocol: Literal["json", "jsonl"] = "json"
    resources: Resources = field(default_factory=Resources)
    deterministic: bool = False

    type: Literal["docker-json-runner"] = field(default="docker-json-runner", init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if type(self.image) is not DockerImage:
            raise BadManifest("image must be DockerImage")
        object.__setattr__(self, "cmd", _check_args(self.cmd, "cmd"))
        if self.protocol not in _DOCKER_PROTOCOLS:
            raise BadManifest(f"docker protocol must be one of {sorted(_DOCKER_PROTOCOLS)}")
        if type(self.resources) is not Resources:
            raise BadManifest("resources must be Resources")
        if type(self.deterministic) is not bool:
            raise BadManifest("deterministic must be true or false")

    @property
    def warm_capable(self) -> bool:
        return self.protocol == "jsonl"

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"t": ENGINE_TAG, "v": 1, "type": self.type, "name": self.name,
                               "image": self.image.to_record(), "cmd": list(self.cmd),
                               "protocol": self.protocol, "resources": self.resources.to_record()}
        if self.deterministic:
            rec["deterministic"] = True
        return rec

    def links(self) -> list[CID]:
        return [self.image.tar]


Manifest = NativeManifest | DockerManifest


def _check_name(name: object) -> None:
    if type(name) is not str or not _NAME_RE.match(name):
        raise BadManifest("name must be 1..128 characters of [A-Za-z0-9._:/@+-]")


def _check_relpath(path: object, what: str) -> None:
    if type(path) is not str or not 0 < len(path) <= 255 or "\x00" in path:
        raise BadManifest(f"{what} must be a relative path of 1..255 characters")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BadManifest(f"{what} {path!r} must be a normalized relative path")


def _check_args(args: object, what: str) -> tuple[str, ...]:
    if not isinstance(args, (list, tuple)) or len(args) > 64:
        raise BadManifest(f"{what} must be a list of at most 64 strings")
    for a in args:
        if type(a) is not str or len(a) > 4096 or "\x00" in a:
            raise BadManifest(f"{what} entries must be strings without NUL")
    return tuple(args)


def encode_manifest(manifest: Manifest) -> tuple[CID, bytes]:
    """Encode ``manifest`` as a DAG-CBOR block; the CID is the engine's identity."""
    return encode_block(manifest.to_record())


def _field(rec: Mapping[str, Any], key: str, typ: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in rec:
        if optional:
            return None
        raise BadManifest(f"missing field {key!r}")
    value = rec[key]
    if not isinstance(value, typ) or (typ is int and type(value) is bool):
        raise BadManifest(f"field {key!r} has the wrong type")
    return value


def _only(rec: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = set(rec) - set(allowed)
    if extra:
        raise BadManifest(f"unknown field(s) in {where}: {sorted(extra)}")


def _resources(rec: object) -> Resources:
    if not isinstance(rec, dict):
        raise BadManifest("resources must be a map")
    _only(rec, ("cpu_s", "memory_mb", "timeout_s", "nofile"), "resources")
    defaults = Resources()
    t = rec.get("timeout_s", defaults.timeout_s)
    return Resources(cpu_s=rec.get("cpu_s", defaults.cpu_s), memory_mb=rec.get("memory_mb", defaults.memory_mb),
                     timeout_s=float(t) if type(t) is int else t, nofile=rec.get("nofile", defaults.nofile))


def manifest_from_record_untrusted(rec: object) -> Manifest:
    """Validate a decoded record and build the manifest; raises :class:`BadManifest`."""
    if not isinstance(rec, dict):
        raise BadManifest("manifest must be a map")
    if rec.get("t") != ENGINE_TAG:
        raise BadManifest(f"record type tag must be {ENGINE_TAG!r}")
    if rec.get("v") != 1 or type(rec.get("v")) is not int:
        raise BadManifest(f"unsupported manifest version {rec.get('v')!r}")
    kind = rec.get("type")
    try:
        if kind == "bin-json-runner":
            _only(rec, ("t", "v", "type", "name", "platforms", "protocol", "resources", "interpreter",
                        "args", "serve_args", "entry", "comparator", "deterministic"), "manifest")
            plats = _field(rec, "platforms", dict)
            builds = {}
            for key, b in plats.items():
                if not isinstance(b, dict):
                    raise BadManifest(f"platform {key!r} must be a map")
                _only(b, ("file", "executable", "format"), f"platform {key!r}")
                builds[key] = PlatformBuild(file=_field(b, "file", CID), executable=_field(b, "executable", str),
                                            format=_field(b, "format", str))
            return NativeManifest(
                name=_field(rec, "name", str), platforms=builds, protocol=_field(rec, "protocol", str),
                resources=_resources(_field(rec, "resources", dict)),
                interpreter=_field(rec, "interpreter", str, optional=True),
                args=tuple(_field(rec, "args", list, optional=True) or ()),
                serve_args=_opt_tuple(_field(rec, "serve_args", list, optional=True)),
                entry=_field(rec, "entry", str, optional=True),
                comparator=_field(rec, "comparator", dict, optional=True),
                deterministic=_deterministic(rec))
        if kind == "docker-json-runner":
            _only(rec, ("t", "v", "type", "name", "image", "cmd", "protocol", "resources", "deterministic"), "manifest")
            img = _field(rec, "image", dict)
            _only(img, ("tar", "id", "tag"), "image")
            return DockerManifest(
                name=_field(rec, "name", str),
                image=DockerImage(tar=_field(img, "tar", CID), id=_field(img, "id", str),
                                  tag=_field(img, "tag", str, optional=True) or ""),
                cmd=tuple(_field(rec, "cmd", list)), protocol=_field(rec, "protocol", str),
                resources=_resources(_field(rec, "resources", dict)), deterministic=_deterministic(rec))
    except (TypeError, ValueError) as exc:
        raise BadManifest(f"invalid manifest: {exc}") from None
    raise BadManifest(f"unknown engine type {kind!r}")


def _deterministic(rec: Mapping[str, Any]) -> bool:
    # Written only when true, so a record with ``false`` is not canonical:
    # two records for one engine would name two engines.
    if "deterministic" not in rec:
        return False
    if rec["deterministic"] is not True:
        raise BadManifest("deterministic is written only as true")
    return True


def _opt_tuple(v: list | None) -> tuple | None:
    return None if v is None else tuple(v)


def manifest_from_untrusted(data: bytes) -> Manifest:
    """Decode and validate manifest block bytes.

    Raises:
        BadManifest: the bytes are not canonical DAG-CBOR or not a valid v1
            engine manifest.
    """
    try:
        rec = decode_untrusted(data, max_size=256 * 1024)
    except BadInput as exc:
        raise BadManifest(f"manifest is not DAG-CBOR: {exc}") from None
    return manifest_from_record_untrusted(rec)


# -- signatures ---------------------------------------------------------------

@dataclass(frozen=True)
class EngineSignature:
    """A publisher's Ed25519 signature over an engine manifest CID."""

    engine: CID
    publisher: bytes
    sig: bytes

    def to_record(self) -> dict[str, Any]:
        return {"t": SIG_TAG, "v": 1, "engine": self.engine, "publisher": self.publisher, "sig": self.sig}

    def encode(self) -> tuple[CID, bytes]:
        """The signature record as a DAG-CBOR block ``(cid, bytes)``."""
        return encode_block(self.to_record())

    def verify(self) -> bool:
        """True when ``sig`` is ``publisher``'s signature over ``engine``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.publisher).verify(self.sig, _SIG_DOMAIN + self.engine.raw)
        except (InvalidSignature, ValueError):
            return False
        return True


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte form of an Ed25519 key's public half."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_manifest(cid: CID, private_key: Ed25519PrivateKey) -> EngineSignature:
    """Sign engine ``cid`` with a publisher key."""
    return EngineSignature(engine=cid, publisher=public_key_bytes(private_key),
                           sig=private_key.sign(_SIG_DOMAIN + cid.raw))


def signature_from_untrusted(data: bytes) -> EngineSignature:
    """Decode a ``meshd/engine-sig`` block (shape only: call ``verify()``).

    Raises:
        BadManifest: malformed record.
    """
    try:
        rec = decode_untrusted(data, max_size=4096)
    except BadInput as exc:
        raise BadManifest(f"signature is not DAG-CBOR: {exc}") from None
    if not isinstance(rec, dict) or rec.get("t") != SIG_TAG or rec.get("v") != 1:
        raise BadManifest(f"not a {SIG_TAG} v1 record")
    _only(rec, ("t", "v", "engine", "publisher", "sig"), "signature")
    engine, pub, sig = rec.get("engine"), rec.get("publisher"), rec.get("sig")
    if type(engine) is not CID or type(pub) is not bytes or len(pub) != 32 or type(sig) is not bytes or len(sig) != 64:
        raise BadManifest("signature needs engine CID, 32-byte publisher and 64-byte sig")
    return EngineSignature(engine=engine, publisher=pub, sig=sig)


def load_manifest(store: "BlockStore", cid: CID) -> Manifest:
    """Read and validate manifest ``cid`` from ``store``.

    Raises:
        EngineMissing: the manifest block is absent.
        BadManifest: it is not a valid manifest.
    """
    try:
        data = store.get(cid)
    except BlockNotFound:
        raise EngineMissing(f"engine manifest {cid} is not in the local store", [cid]) from None
    if cid.codec != DAG_CBOR or not cid.verify(data):
        raise BadManifest(f"block {cid} is not a dag-cbor manifest block")
    return manifest_from_untrusted(data)


__all__ = [
    "CHUNK_SIZE", "ENGINE_TAG", "FILE_TAG", "SIG_TAG", "DockerImage", "DockerManifest", "EngineSignature",
    "Manifest", "NativeManifest", "PlatformBuild", "Resources", "encode_manifest",
    "load_manifest", "manifest_from_record_untrusted", "manifest_from_untrusted", "missing_file_blocks",
    "public_key_bytes", "put_file", "read_file", "sign_manifest", "signature_from_untrusted",
]
