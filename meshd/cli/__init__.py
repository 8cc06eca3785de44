"""The ``meshd`` command line: ``commands`` holds the parser and the core
commands, which reach the daemon through :class:`meshd.client.Client`; ``archive``, ``engines``, ``jobs`` and ``mesh`` are extension
modules that add subcommands; ``format`` renders answers as text.

``python -m meshd.cli`` and the ``meshd`` script both run :func:`main`.
"""

from .commands import main

__all__ = ["main"]
