"""Engine administration on a running node: Docker uploads, signatures, trust.

:class:`EngineAdmin` holds the operations behind ``meshd engine add-docker``,
``sign``, ``trust`` and ``allow`` (the routes are in :mod:`meshd.api.engines`):

* :meth:`EngineAdmin.add_docker` spools a streamed ``docker save`` tarball to
  a temporary file (bounded by ``max_image_bytes``, never held in memory),
  checks the image id the tarball really holds, stores it as a UnixFS file
  (:func:`engines.manifest.put_file`: ``ipfs cat`` prints it), writes a
  ``docker-json-runner`` manifest, signs it with the node key and registers
  it in the engines registry exactly as native engines are (``["add", engine,
  signature]`` and ``["put", "name/<name>", engine]``).  A node that lacks the
  engine fetches these blocks by CID; its :class:`engines.host.EngineHost`
  ``docker load``s the tarball once and caches it by image id.
* :meth:`EngineAdmin.sign` adds this node's signature to any engine whose
  manifest it holds; :meth:`EngineAdmin.add_signature_untrusted` registers a
  signature record made elsewhere (checked before it is stored).
* :meth:`EngineAdmin.trust` and :meth:`EngineAdmin.allow` change the policy:
  they rewrite ``[engines]`` in the home's ``config.toml`` (so a restart keeps
  them; the file is rewritten whole, comments are not kept) and apply it to
  the live engine host at once.

Crash safety of an upload: blocks first (leaves, then the nodes above them), the
manifest next, the signature, and the registry commit last, so a crash at any
point leaves only unreferenced blocks and the upload can simply be repeated.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from engines.auth import AuthPolicy
from engines.seccomp import status as seccomp_status
from engines.errors import BadManifest, EngineCorrupt, EngineMissing
from engines.host import publish_signature
from engines.image import tarball_image_id
from engines.manifest import (DockerImage, DockerManifest, Resources, encode_manifest, load_manifest,
                              public_key_bytes, put_file, signature_from_untrusted)
from lattice.cid import CID, RAW
from lattice.errors import BadCID

from ..config import load_config, write_config
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..p2p.identity import peer_id_from_public_key
from ..runtime.logs import get_logger

log = get_logger("meshd.engines")

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def publisher_key_untrusted(text: str) -> bytes:
    """The raw Ed25519 key named by 64 hex digits or an Ed25519 peer id ("12D3KooW...").

    Raises:
        BadRequest: neither form (code ``bad_publisher``).
    """
    text = text.strip()
    if _HEX64.match(text):
        return bytes.fromhex(text)
    if 0 < len(text) <= 64 and all(c in _B58 for c in text):
        num = 0
        for c in text:
            num = num * 58 + _B58.index(c)
        # An Ed25519 peer id is base58(00 24 08 01 12 20 || key): the key is
        # the last 32 bytes, and re-deriving the id checks the whole prefix.
        key = num.to_bytes(max(32, (num.bit_length() + 7) // 8), "big")[-32:]
        if peer_id_from_public_key(key) == text:
            return key
    raise BadRequest(f"publisher {text[:80]!r} is neither 64 hex digits nor an Ed25519 peer id",
                     code="bad_publisher")


def _cid_untrusted(text: str, what: str) -> CID:
    try:
        return CID.parse_untrusted(text)
    except BadCID as exc:
        raise BadRequest(f"invalid {what} {text[:80]!r}: {exc}", code="bad_cid") from None


def put_file_from_path(store: Any, path: Path) -> CID:
    """:func:`engines.manifest.put_file` for a file on disk (read one chunk at a time).

    Gives the CID ``ipfs add --cid-version 1 --raw-leaves`` prints for the
    file; blocks are stored before the nodes that link them.
    """
    return put_file(store, path)


@dataclasses.dataclass(frozen=True)
class DockerUpload:
    """The fields of a Docker engine upload besides its tarball (query parameters).

    Attributes:
        name: Engine name; default the image tag.
        tag: The image's ``name:tag`` (informational; the id is what runs).
        cmd: Command run in the container; empty = the image's CMD.
        protocol: ``json`` (one document per run, cold) or ``jsonl`` (can run warm).
        timeout_s: Per-task timeout (manifest ``resources.timeout_s``); default 60.
        memory_mb: Container memory limit; default 1024.
        sign: Sign with the node key (default).  Unsigned engines run only
            when a trusted publisher signs them or they are allow-listed.
    """

    name: str = ""
    tag: str = ""
    cmd: tuple[str, ...] = ()
    protocol: str = "json"
    timeout_s: float = 60.0
    memory_mb: int = 1024
    sign: bool = True


class EngineAdmin:
    """Engine operations of one node.  Constructing it does no I/O.

    Args:
        node: The :class:`meshd.node.Node`.
        host: The node's :class:`engines.host.EngineHost` (its policy is
            replaced live by :meth:`trust` and :meth:`allow`).
        home: The node's :class:`meshd.home.Home` (``config.toml``, temp space).
        max_image_bytes: Largest tarball :meth:`add_docker` accepts.
    """

    def __init__(self, node: Any, host: Any, home: Any, *, max_image_bytes: int) -> None:
        self.node = node
        self.host = host
        self.home = home
        self.max_image_bytes = max_image_bytes
        self._config_lock = trio.Lock()

    # -- Docker engines -------------------------------------------------------------

    async def add_docker(self, body: AsyncIterator[bytes], upload: DockerUpload) -> dict[str, Any]:
        """Store a streamed ``docker save`` tarball as an engine; return its CID.

        Raises:
            PayloadTooLarge: the tarball exceeds ``max_image_bytes``.
            BadRequest: it is not a one-image tarball, or the fields do not
                form a valid manifest.

        Cancellation leaves at most unreferenced blocks (see the module doc).
        """
        store = self.node.store
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=".tar", dir=self.home.path)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            size = 0
            async with await trio.open_file(tmp, "wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > self.max_image_bytes:
                        raise PayloadTooLarge(f"image tarball exceeds the limit of {self.max_image_bytes} bytes "
                                              "([docker] max_image_mb)")
                    await out.write(chunk)
            if size == 0:
                raise BadRequest("the request body must be a `docker save` tarball", code="bad_image")
            try:
                image_id = await trio.to_thread.run_sync(tarball_image_id, str(tmp))
            except EngineCorrupt as exc:
                raise BadRequest(f"not a docker image: {exc}", code="bad_image") from None
            name = upload.name or upload.tag or image_id.replace("sha256:", "image-")[:18]
            try:
                resources = Resources(timeout_s=upload.timeout_s, memory_mb=upload.memory_mb)
                manifest = DockerManifest(name=name, image=DockerImage(CID.for_block(RAW, b""), image_id, upload.tag),
                                          cmd=upload.cmd, protocol=upload.protocol,  # type: ignore[arg-type]
                                          resources=resources)
            except BadManifest as exc:
                raise BadRequest(f"invalid engine: {exc}", code="bad_manifest") from None
            file_cid = await trio.to_thread.run_sync(put_file_from_path, store, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        manifest = dataclasses.replace(manifest, image=dataclasses.replace(manifest.image, tar=file_cid))
        cid, data = encode_manifest(manifest)
        store.put(cid, data)  # after the image blocks: a stored manifest never names absent local blocks
        ops: list[list[Any]] = [["put", f"name/{name}", cid]]
        sig = None
        if upload.sign:
            sig = publish_signature(store, cid, self.node.private_key())
            ops.insert(0, ["add", str(cid), sig])
        await self.node.objects.commit(self.node.engines_obj, ops)
        log.info("docker_engine_added", engine=str(cid), name=name, image=image_id, bytes=size, signed=upload.sign)
        return {"cid": str(cid), "name": name, "image_id": image_id, "image_tar": str(file_cid), "bytes": size,
                "signature": None if sig is None else str(sig)}

    # -- signatures -------------------------------------------------------------------

    async def sign(self, engine_text: str) -> dict[str, Any]:
        """Sign engine ``engine_text`` with the node key and register the signature.

        Raises:
            NotFound: the manifest is not in the local store (``engine_not_found``).
            BadRequest: the block is not an engine manifest.
        """
        cid = _cid_untrusted(engine_text, "engine CID")
        try:
            load_manifest(self.node.store, cid)
        except EngineMissing:
            raise NotFound(f"engine manifest {cid} is not in this node's store", code="engine_not_found") from None
        except BadManifest as exc:
            raise BadRequest(f"{cid} is not an engine manifest: {exc}", code="bad_manifest") from None
        key = self.node.private_key()
        sig = publish_signature(self.node.store, cid, key)
        await self.node.objects.commit(self.node.engines_obj, [["add", str(cid), sig]])
        return {"cid": str(cid), "signature": str(sig), "publisher": public_key_bytes(key).hex()}

    async def add_signature_untrusted(self, engine_text: str, record: bytes) -> dict[str, Any]:
        """Register a ``meshd/engine-sig`` record made by another publisher.

        Raises:
            BadRequest: the record is malformed, names another engine, or
                does not verify (``bad_signature``).
        """
        cid = _cid_untrusted(engine_text, "engine CID")
        try:
            sig = signature_from_untrusted(record)
        except BadManifest as exc:
            raise BadRequest(f"invalid signature record: {exc}", code="bad_signature") from None
        if sig.engine != cid:
            raise BadRequest(f"the signature is for engine {sig.engine}, not {cid}", code="bad_signature")
        if not sig.verify():
            raise BadRequest("the signature does not verify", code="bad_signature")
        sig_cid, data = sig.encode()
        self.node.store.put(sig_cid, data)
        await self.node.objects.commit(self.node.engines_obj, [["add", str(cid), sig_cid]])
        return {"cid": str(cid), "signature": str(sig_cid), "publisher": sig.publisher.hex()}

    # -- policy -------------------------------------------------------------------------

    async def trust(self, publisher_text: str) -> dict[str, Any]:
        """Trust a publisher: persisted in ``[engines] trusted_publishers`` and live at once."""
        key = publisher_key_untrusted(publisher_text)
        async with self._config_lock:
            config = load_config(self.home.path)  # the file alone, without command-line overrides
            keys = config.engines.trusted_publishers
            if key.hex() not in {k.lower() for k in keys}:
                engines = dataclasses.replace(config.engines, trusted_publishers=(*keys, key.hex()))
                write_config(self.home.path, dataclasses.replace(config, engines=engines))
            p = self.host.policy
            self.host.policy = AuthPolicy(p.trusted_publishers | {key}, p.allow_cids)
        log.info("publisher_trusted", publisher=key.hex())
        return {"publisher": key.hex(), "peer_id": peer_id_from_public_key(key), "live": True}

    async def allow(self, engine_text: str) -> dict[str, Any]:
        """Allow-list an engine CID: persisted in ``[engines] allow`` and live at once."""
        cid = _cid_untrusted(engine_text, "engine CID")
        async with self._config_lock:
            config = load_config(self.home.path)
            if str(cid) not in config.engines.allow:
                engines = dataclasses.replace(config.engines, allow=(*config.engines.allow, str(cid)))
                write_config(self.home.path, dataclasses.replace(config, engines=engines))
            p = self.host.policy
            self.host.policy = AuthPolicy(p.trusted_publishers, p.allow_cids | {cid})
        log.info("engine_allowed", engine=str(cid))
        return {"cid": str(cid), "live": True}

    def policy(self) -> dict[str, Any]:
        """The live policy, this node's publisher key and the engine host's counters."""
        p = self.host.policy
        docker = self.host.docker
        return {
            "publisher": public_key_bytes(self.node.private_key()).hex(),
            "trusted_publishers": sorted(k.hex() for k in p.trusted_publishers),
            "allow": sorted(str(c) for c in p.allow_cids),
            "docker": {"available": docker is not None,
                       "statistics": None if docker is None else dataclasses.asdict(docker.statistics())},
            "host": dataclasses.asdict(self.host.statistics()),
            "seccomp": seccomp_status(),  # the jailed engines' syscall filter (engines.seccomp)
        }
