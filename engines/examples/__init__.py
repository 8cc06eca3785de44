"""Example engines: plain Python scripts, see ``README.md`` in this directory.

Each script reads one JSON document on stdin and writes one on stdout, takes a
stage name as its first argument where it has several, serves JSON lines with
``--jsonl``, and exposes its stages as functions for protocol ``"python"``.
"""

from __future__ import annotations

from pathlib import Path

#: Directory holding the example scripts.
EXAMPLES_DIR = Path(__file__).resolve().parent

__all__ = ["EXAMPLES_DIR"]
