"""Publishing an engine: storing its files and its manifest, and signing it.

:func:`publish_native` packs a script, a directory (as a deterministic tar:
the same tree always makes the same CID) or an archive into chunked file
blocks, then stores the manifest that links them, last, so a manifest is
never stored before its files; :func:`publish_signature` stores a
publisher's signature of a manifest CID.  Both write to a block store and
nothing else: they are what ``meshd engine publish`` and the tests call,
apart from :class:`engines.host.EngineHost`, which runs what was published
(and re-exports both).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lattice.cid import CID

from .errors import BadManifest
from .manifest import (
    NativeManifest,
    PlatformBuild,
    Resources,
    current_platform,
    encode_manifest,
    put_file,
    sign_manifest,
)

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from lattice.blockstore import BlockStore



def _deterministic_tar(root: Path) -> bytes:
    """A tar of ``root`` that depends only on names, contents and exec bits."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if "__pycache__" in rel.split("/") or path.is_symlink():
                continue
            info = tf.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_dir():
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    tf.addfile(info, f)
    return buf.getvalue()


def publish_native(store: "BlockStore", path: str | os.PathLike[str], name: str, *,
                   executable: str | None = None, protocol: str = "json", resources: Resources = Resources(),
                   interpreter: str | None = None, args: Sequence[str] = (), serve_args: Sequence[str] | None = None,
                   entry: str | None = None, platform: str | None = None,
                   comparator: Mapping[str, Any] | None = None, deterministic: bool = False) -> CID:
    """Store an engine and its manifest; return the manifest CID.

    Args:
        store: Destination block store.
        path: A single executable/script (format ``exe``; ``executable``
            defaults to its file name), a directory (packed as a
            deterministic tar, ``__pycache__`` skipped; ``executable`` is a
            path inside it), or a ``.tar``/``.tar.gz`` archive.
        name: Human-readable engine name.
        platform: Platform key; default :func:`current_platform`.
        Other arguments: the manifest fields of the same name.

    Raises:
        BadManifest: the fields do not form a valid manifest.
    """
    p = Path(path)
    if p.is_dir():
        if executable is None:
            raise BadManifest("publishing a directory needs executable (a path inside it)")
        file_cid, fmt = put_file(store, _deterministic_tar(p)), "tar"
    elif p.name.endswith((".tar", ".tar.gz", ".tgz")):
        if executable is None:
            raise BadManifest("publishing an archive needs executable (a path inside it)")
        file_cid, fmt = put_file(store, p), "tar"
    else:
        file_cid, fmt = put_file(store, p), "exe"
        executable = executable or p.name
    manifest = NativeManifest(
        name=name, platforms={platform or current_platform(): PlatformBuild(file_cid, executable, fmt)},
        protocol=protocol, resources=resources, interpreter=interpreter, args=tuple(args),
        serve_args=None if serve_args is None else tuple(serve_args), entry=entry, comparator=comparator,
        deterministic=deterministic)
    cid, data = encode_manifest(manifest)
    store.put(cid, data)  # last: the manifest appears only once its files are stored
    return cid


def publish_signature(store: "BlockStore", engine_cid: CID, private_key: "Ed25519PrivateKey") -> CID:
    """Sign ``engine_cid``, store the ``meshd/engine-sig`` record, return its CID."""
    cid, data = sign_manifest(engine_cid, private_key).encode()
    store.put(cid, data)
    return cid
