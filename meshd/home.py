"""The meshd home directory: layout, initialisation and the single-instance lock.

Layout (``meshd init`` creates all of it)::

    <home>/              mode 0700
        config.toml      the configuration (meshd.config)
        identity.key     Ed25519 seed, mode 0600 (meshd.p2p.identity)
        api.token        the API's admin bearer token, mode 0600 (the CLI uses it)
        api-submit.token the API's submit-scope token, mode 0600
        api-read.token   the API's read-scope token, mode 0600
        blocks/          the embedded block store (opened by the daemon)
        lock             flock()ed by the running daemon; holds its pid

Which directory is the home is the CLI's decision (``--home``, then
``MESHD_HOME``, then ``~/.meshd``); this module only ever receives a path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from .config import CONFIG_FILE, ApiOptions, Config, config_from_mapping, load_config, write_default_config
from .errors import AlreadyRunning, HomeError, IdentityError
from .p2p.identity import Identity, check_private_mode, load_identity, save_identity, write_private_file

DEFAULT_HOME: Final = "~/.meshd"
IDENTITY_FILE: Final = "identity.key"
TOKEN_FILE: Final = "api.token"
#: Token file of each API scope (see meshd.api.guard); api.token predates scopes and is admin.
TOKEN_FILES: Final = {"admin": TOKEN_FILE, "submit": "api-submit.token", "read": "api-read.token"}
BLOCKS_DIR: Final = "blocks"
LOCK_FILE: Final = "lock"


class Home:
    """A meshd home directory.  Constructing one touches nothing on disk.

    Args:
        path: The directory (need not exist yet).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        """``<home>/config.toml``."""
        return self.path / CONFIG_FILE

    @property
    def identity_path(self) -> Path:
        """``<home>/identity.key``."""
        return self.path / IDENTITY_FILE

    @property
    def token_path(self) -> Path:
        """``<home>/api.token``, the admin token."""
        return self.path / TOKEN_FILE

    def token_path_for(self, scope: str) -> Path:
        """The token file of ``scope`` (``"admin"``, ``"submit"`` or ``"read"``)."""
        return self.path / TOKEN_FILES[scope]

    @property
    def blocks_dir(self) -> Path:
        """``<home>/blocks``, the embedded block store."""
        return self.path / BLOCKS_DIR

    @property
    def lock_path(self) -> Path:
        """``<home>/lock``."""
        return self.path / LOCK_FILE

    def is_initialised(self) -> bool:
        """True when ``meshd init`` has (at least partly) populated this home."""
        return self.config_path.exists() or self.identity_path.exists()

    def require_initialised(self) -> None:
        """Raise :class:`HomeError` unless ``meshd init`` completed here."""
        if not self.config_path.exists() or not self.identity_path.exists():
            raise HomeError(f"{self.path} is not an initialised meshd home (run `meshd init --home {self.path}`)")

    def load_config(self, overrides: Mapping[str, Any] | None = None) -> Config:
        """The validated configuration with ``overrides`` applied (see :func:`meshd.config.load_config`)."""
        return load_config(self.path, overrides)

    def load_identity(self) -> Identity:
        """The node identity; refuses a key file readable by others."""
        return load_identity(self.identity_path)

    def read_token(self, scope: str = "admin") -> str:
        """The API bearer token of ``scope`` (default the admin token, ``api.token``).

        Raises:
            IdentityError: The token file is missing, empty or not private.
        """
        path = self.token_path_for(scope)
        try:
            check_private_mode(path)
            token = path.read_text().strip()
        except FileNotFoundError:
            raise IdentityError(f"{path} does not exist (start the daemon once, or run `meshd init --force`)") from None
        if len(token) < 16:
            raise IdentityError(f"{path} holds no usable token")
        return token

    def ensure_api_tokens(self) -> None:
        """Create every missing API token file (mode 0600); existing ones are kept.

        Homes made before the API had scopes hold only ``api.token``; the
        daemon calls this (through :meth:`api_options`) on start, so they gain
        the read and submit tokens without a ``meshd init --force``.
        """
        for name in TOKEN_FILES.values():
            with contextlib.suppress(FileExistsError):  # O_EXCL: never replace a token
                write_private_file(self.path / name, (secrets.token_urlsafe(32) + "\n").encode())

    def api_options(self, config: Config) -> ApiOptions:
        """``config.api`` with its three tokens filled in from the home.

        Every API request needs a token, on loopback too (any web page can
        reach 127.0.0.1), so missing token files are created first and an
        unreadable or world-readable one stops the daemon.

        Raises:
            IdentityError: A token file is not private or holds no token.
        """
        self.ensure_api_tokens()
        return dataclasses.replace(config.api, token=self.read_token("admin"),
                                   submit_token=self.read_token("submit"), read_token=self.read_token("read"))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the single-instance lock for the ``with`` block.

        ``flock`` is released by the kernel when the process dies, so a crash
        never leaves a stale lock behind (unlike a pid file alone); the pid is
        written only to make the refusal message useful.

        Raises:
            AlreadyRunning: Another process holds the lock.
            HomeError: The home directory does not exist.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise HomeError(f"{self.path} does not exist (run `meshd init`)") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise AlreadyRunning(f"another meshd is running on {self.path} (pid {pid})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                # Clear the pid while still holding the lock, so nobody reads
                # a pid that no longer owns it.
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def init_home(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    identity: Identity | None = None,
    **config_overrides: Mapping[str, Any],
) -> Home:
    """Create a complete home at ``path``.

    Files are written in an order that makes a crash harmless: secrets first,
    ``config.toml`` last, so an interrupted init is detected as "exists"
    (identity present) yet fails :meth:`Home.require_initialised` until it is
    rerun with ``force``.

    Args:
        path: The directory; created (mode 0700) if missing.
        force: Replace the identity, tokens and config of an existing home.
            The block store is kept.  Refused while a daemon holds the lock.
        identity: Use this identity instead of generating one (tests).
        **config_overrides: Config tables, e.g. ``api={"listen": ...}``.

    Returns:
        The new home.

    Raises:
        HomeError: The home exists and ``force`` is false.
        AlreadyRunning: ``force`` was given but a daemon is using the home.
        ConfigError: An override is invalid (nothing is written in that case).
    """
    home = Home(path)
    # Validate overrides before touching the disk.
    config_from_mapping(config_overrides, source="overrides")
    if home.is_initialised() and not force:
        raise HomeError(f"{home.path} already holds a meshd home (use --force to replace its identity and config)")
    home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with home.lock():
        for stale in (home.config_path, home.identity_path, *(home.path / name for name in TOKEN_FILES.values())):
            stale.unlink(missing_ok=True)
        home.blocks_dir.mkdir(mode=0o700, exist_ok=True)
        save_identity(identity or Identity.generate(), home.identity_path)
        home.ensure_api_tokens()
        write_default_config(home.path, **config_overrides)
    return home
