"""docs/architecture.md maps each role and each part of ``meshd/`` to a path; those paths exist.

The section "Where the code is" holds markdown tables whose second column is
one backticked path. Every such path must exist, every module and subpackage
at the top of ``meshd/`` must be listed, and the top of ``meshd/`` holds only
the composition root.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
SECTION = "## Where the code is"
COMPOSITION_ROOT = {"__init__.py", "daemon.py", "node.py", "config.py", "home.py", "errors.py"}
ROLES = {"Manager", "Runner", "Verifier", "Evaluator", "Archivist"}


def _rows() -> list[tuple[str, str]]:
    """(first cell, path) of every table row in the section."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    rows = []
    for line in text[start:end if end != -1 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[1]) <= set("-: "):
            continue
        match = re.fullmatch(r"`(meshd/[^`]*)`", cells[1])
        if match:
            rows.append((cells[0], match.group(1)))
    return rows


def _top_of_meshd() -> set[str]:
    return {p.name + ("/" if p.is_dir() else "") for p in (REPO / "meshd").iterdir()
            if p.name != "__pycache__" and (p.suffix == ".py" or (p / "__init__.py").exists())}


def test_the_section_has_a_table_row_per_role_and_part() -> None:
    rows = _rows()
    assert rows, f"no table rows with a backticked meshd/ path under {SECTION!r} in {DOC}"
    assert ROLES <= {first for first, _ in rows}


def test_every_listed_path_exists() -> None:
    missing = [path for _, path in _rows() if not (REPO / path).exists()]
    assert missing == []


def test_every_module_and_subpackage_at_the_top_of_meshd_is_listed() -> None:
    listed = {path.removeprefix("meshd/") for _, path in _rows() if path.count("/") == 1 or path.endswith("/")}
    listed = {p if p.endswith(".py") else p.split("/")[0] + "/" for p in listed}
    assert _top_of_meshd() - listed == set()


def test_only_the_composition_root_stays_at_the_top_of_meshd() -> None:
    modules = {name for name in _top_of_meshd() if not name.endswith("/")}
    assert modules == COMPOSITION_ROOT
