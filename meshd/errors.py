"""The meshd package's one exception tree.

Every error raised by ``meshd`` derives from :class:`MeshdError`.  The API
layer maps exactly three families onto HTTP statuses, so a node
implementation signals a client mistake by raising :class:`BadRequest`,
:class:`NotFound` or :class:`Conflict` (or a ``lattice.errors.BadInput``), and
anything else is treated as a server fault.

Each :class:`ApiError` carries a stable snake_case ``code`` that clients may
match on; the human ``message`` is free text and must never be matched.
"""

from __future__ import annotations

from typing import ClassVar


class MeshdError(Exception):
    """Base class of every error raised by the meshd package."""


class ConfigError(MeshdError):
    """The configuration file or an override is malformed or out of range."""


class HomeError(MeshdError):
    """The home directory is missing, incomplete or already initialised."""


class IdentityError(HomeError):
    """The identity key is unreadable, malformed or readable by others."""


class AlreadyRunning(HomeError):
    """Another meshd process holds the single-instance lock on this home."""


class BadAddressFile(HomeError):
    """``<home>/api`` is not a valid API address record."""


class ApiError(MeshdError):
    """An error the HTTP API reports to the client with a status and a code.

    Args:
        message: Human-readable explanation (free text).
        code: Stable snake_case identifier; defaults to the class's code.
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequest(ApiError):
    """The request is well-formed JSON but asks for something invalid."""

    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    """The request lacks a valid bearer token (every route but /v1/health needs one)."""

    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    """The request is refused whatever its token: a foreign Host or Origin, or too little scope."""

    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    """The named task, dataset, path or engine does not exist."""

    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    """The request conflicts with the current state (e.g. a duplicate name)."""

    status = 409
    default_code = "conflict"


class InvalidRequest(ApiError):
    """The request body or query does not match the documented schema."""

    status = 422
    default_code = "validation_failed"

    def __init__(self, message: str, *, code: str | None = None, details: list[dict] | None = None) -> None:
        super().__init__(message, code=code)
        self.details = details or []


class PayloadTooLarge(ApiError):
    """The request body exceeds the API's ``max_body_bytes``."""

    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The request body is not of the route's content type (application/json for most)."""

    status = 415
    default_code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    """A backing service (the block store, e.g. an IPFS node) is unreachable; retry later."""

    status = 503
    default_code = "unavailable"


class InternalError(ApiError):
    """The node failed unexpectedly; details are in the daemon's log."""

    status = 500
    default_code = "internal_error"


class ClientError(MeshdError):
    """A client (``meshd.client``, the CLI) could not complete a request against the API.

    Attributes:
        status: The HTTP status of the API's refusal (None when no answer came).
        code: The API's error ``code`` (e.g. ``unauthorized``), when it gave one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotRunning(ClientError):
    """No meshd daemon answers at the configured API address."""
