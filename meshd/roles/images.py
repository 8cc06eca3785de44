"""Which published engine a Docker image name or digest names.

The whitepaper's Listing 2 names a ``docker-json-runner`` task's engine by
``metadata.image`` (``"computes/fibonacci-sum-split:latest"``), not by CID:
"the manager looks up the hash that matches the engine".  meshd's engines
registry (the ``engines`` GOHO) holds signed engine manifests, and a Docker
manifest records the image id and tag it was published from.  This module
maps an image reference to one of them:

* ``sha256:<64 hex>`` or ``<name>@sha256:<64 hex>``: the engine whose image
  id is that digest;
* anything else is a name: the engine registered under ``name/<image>`` (the
  name ``meshd engine add-docker`` gives, by default the image tag), else the
  engine whose image tag is ``<image>`` (``:latest`` when no tag is given).

Several matches resolve to the smallest engine CID, so every node that holds
the same registry resolves an image the same way.  The node resolves a task's
image when the task is enqueued and writes the engine into the task record
(:func:`lattice.task.with_engine`), so the engine a task runs never changes
after it was accepted; a task whose image names no published engine is
refused then, never accepted and failed later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from engines.errors import EngineError
from engines.manifest import DockerManifest, load_manifest
from lattice.blockstore import BlockStore
from lattice.cid import CID
from lattice.errors import BadCID, LatticeError

_DIGEST = re.compile(r"^(?:[^@\s]+@)?(sha256:[0-9a-f]{64})$")


class EngineRegistry(Protocol):
    """The engines GOHO's state: ``<engine CID>`` sets and ``name/<name>`` registers."""

    def register(self, key: str) -> Any | None: ...

    def set_keys(self) -> list[str]: ...


@dataclass(frozen=True)
class RegistryView:
    """What :func:`resolve_image` reads of the registry, copied on the trio thread.

    Resolving loads manifests from the store, which may be slow (IPFS), so it
    runs in a worker thread; the live GOHO state must not be read from there.
    """

    names: dict[str, Any]
    keys: tuple[str, ...]

    @classmethod
    def of(cls, registry: EngineRegistry, image: str) -> "RegistryView":
        return cls({f"name/{image}": registry.register(f"name/{image}")}, tuple(registry.set_keys()))

    def register(self, key: str) -> Any | None:
        return self.names.get(key)

    def set_keys(self) -> list[str]:
        return list(self.keys)


def _with_tag(ref: str) -> str:
    """``name`` → ``name:latest``; a reference with a tag (after the last ``/``) is kept."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"


def _docker_manifest(store: BlockStore, cid: CID) -> DockerManifest | None:
    try:
        m = load_manifest(store, cid)
    except (EngineError, LatticeError):
        return None  # not here (published elsewhere) or not an engine manifest
    return m if isinstance(m, DockerManifest) else None


def resolve_image(image: str, registry: EngineRegistry, store: BlockStore) -> CID | None:
    """The published ``docker-json-runner`` engine that ``image`` names, or None.

    Args:
        image: A name (``repo/name[:tag]``), ``sha256:<hex>`` or ``name@sha256:<hex>``.
        registry: The engines GOHO's state.
        store: Where engine manifests are read (only local blocks; nothing is fetched).

    Returns:
        The engine CID, or None when no published Docker engine matches.
    """
    digest = _DIGEST.match(image.strip().lower())
    if digest is None:
        named = registry.register(f"name/{image}")
        if type(named) is CID and _docker_manifest(store, named) is not None:
            return named
    want = _with_tag(image)
    found: list[CID] = []
    for key in registry.set_keys():
        try:
            cid = CID.parse_untrusted(key)
        except BadCID:
            continue
        m = _docker_manifest(store, cid)
        if m is None:
            continue
        if digest is not None and m.image.id == digest.group(1):
            found.append(cid)
        elif digest is None and m.image.tag and _with_tag(m.image.tag) == want:
            found.append(cid)
    return min(found) if found else None


__all__ = ["EngineRegistry", "RegistryView", "resolve_image"]
