"""The node's Ed25519 identity and its libp2p peer id.

The key file ``<home>/identity.key`` holds either the raw 32-byte Ed25519 seed
(what :func:`save_identity` writes) or a PKCS#8 PEM private key (what
``openssl genpkey -algorithm ed25519`` writes).  It must not be readable by
group or others: a key that others could read may already be someone else's,
so :func:`load_identity` refuses it instead of quietly continuing.

The peer id is computed by hand exactly as libp2p does for Ed25519 keys,
because it is a dozen lines and the daemon's identity should not depend on
which libp2p binding happens to be installed::

    protobuf PublicKey{Type: Ed25519 (1), Data: <32 bytes>}
        = 08 01 12 20 || key                      (36 bytes)
    identity multihash = 00 24 || protobuf        (code 0x00, length 36)
    peer id = base58btc(multihash)                -> "12D3KooW..."
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lattice.signing import peer_id_of

from ..errors import IdentityError

def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id ("12D3KooW…") of a raw 32-byte Ed25519 public key.

    Raises:
        IdentityError: ``public_key`` is not 32 bytes.
    """
    # One derivation for the whole code base: lattice.signing.peer_id_of.
    peer_id = peer_id_of(bytes(public_key))
    if peer_id is None:
        raise IdentityError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return peer_id


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair and the ids derived from it.

    Attributes:
        private_key: The signing key (never logged or serialised by the API).
    """

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "Identity":
        """A fresh random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """The identity whose 32-byte private seed is ``seed``."""
        if len(seed) != 32:
            raise IdentityError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The verifying key."""
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_hex(self) -> str:
        """The public key as 64 hex digits (the form ``trusted_publishers`` uses)."""
        return self.public_bytes.hex()

    @property
    def seed(self) -> bytes:
        """The raw 32-byte private seed (what the key file stores)."""
        return self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def peer_id(self) -> str:
        """The libp2p peer id, base58btc ("12D3KooW…")."""
        return peer_id_from_public_key(self.public_bytes)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    def __repr__(self) -> str:
        # Keep the private key out of tracebacks and logs.
        return f"Identity(peer_id={self.peer_id!r})"


def check_private_mode(path: Path) -> None:
    """Refuse a secret file that group or others may read or write.

    Raises:
        IdentityError: The file's mode grants any group/other permission.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"{path} has mode {mode:04o}; it must be private to its owner (run `chmod 600 {path}`)"
        )


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; refuse to replace a file.

    The mode is set at creation (``O_EXCL``) so there is no window in which
    the secret sits in a world-readable file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have stripped bits, never added them; be explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def save_identity(identity: Identity, path: Path) -> None:
    """Write the raw 32-byte seed to ``path`` (mode 0600, must not exist)."""
    write_private_file(Path(path), identity.seed)


def load_identity(path: Path) -> Identity:
    """Read the identity key file (raw 32 bytes or PKCS#8 PEM).

    Raises:
        IdentityError: Missing, readable by others, or not an Ed25519 key.
    """
    path = Path(path)
    try:
        check_private_mode(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{path} does not exist (run `meshd init`)") from None
    if len(data) == 32:
        return Identity.from_seed(data)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"{path}: unreadable PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path}: PEM key is {type(key).__name__}, not Ed25519")
        return Identity(key)
    raise IdentityError(f"{path}: expected a raw 32-byte Ed25519 seed or a PEM key, got {len(data)} bytes")
