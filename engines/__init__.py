"""Engines: content-addressed, authorized programs that run tasks.

* :mod:`engines.manifest` - manifest records, chunked files, signatures.
* :mod:`engines.auth` - which engines may run (trusted publishers, allow-list).
* :mod:`engines.native` / :mod:`engines.sandbox` - cold sandboxed runs.
* :mod:`engines.pool` / :mod:`engines.worker` - warm worker pools over ZeroMQ.
* :mod:`engines.host` - :class:`EngineHost`, the facade the daemon's Runner calls.
* :mod:`engines.publish` - publishing an engine: its files, its manifest, signatures.

This package imports ``lattice`` only, never ``meshd`` or ``conditions``.
"""

from __future__ import annotations

from .auth import AuthPolicy, Authorization, authorize
from .errors import (BadManifest, EngineCorrupt, EngineError, EngineMissing, EngineNotAuthorized,
                     RunnerUnavailable, UnsupportedPlatform)
from .host import (DockerBackend, EngineHost, HostOptions, HostStatistics, current_platform, publish_native,
                   publish_signature)
from .manifest import (CHUNK_SIZE, DockerImage, DockerManifest, EngineSignature, Manifest, NativeManifest,
                       PlatformBuild, Resources, encode_manifest, load_manifest, manifest_from_record_untrusted,
                       manifest_from_untrusted, missing_file_blocks, public_key_bytes, put_file, read_file,
                       sign_manifest, signature_from_untrusted)
from .native import NativeOptions, NativeRunner, NativeStatistics
from .outcome import Outcome
from .pool import PoolOptions, PoolStatistics, WarmPool, WorkerSpec

__all__ = [
    "CHUNK_SIZE", "AuthPolicy", "Authorization", "BadManifest", "DockerBackend", "DockerImage", "DockerManifest",
    "EngineCorrupt", "EngineError", "EngineHost", "EngineMissing", "EngineNotAuthorized", "EngineSignature",
    "HostOptions", "HostStatistics", "Manifest", "NativeManifest", "NativeOptions", "NativeRunner",
    "NativeStatistics", "Outcome", "PlatformBuild", "PoolOptions", "PoolStatistics", "Resources",
    "RunnerUnavailable", "UnsupportedPlatform", "WarmPool", "WorkerSpec", "authorize", "current_platform",
    "encode_manifest", "load_manifest", "manifest_from_record_untrusted", "manifest_from_untrusted",
    "missing_file_blocks", "public_key_bytes", "publish_native", "publish_signature", "put_file", "read_file",
    "sign_manifest", "signature_from_untrusted",
]
