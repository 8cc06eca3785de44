"""Every ``_untrusted`` decoder survives its corpus and a short atheris run.

The targets live in ``fuzz/decoder_targets.py``: each feeds fuzzer bytes to
one decoder and lets only that decoder's ``Bad*`` error pass (nothing at all
for the decoders documented as never raising).  Two checks per target:

* its committed corpus ``fuzz/corpus/<target>/`` (valid and hostile seeds,
  plus the crashes fuzzing found) replays in-process without a crash; this
  needs no atheris;
* ``fuzz/fuzz_decoders.py TARGET -atheris_runs=N`` runs in a subprocess and
  exits 0.  New inputs go to a scratch directory, so the committed corpus is
  never modified.  Skipped, with the reason, when atheris is not installed.

Long runs for hours are described in ``docs/security.md``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "fuzz"
CORPUS = FUZZ / "corpus"
#: Executions per target in the short runs (32 targets finish in well under a minute on 2 cores).
RUNS = 2000


def _load_targets():
    spec = importlib.util.spec_from_file_location("decoder_targets", FUZZ / "decoder_targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("decoder_targets", module)
    spec.loader.exec_module(module)
    return module


TARGETS = _load_targets().TARGETS
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def _undeclared_decoders() -> set[str]:
    """``_untrusted`` functions defined in the packages that no target names."""
    found = set()
    for package in ("lattice", "engines", "conditions", "meshd"):
        for path in (REPO / package).rglob("*.py"):
            for match in re.finditer(r"def (\w+_untrusted)\(", path.read_text(encoding="utf-8")):
                found.add(match.group(1))
    covered = " ".join(t.decoder for t in TARGETS.values())
    # Reached only through another target: the varint through both frame
    # targets, the ops check through delta.
    indirect = {"_check_ops_untrusted", "_decode_varint_untrusted"}
    return {name for name in found - indirect if name not in covered}


def test_every_untrusted_decoder_has_a_fuzz_target() -> None:
    assert _undeclared_decoders() == set()


def test_the_mesh_core_network_entry_points_have_a_target() -> None:
    # MeshCore.receive (gossip) and MeshCore.serve (block requests) take a
    # peer's bytes without an ``_untrusted`` name: their target is declared here.
    target = TARGETS["mesh_core"]
    assert "MeshCore.receive" in target.decoder and "MeshCore.serve" in target.decoder


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_replays_without_crash(name: str) -> None:
    files = sorted((CORPUS / name).iterdir())
    assert any(f.name.startswith("seed-") for f in files), f"no seeds in {CORPUS / name}"
    for path in files:
        try:
            TARGETS[name](path.read_bytes())
        except BaseException as exc:  # noqa: BLE001 - reported with the input that caused it
            raise AssertionError(f"{name}: {path.name} raised {exc!r}") from exc


def _short_run(name: str, scratch: Path) -> tuple[str, int, str]:
    new = scratch / name / "new"
    artifacts = scratch / name / "artifacts"
    new.mkdir(parents=True)
    artifacts.mkdir()
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_decoders.py"), name, f"-atheris_runs={RUNS}",
         f"-artifact_prefix={artifacts}/", "-seed=1", str(new), str(CORPUS / name)],
        capture_output=True, text=True, timeout=120, cwd=scratch,
    )
    return name, proc.returncode, proc.stdout + proc.stderr


@pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris is not installed (pip install atheris; needs a "
                    "manylinux x86_64 wheel or clang to build): only the corpus replay ran")
def test_short_atheris_runs_find_no_crash(tmp_path: Path) -> None:
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda n: _short_run(n, tmp_path), sorted(TARGETS)))
    executions = {}
    failures = []
    for name, rc, output in results:
        done = re.search(r"Done (\d+) (?:runs )?in", output)
        executions[name] = int(done.group(1)) if done else 0
        if rc != 0 or not done:
            failures.append(f"--- {name} (exit {rc}) ---\n{output[-3000:]}")
    print(f"atheris executions per target: {executions}; total {sum(executions.values())}")
    assert not failures, "\n".join(failures)
    assert all(n >= RUNS for n in executions.values()), executions
