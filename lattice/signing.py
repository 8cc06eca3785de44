"""Ed25519 signing for lattice records (deltas, announcements, results).

A record is signed over the canonical DAG-CBOR encoding of the record *without*
its signature field; the record's type tag is inside the signed bytes, so a
signature for one record type never verifies as another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


class Signer:
    """Holds an Ed25519 private key and signs bytes.

    The key never leaves the object except through :meth:`private_bytes`,
    which the daemon uses once to write the identity file.
    """

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> "Signer":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Signer":
        """A signer from a 32-byte private seed (deterministic tests, key files)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify_signature(public: bytes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` by ``public`` over ``data`` is valid."""
    if type(public) is not bytes or len(public) != PUBLIC_KEY_LEN:
        return False
    if type(signature) is not bytes or len(signature) != SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
