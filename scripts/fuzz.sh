#!/usr/bin/env bash
# `make fuzz` (kept out of CI): schemathesis against the daemon's OpenAPI,
# then atheris on every `_untrusted` decoder target for FUZZ_SECONDS each.
# Cumulative: libFuzzer writes the new inputs it finds into the first corpus
# directory, fuzz/corpus/<target>/, which is committed, so each session
# starts where the last one stopped.  Crashes go to .run/fuzz/ (fix them,
# then copy them into fuzz/corpus/<target>/ for the replay test).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY=.venv/bin/python
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
mkdir -p .run/fuzz
status=0
# ~5,000 requests: every operation, positive and negative, MESHD_FUZZ_EXAMPLES each.
MESHD_FUZZ_EXAMPLES="${MESHD_FUZZ_EXAMPLES:-1000}" $PY -m pytest -q -p no:cacheprovider \
    tests/test_api_schemathesis.py -s || status=1
for target in $($PY fuzz/fuzz_decoders.py --list | cut -d' ' -f1); do
    $PY fuzz/fuzz_decoders.py "$target" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -artifact_prefix=".run/fuzz/$target-" "fuzz/corpus/$target" > ".run/fuzz/$target.log" 2>&1 || status=1
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' ".run/fuzz/$target.log" | awk '{print $2}')
    echo "fuzz: $target ${runs:-?} runs this session$( [ -n "$(ls .run/fuzz/$target-crash-* 2>/dev/null)" ] && echo ', CRASH found')"
done
exit $status
