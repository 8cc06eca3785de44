#!/usr/bin/env python3
"""Fuzz one ``_untrusted`` decoder with atheris (libFuzzer), selected by name.

Usage::

    python fuzz/fuzz_decoders.py --list
    python fuzz/fuzz_decoders.py TARGET [libFuzzer flags] [CORPUS_DIR ...]
    python fuzz/fuzz_decoders.py --write-seeds          # (re)write fuzz/corpus/<target>/seed-*
    python fuzz/fuzz_decoders.py --replay TARGET FILE.. # run files once, no atheris needed
    python fuzz/fuzz_decoders.py --hypothesis TARGET N  # fallback driver when atheris is missing

With no corpus directory the target's own ``fuzz/corpus/<TARGET>/`` is used.
libFuzzer writes the new inputs it finds into the *first* corpus directory,
so pass a scratch directory first when the seed corpus must stay untouched::

    python fuzz/fuzz_decoders.py delta -max_total_time=3600 /tmp/delta-new fuzz/corpus/delta

A crash (the decoder raised something other than its ``Bad*`` error) stops
the run with a traceback and writes the input to ``crash-<sha1>`` (use
``-artifact_prefix=DIR/`` to choose where); copy it into
``fuzz/corpus/<TARGET>/`` once fixed, so the regression test keeps it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPUS = HERE / "corpus"
#: The packages whose code is instrumented for coverage feedback.
INSTRUMENTED = ["lattice", "engines", "conditions", "meshd"]

if str(REPO) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _usage(code: int) -> None:
    print(__doc__, file=sys.stderr)
    raise SystemExit(code)


def _write_seeds() -> None:
    import decoder_targets

    for name, target in decoder_targets.TARGETS.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in target.seeds().items():
            (folder / f"seed-{seed}").write_bytes(data)
        print(f"{name}: {len(list(folder.iterdir()))} files in {folder.relative_to(REPO)}")


def _replay(name: str, files: list[str]) -> None:
    import decoder_targets

    target = decoder_targets.TARGETS[name]
    paths = [p for f in files for p in (sorted(Path(f).iterdir()) if Path(f).is_dir() else [Path(f)])]
    for path in paths:
        target(path.read_bytes())
    print(f"{name}: {len(paths)} inputs replayed, none crashed")


def _hypothesis(name: str, runs: int) -> None:
    """Random and mutated-seed inputs through Hypothesis; used where atheris cannot be installed."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import decoder_targets

    target = decoder_targets.TARGETS[name]
    seeds = [p.read_bytes() for p in sorted((CORPUS / name).glob("*"))] or [b""]

    def mutate(args: tuple[bytes, list[tuple[int, int]]]) -> bytes:
        data = bytearray(args[0])
        for pos, byte in args[1]:
            if data:
                data[pos % len(data)] = byte
        return bytes(data)

    mutated = st.tuples(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                                                         min_size=1, max_size=4)).map(mutate)
    truncated = st.tuples(st.sampled_from(seeds), st.integers(0, 1 << 20)).map(lambda a: a[0][: a[1] % (len(a[0]) + 1)])
    count = 0

    @settings(max_examples=runs, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=512), mutated, truncated))
    def run(data: bytes) -> None:
        nonlocal count
        count += 1
        target(data)

    run()
    print(f"{name}: Done {count} runs (hypothesis driver)")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        _usage(0 if len(argv) >= 2 else 2)
    if argv[1] == "--list":
        import decoder_targets

        for name, target in decoder_targets.TARGETS.items():
            print(f"{name:18s} {target.decoder}")
        return
    if argv[1] == "--write-seeds":
        _write_seeds()
        return
    if argv[1] == "--replay" and len(argv) >= 4:
        _replay(argv[2], argv[3:])
        return
    if argv[1] == "--hypothesis" and len(argv) == 4:
        _hypothesis(argv[2], int(argv[3]))
        return

    name = argv[1]
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install atheris); use --hypothesis TARGET N instead", file=sys.stderr)
        raise SystemExit(3) from None

    with atheris.instrument_imports(include=INSTRUMENTED):
        import decoder_targets

        if name not in decoder_targets.TARGETS:
            print(f"unknown target {name!r}; --list shows them", file=sys.stderr)
            raise SystemExit(2)
        target = decoder_targets.TARGETS[name]
        target.prepare()  # imports the decoder's modules inside the instrumentation
        decoder_targets.fx()  # and the fixtures, outside the timed runs

    # libFuzzer runs ``argv[0]`` and its flags through the shell for -merge,
    # -fork and -jobs: name the interpreter and the target there too, or the
    # child is this file without its target (and not executable).
    args = [" ".join(shlex.quote(a) for a in (sys.executable, str(Path(__file__).resolve()), name)), *argv[2:]]
    if not any(not a.startswith("-") for a in argv[2:]):
        args.append(str(CORPUS / name))
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
