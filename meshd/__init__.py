"""meshd: the daemon of a peer-to-peer mesh computer.

It composes ``lattice`` (GOHO Merkle-CRDTs and HPCP), ``engines`` (sandboxed
native and Docker engines) and ``conditions`` (the rule language) into a
node with an HTTP API, a CLI and pluggable roles.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
