"""The meshd home directory: layout, initialisation and the single-instance lock.

Layout (``meshd init`` creates all of it)::

    <home>/              mode 0700
        config.toml      the configuration (meshd.config)
        identity.key     Ed25519 seed, mode 0600 (meshd.identity)
        api.token        bearer token for a non-loopback API, mode 0600
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
from .identity import Identity, check_private_mode, load_identity, save_identity, write_private_file

DEFAULT_HOME: Final = "~/.meshd"
IDENTITY_FILE: Final = "identity.key"
TOKEN_FILE: Final = "api.token"
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
        """``<home>/api.token``."""
        return self.path / TOKEN_FILE

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

    def read_token(self) -> str:
        """The API bearer token.

        Raises:
            IdentityError: The token file is missing, empty or not private.
        """
        try:
            check_private_mode(self.token_path)
            token = self.token_path.read_text().strip()
        except FileNotFoundError:
            raise IdentityError(f"{self.token_path} does not exist (run `meshd init --force`)") from None
        if len(token) < 16:
            raise IdentityError(f"{self.token_path} holds no usable token")
        return token

    def api_options(self, config: Config) -> ApiOptions:
        """``config.api`` with the token filled in when the API needs one.

        A loopback API gets no token, so a stray or unreadable token file
        cannot stop a purely local node from starting.
        """
        if not config.api.requires_token:
            return config.api
        return dataclasses.replace(config.api, token=self.read_token())

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
        force: Replace the identity, token and config of an existing home.
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
        for stale in (home.config_path, home.identity_path, home.token_path):
            stale.unlink(missing_ok=True)
        home.blocks_dir.mkdir(mode=0o700, exist_ok=True)
        save_identity(identity or Identity.generate(), home.identity_path)
        write_private_file(home.token_path, (secrets.token_urlsafe(32) + "\n").encode())
        write_default_config(home.path, **config_overrides)
    return home
