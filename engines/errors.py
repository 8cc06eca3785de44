"""The engines package's one exception tree."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error raised by the engines package."""


class BadManifest(EngineError):
    """An engine manifest (untrusted bytes or JSON) is malformed."""


class EngineNotAuthorized(EngineError):
    """The manifest is neither signed by a trusted publisher nor allow-listed."""


class EngineMissing(EngineError):
    """Blocks of the engine are not in the local store; ``missing`` lists them.

    The daemon catches this, fetches the CIDs from peers, and retries.
    """

    def __init__(self, message: str, missing: "list[object]") -> None:
        super().__init__(message)
        self.missing = list(missing)


class EngineCorrupt(EngineError):
    """Engine blocks are present but do not verify (hash or reassembly)."""


class UnsupportedPlatform(EngineError):
    """The manifest has no build for this node's os-arch."""


class RunnerUnavailable(EngineError):
    """The runner cannot run on this node (e.g. no Docker engine)."""
