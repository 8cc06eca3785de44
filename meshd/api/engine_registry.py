"""Native engines in the engines registry, as the API writes and reads them.

:func:`add_engine` (``POST /v1/engines``) writes an upload's files to a
temporary directory, publishes them as a native engine, signs it with the
node key and registers it (``["add", engine, signature]`` and ``["put",
"name/<name>", engine]``), the signature block riding inline in the
registry's delta; :func:`list_engines` (``GET /v1/engines``) lists the
registry.  Kept apart from :mod:`meshd.node`, whose
:class:`~meshd.node.Node` serves both routes through them; Docker engines,
signatures and trust are :mod:`meshd.api.engine_admin`'s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.errors import BadManifest
from engines.host import publish_native, publish_signature
from engines.manifest import Resources, load_manifest
from lattice.cid import CID
from lattice.errors import BadCID

from ..errors import BadRequest

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["add_engine", "list_engines"]


async def add_engine(node: Node, name: str, files: dict[str, bytes], executable: str, manifest: dict) -> dict:
    """``POST /v1/engines``: publish an uploaded native engine, sign it and add it to the registry."""
    if not files:
        raise BadRequest("an engine needs at least one file", code="no_files")
    try:
        res = manifest.get("resources") or {}
        resources = Resources(**res) if isinstance(res, dict) else Resources()
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid resources: {exc}", code="bad_manifest") from None
    # Files, manifest and signature blocks: disk and store I/O, in a worker thread.
    cid, sig = await node.objects.run_io(_publish, node, name, files, executable, manifest, resources)
    # The signature block rides inline in the registry's delta: a peer
    # that learns of the engine holds its signature too (the host never
    # fetches missing signatures).
    sig_block = await node.objects.run_io(node.store.get, sig)
    await node.objects.commit(node.engines_obj, [["add", str(cid), sig], ["put", f"name/{name}", cid]],
                              [(sig, sig_block)])
    return {"cid": str(cid), "name": name, "signature": str(sig)}


def _publish(node: Node, name: str, files: dict[str, bytes], executable: str, manifest: dict,
             resources: Resources) -> tuple[CID, CID]:
    """Publish and sign an upload (disk and store I/O: run in a worker thread)."""
    with tempfile.TemporaryDirectory(prefix="meshd-upload-") as tmp:
        root = Path(tmp) / "engine"
        root.mkdir()
        for rel, data in files.items():
            p = (root / rel).resolve()
            if not str(p).startswith(str(root.resolve()) + os.sep):
                raise BadRequest(f"file path {rel!r} escapes the engine directory", code="bad_path")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(0o755)
        single = len(files) == 1 and (executable in (None, "", next(iter(files))))
        source = root / next(iter(files)) if single else root
        try:
            cid = publish_native(
                node.store, source, name, executable=None if single else executable,
                protocol=manifest.get("protocol", "json"), resources=resources,
                interpreter=manifest.get("interpreter"), args=tuple(manifest.get("args", ())),
                serve_args=manifest.get("serve_args"), entry=manifest.get("entry"),
                deterministic=manifest.get("deterministic") is True,
            )
        except (BadManifest, TypeError, ValueError) as exc:
            raise BadRequest(f"invalid engine: {exc}", code="bad_manifest") from None
    return cid, publish_signature(node.store, cid, node.private_key())


def list_engines(state: Any, store: Any) -> dict:
    """``GET /v1/engines``: every engine in the registry ``state``, with what its manifest in ``store`` says."""
    out = []
    for key in state.set_keys():
        try:
            cid = CID.parse_untrusted(key)
        except BadCID:
            continue
        entry: dict[str, Any] = {"cid": key, "signatures": [str(s) for s in state.members_sorted(key)]}
        try:
            m = load_manifest(store, cid)
            rec = m.to_record()
            entry.update(name=rec.get("name"), type=rec.get("type"), protocol=rec.get("protocol"),
                         platforms=sorted(rec.get("platforms", {})) if isinstance(rec.get("platforms"), dict) else None)
        except Exception:  # noqa: BLE001 - a listing shows what it can; blocks may be remote
            entry["available"] = False
        out.append(entry)
    return {"engines": out}
