"""Which engines may run on this node.

An engine runs only when its manifest CID is on the node's allow-list or a
publisher the node trusts has signed it (a ``meshd/engine-sig`` record, see
:mod:`engines.manifest`).  Authorization is a pure function of the CID, the
signatures offered and the policy: it never touches the store or the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lattice.cid import CID

from .errors import EngineNotAuthorized
from .manifest import EngineSignature


@dataclass(frozen=True)
class AuthPolicy:
    """The node's engine policy.

    Attributes:
        trusted_publishers: Raw 32-byte Ed25519 public keys whose signature
            authorizes an engine.  Default: none.
        allow_cids: Manifest CIDs allowed without a signature.  Default: none.
    """

    trusted_publishers: frozenset[bytes] = frozenset()
    allow_cids: frozenset[CID] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_publishers", frozenset(self.trusted_publishers))
        object.__setattr__(self, "allow_cids", frozenset(self.allow_cids))
        for key in self.trusted_publishers:
            if type(key) is not bytes or len(key) != 32:
                raise ValueError("trusted_publishers must hold raw 32-byte Ed25519 public keys")
        for cid in self.allow_cids:
            if type(cid) is not CID:
                raise ValueError("allow_cids must hold CIDs")


@dataclass(frozen=True)
class Authorization:
    """Why an engine was allowed: ``"allow-list"`` or ``"signed"`` by ``publisher``."""

    engine: CID
    basis: str
    publisher: bytes | None = None


def authorize(manifest_cid: CID, signatures: Iterable[EngineSignature], policy: AuthPolicy) -> Authorization:
    """Decide whether engine ``manifest_cid`` may run.

    Signatures over other CIDs, by untrusted keys, or that fail to verify are
    ignored (and counted in the refusal message).

    Raises:
        EngineNotAuthorized: with a message naming the engine and why.
    """
    if manifest_cid in policy.allow_cids:
        return Authorization(manifest_cid, "allow-list")
    offered = forged = untrusted = other = 0
    for sig in signatures:
        offered += 1
        if sig.engine != manifest_cid:
            other += 1
            continue
        if sig.publisher not in policy.trusted_publishers:
            untrusted += 1
            continue
        # Verify only signatures by trusted keys: untrusted ones cannot
        # authorize anything, so spending a verification on them is waste.
        if not sig.verify():
            forged += 1
            continue
        return Authorization(manifest_cid, "signed", sig.publisher)
    detail = []
    if offered == 0:
        detail.append("no signatures offered")
    if forged:
        detail.append(f"{forged} signature(s) by trusted keys failed to verify")
    if untrusted:
        detail.append(f"{untrusted} signature(s) by untrusted publishers")
    if other:
        detail.append(f"{other} signature(s) for other engines")
    raise EngineNotAuthorized(
        f"engine {manifest_cid} is not signed by a trusted publisher and not on the allow-list"
        f" ({'; '.join(detail)})")


__all__ = ["AuthPolicy", "Authorization", "authorize"]
