"""``docker save`` / ``docker load`` helpers for engine images.

An engine image travels as a ``docker save`` tarball. Its id is the sha256 of
its config JSON, so a tarball can be checked against the id a manifest names
before anything is loaded: :func:`tarball_image_id` reads ``manifest.json``,
hashes the config blob it points at, and :func:`load_image` refuses a tarball
whose id is not the expected one (and checks the daemon's answer too).

These functions block (docker-py); async callers run them in a thread, as
:class:`engines.docker.DockerRunner` does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import docker.errors

from .errors import EngineCorrupt

__all__ = ["has_image", "load_image", "normalize_id", "save_image", "tarball_image_id"]

_ID = re.compile(r"^(sha256:)?([0-9a-f]{64})$")


def normalize_id(image_id: str) -> str:
    """Returns ``sha256:<64 hex>`` for an image id with or without its prefix.

    Raises:
        EngineCorrupt: ``image_id`` is not a full sha256 image id.
    """
    match = _ID.match(image_id.strip().lower())
    if not match:
        raise EngineCorrupt(f"not a full sha256 image id: {image_id!r}")
    return "sha256:" + match.group(2)


def has_image(client: Any, image_ref: str) -> bool:
    """Tells whether the daemon has ``image_ref`` (an id or a name)."""
    try:
        client.images.get(image_ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def save_image(client: Any, image_ref: str, path: "str | os.PathLike[str] | None" = None
               ) -> "bytes | Path":
    """Saves an image as a ``docker save`` tarball.

    Args:
        client: A ``docker.DockerClient``.
        image_ref: Image id or ``name:tag``. A name is kept in the tarball
            (``RepoTags``), an id is saved unnamed.
        path: Where to write the tarball; when None the bytes are returned.

    Returns:
        The tarball's bytes, or ``path`` once written.

    Raises:
        docker.errors.ImageNotFound: no such image.
    """
    image = client.images.get(image_ref)
    named = image_ref if image_ref in image.tags else False
    chunks = image.save(named=named)
    if path is None:
        return b"".join(chunks)
    target = Path(path)
    # Written beside the target and renamed, so a crash never leaves a
    # truncated tarball under the final name.
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    return target


def tarball_image_id(tar: "str | os.PathLike[str] | bytes") -> str:
    """Computes the id of the (single) image in a ``docker save`` tarball.

    Handles both the legacy layout (``<hex>.json`` config) and the OCI layout
    (``blobs/sha256/<hex>``) of ``manifest.json``'s ``Config`` entry.

    Raises:
        EngineCorrupt: not a tarball of exactly one image, or its config blob
            does not hash to the name it is stored under.
    """
    try:
        with _open_tar(tar) as archive:
            manifest = json.loads(_member(archive, "manifest.json"))
            if not (isinstance(manifest, list) and len(manifest) == 1
                    and isinstance(manifest[0], dict)
                    and isinstance(manifest[0].get("Config"), str)):
                raise EngineCorrupt("image tarball must hold exactly one image")
            config_name = manifest[0]["Config"]
            digest = "sha256:" + hashlib.sha256(_member(archive, config_name)).hexdigest()
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise EngineCorrupt(f"not a docker image tarball: {exc}") from None
    named = re.search(r"([0-9a-f]{64})(\.json)?$", config_name)
    if named and "sha256:" + named.group(1) != digest:
        raise EngineCorrupt(f"image config {config_name} hashes to {digest}")
    return digest


def load_image(client: Any, tar: "str | os.PathLike[str] | bytes",
               expected_id: str | None = None) -> str:
    """Loads a ``docker save`` tarball and returns the loaded image's id.

    Args:
        client: A ``docker.DockerClient``.
        tar: The tarball, as bytes or a path.
        expected_id: The id the image must have; checked on the tarball
            before loading and on the daemon's answer after.

    Returns:
        The image id, ``sha256:<hex>``.

    Raises:
        EngineCorrupt: the tarball is malformed, the daemon rejects it, or
            the id is not ``expected_id``.
    """
    want = normalize_id(expected_id) if expected_id is not None else None
    found = tarball_image_id(tar)
    if want is not None and found != want:
        raise EngineCorrupt(f"image tarball holds {found}, expected {want}")
    try:
        if isinstance(tar, (bytes, bytearray)):
            images = client.images.load(bytes(tar))
        else:
            with open(tar, "rb") as data:
                images = client.images.load(data)
    except (docker.errors.ImageLoadError, docker.errors.APIError) as exc:
        raise EngineCorrupt(f"docker refused the image tarball: {exc}") from None
    ids = {image.id for image in images}
    if found not in ids:
        # Some daemons report only the tag; ask for the id itself.
        if not has_image(client, found):
            raise EngineCorrupt(f"docker loaded {sorted(ids)}, not {found}")
    return found


def _open_tar(tar: "str | os.PathLike[str] | bytes") -> tarfile.TarFile:
    if isinstance(tar, (bytes, bytearray)):
        return tarfile.open(fileobj=io.BytesIO(bytes(tar)), mode="r:")
    return tarfile.open(os.fspath(tar), mode="r:")


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    handle: BinaryIO | None = archive.extractfile(name)
    if handle is None:
        raise KeyError(f"{name} is not a regular file")
    with handle:
        return handle.read()
