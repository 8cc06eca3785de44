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


def peer_id_of(public: bytes) -> str | None:
    """The libp2p peer id ("12D3KooW…") of a raw Ed25519 key, or None if not 32 bytes.

    Records name their runner or verifier by peer id and carry the key that
    signed them; comparing the two binds the name to the signature, so nobody
    can sign a record in another peer's name.  (Protobuf PublicKey{Ed25519}
    in an identity multihash, base58btc: tiny, so written here rather than
    importing the libp2p stack into the pure library.)
    """
    if type(public) is not bytes or len(public) != PUBLIC_KEY_LEN:
        return None
    from .cid import _b58encode

    return _b58encode(b"\x00\x24\x08\x01\x12\x20" + public)


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
