"""A configured interpreter shows its installation to engine jails only when
it lives in ``<prefix>/bin``: an interpreter kept anywhere else (say
``~/tools/python3``) is bound alone, so its parent's parent (the owner's
home, or pytest's base directory holding every daemon home) never becomes
visible to engines.  Found while unskipping the verifier test: binding the
parent of a liar interpreter at ``<basetemp>/liar-python`` bound the
0700 base directory, and the jailed engine could not enter its own directory.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from meshd.daemon import _native_options


def _options(tmp_path: Path, interpreters: dict[str, str]):
    config = SimpleNamespace(engines=SimpleNamespace(interpreters=interpreters),
                             runner=SimpleNamespace(weak_sandbox=False, engine_network=False))
    return _native_options(SimpleNamespace(path=tmp_path / "home"), config)


def test_a_bin_directory_brings_its_prefix(tmp_path: Path) -> None:
    opts = _options(tmp_path, {"python3": "/opt/py311/bin/python3"})
    assert opts.ro_paths == ("/opt/py311",)


def test_an_interpreter_elsewhere_brings_nothing_more(tmp_path: Path) -> None:
    opts = _options(tmp_path, {"python3": str(tmp_path / "tools" / "python3"), "sys": "/usr/bin/python3"})
    assert opts.ro_paths == ()
