"""``docker save`` / ``docker load`` helpers for engine images.

An engine image travels as a ``docker save`` tarball. Its id is the sha256 of
its config JSON, so a tarball can be checked against the id a manifest names
before anything is loaded: :func:`tarball_image_id` reads ``manifest.json``,
hashes the config blob it points at, and :func:`load_image` refuses a tarball
whose id is not the expected one (and checks the daemon's answer too).

A tarball may also *name* images: ``RepoTags`` in ``manifest.json``, the
legacy ``repositories`` file, and the OCI ``index.json`` name annotations.
``docker load`` applies those names to the host, moving a tag such as
``ubuntu:latest`` from the host's image to the loaded one.  Engines are
always run by id, so :func:`load_image` removes every name before loading
(:func:`strip_names`): an authorized image can retag nothing.

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
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import docker.errors

from .errors import EngineCorrupt

__all__ = ["has_image", "load_image", "normalize_id", "save_image", "strip_names", "tarball_image_id"]

#: OCI ``index.json`` annotations that Docker (and containerd) read as image names.
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")

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
        unnamed = strip_names(tar)
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise EngineCorrupt(f"not a docker image tarball: {exc}") from None
    try:
        if isinstance(unnamed, (bytes, bytearray)):
            images = client.images.load(bytes(unnamed))
        else:
            with open(unnamed, "rb") as data:
                images = client.images.load(data)
    except (docker.errors.ImageLoadError, docker.errors.APIError) as exc:
        raise EngineCorrupt(f"docker refused the image tarball: {exc}") from None
    finally:
        if not isinstance(unnamed, (bytes, bytearray)) and not isinstance(tar, (bytes, bytearray)) \
                and os.fspath(unnamed) != os.fspath(tar):
            os.unlink(unnamed)
    ids = {image.id for image in images}
    if found not in ids:
        # Some daemons report only the tag; ask for the id itself.
        if not has_image(client, found):
            raise EngineCorrupt(f"docker loaded {sorted(ids)}, not {found}")
    return found


def _unnamed_manifest(data: bytes) -> bytes:
    manifest = json.loads(data)
    for entry in manifest if isinstance(manifest, list) else ():
        if isinstance(entry, dict):
            entry["RepoTags"] = None
    return json.dumps(manifest).encode()


def _unnamed_index(data: bytes) -> bytes:
    index = json.loads(data)
    for entry in index.get("manifests") or () if isinstance(index, dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("annotations"), dict):
            for key in _NAME_ANNOTATIONS:
                entry["annotations"].pop(key, None)
    return json.dumps(index).encode()


def _names_anything(archive: tarfile.TarFile) -> bool:
    names = set(archive.getnames())
    if "repositories" in names:
        return True
    manifest = json.loads(_member(archive, "manifest.json"))
    if any(isinstance(e, dict) and e.get("RepoTags") for e in manifest if isinstance(manifest, list)):
        return True
    if "index.json" in names:
        index = json.loads(_member(archive, "index.json"))
        for entry in index.get("manifests") or () if isinstance(index, dict) else ():
            annotations = entry.get("annotations") if isinstance(entry, dict) else None
            if isinstance(annotations, dict) and any(k in annotations for k in _NAME_ANNOTATIONS):
                return True
    return False


def strip_names(tar: "str | os.PathLike[str] | bytes") -> "bytes | str":
    """``tar`` without the names ``docker load`` would apply to the host.

    A tarball that names nothing is returned as given.  Otherwise it is
    copied member by member (streamed: images can be gigabytes) without
    ``repositories``, with ``RepoTags`` emptied and the name annotations
    dropped; bytes in, bytes out; a path in, a new temporary file's path out
    (beside the original; the caller removes it).  Layers and the config
    are untouched, so the image id stays the same.

    Raises:
        tarfile.TarError, OSError, ValueError, KeyError: not a readable
            image tarball.
    """
    with _open_tar(tar) as archive:
        if not _names_anything(archive):
            return tar
        if isinstance(tar, (bytes, bytearray)):
            out_file: Any = io.BytesIO()
            out_path = None
        else:
            fd, out_path = tempfile.mkstemp(prefix=".unnamed-", suffix=".tar", dir=os.path.dirname(os.fspath(tar)))
            out_file = os.fdopen(fd, "wb")
        try:
            with out_file, tarfile.open(fileobj=out_file, mode="w:", format=tarfile.PAX_FORMAT) as new:
                for member in archive:
                    if member.name == "repositories":
                        continue
                    if member.name in ("manifest.json", "index.json") and member.isfile():
                        data = _member(archive, member.name)
                        data = _unnamed_manifest(data) if member.name == "manifest.json" else _unnamed_index(data)
                        member.size = len(data)
                        new.addfile(member, io.BytesIO(data))
                    elif member.isfile():
                        handle = archive.extractfile(member)
                        assert handle is not None
                        with handle:
                            new.addfile(member, handle)
                    else:
                        new.addfile(member)
                if out_path is None:
                    new.close()
                    return out_file.getvalue()
        except BaseException:
            if out_path is not None:
                os.unlink(out_path)
            raise
        return out_path


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
