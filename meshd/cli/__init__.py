"""The ``meshd`` command line: ``commands`` holds the parser, the API client and
the core commands; ``archive``, ``engines``, ``jobs`` and ``mesh`` are extension
modules that add subcommands; ``format`` renders answers as text.

``python -m meshd.cli`` and the ``meshd`` script both run :func:`main`.
"""

from .commands import main

__all__ = ["main"]
