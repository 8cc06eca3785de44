#!/usr/bin/env python3
"""Keep the fuzzing record across sessions: run totals and a minimized corpus.

Usage (from ``scripts/fuzz.sh``)::

    python fuzz/ledger.py add TARGET LOGFILE     # add the run count in a libFuzzer log to fuzz/runs.tsv
    python fuzz/ledger.py prune TARGET MERGED    # replace the target's found inputs by a -merge=1 result
    python fuzz/ledger.py show                   # totals per target

Why: the issue asks for atheris runs *cumulative across sessions* toward
1,000,000 per decoder.  libFuzzer counts only its own run, so
``fuzz/runs.tsv`` (committed) sums them.  Each run adds the inputs it
found to ``fuzz/corpus/<target>/``; without pruning the committed corpus
grows by every input any session found.  ``prune`` keeps the seeds
(``seed-*``) and crash reproducers (``crash-*``, ``oom-*``, ``timeout-*``),
which the replay test must always see, and replaces the rest by libFuzzer's
``-merge=1`` minimal set (the inputs that keep the coverage), dropping the
merged files that only repeat a kept seed.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
LEDGER = HERE / "runs.tsv"
_KEEP = ("seed-", "crash-", "oom-", "timeout-", "leak-")
_HEADER = "# target\truns\tseconds\tsessions  (cumulative atheris executions; scripts/fuzz.sh adds each run)\n"


def _read() -> dict[str, list[int]]:
    totals: dict[str, list[int]] = {}
    if LEDGER.exists():
        for line in LEDGER.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, runs, seconds, sessions = line.split("\t")
            totals[name] = [int(runs), int(seconds), int(sessions)]
    return totals


def _write(totals: dict[str, list[int]]) -> None:
    rows = "".join(f"{n}\t{r}\t{s}\t{k}\n" for n, (r, s, k) in sorted(totals.items()))
    LEDGER.write_text(_HEADER + rows, encoding="utf-8")


def add(target: str, log: Path) -> int:
    """Add the executions and seconds a libFuzzer log reports (``-print_final_stats=1``)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    runs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", text)
    seconds = re.findall(r"stat::average_exec_per_sec:\s+(\d+)", text)
    if not runs:
        return 0
    n = int(runs[-1])
    per_s = int(seconds[-1]) if seconds else 0
    totals = _read()
    row = totals.setdefault(target, [0, 0, 0])
    row[0] += n
    row[1] += n // per_s if per_s else 0
    row[2] += 1
    _write(totals)
    return n


def prune(target: str, merged: Path) -> tuple[int, int]:
    """Replace the found inputs of ``target`` by the merged minimal set; returns (before, after)."""
    folder = CORPUS / target
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith(_KEEP)}
    before = sum(1 for _ in folder.iterdir())
    kept_digests = {hashlib.sha1(b).hexdigest() for b in kept.values()}
    fresh = {p.name: p.read_bytes() for p in merged.iterdir() if p.is_file()}
    if not fresh and before:
        # A merge that ran keeps at least one input; none means it failed.
        raise SystemExit(f"{merged} is empty: the merge failed, {folder} left as it is")
    # Write the new set before removing the old one: a crash in between
    # leaves a larger corpus, never a smaller one.
    for name, data in fresh.items():
        if hashlib.sha1(data).hexdigest() not in kept_digests:
            (folder / name).write_bytes(data)
    for p in folder.iterdir():
        if not p.name.startswith(_KEEP) and p.name not in fresh:
            p.unlink()
    return before, sum(1 for _ in folder.iterdir())


def show() -> None:
    totals = _read()
    for name, (runs, seconds, sessions) in sorted(totals.items()):
        print(f"{name:22s} {runs:>10,} runs  {seconds:>6} s  {sessions} sessions")
    if totals:
        print(f"{'all':22s} {sum(r for r, _, _ in totals.values()):>10,} runs; "
              f"fewest {min(r for r, _, _ in totals.values()):,} (goal 1,000,000 per target)")


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[1] == "add":
        print(add(argv[2], Path(argv[3])))
    elif len(argv) == 4 and argv[1] == "prune":
        before, after = prune(argv[2], Path(argv[3]))
        print(f"{before} -> {after} files")
    elif len(argv) == 2 and argv[1] == "show":
        show()
    else:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main(sys.argv)
