#!/usr/bin/env bash
# `make fuzz` (kept out of CI): schemathesis against the daemon's OpenAPI,
# then atheris on every `_untrusted` decoder target for FUZZ_SECONDS each.
# Cumulative: libFuzzer writes the new inputs it finds into the first corpus
# directory, fuzz/corpus/<target>/, which is committed, so each session
# starts where the last one stopped; the corpus is then minimized again
# (-merge=1, fuzz/ledger.py prune) so it stays small, and the executions are
# added to fuzz/runs.tsv (fuzz/ledger.py add), the running total per target.
# Crashes go to .run/fuzz/ (fix them, then copy them into
# fuzz/corpus/<target>/ for the replay test).
#
#   FUZZ_SECONDS=60          atheris time per target
#   FUZZ_REQUESTS=5000       schemathesis requests the run must reach
#   MESHD_FUZZ_EXAMPLES=250  schemathesis examples per operation and mode
#   FUZZ_SKIP_API=1          atheris only
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY=.venv/bin/python
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
mkdir -p .run/fuzz
status=0
if [ "${FUZZ_SKIP_API:-0}" != 1 ]; then
    # The API test asserts it sent at least FUZZ_REQUESTS requests.  Examples
    # are per operation and mode; operations without parameters are exhausted
    # after a few, so 250 each gives a little over 5,000 in all.
    start=$(date +%s)
    MESHD_FUZZ_EXAMPLES="${MESHD_FUZZ_EXAMPLES:-250}" MESHD_FUZZ_MIN_REQUESTS="${FUZZ_REQUESTS:-5000}" \
        $PY -m pytest -q -p no:cacheprovider tests/test_api_schemathesis.py -s > .run/fuzz/schemathesis.log 2>&1 || status=1
    grep -E '^schemathesis: |hand-parsed bodies sent|passed|failed|error' .run/fuzz/schemathesis.log | cut -c1-200
    echo "fuzz: schemathesis took $(( $(date +%s) - start )) s (log .run/fuzz/schemathesis.log)"
fi
for target in $($PY fuzz/fuzz_decoders.py --list | cut -d' ' -f1); do
    log=".run/fuzz/$target.log"
    $PY fuzz/fuzz_decoders.py "$target" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -artifact_prefix=".run/fuzz/$target-" "fuzz/corpus/$target" > "$log" 2>&1 || status=1
    runs=$($PY fuzz/ledger.py add "$target" "$log")
    merged=".run/fuzz/merged-$target"
    rm -rf "$merged" && mkdir -p "$merged"
    pruned="not minimized"
    if $PY fuzz/fuzz_decoders.py "$target" -merge=1 "$merged" "fuzz/corpus/$target" > "$log.merge" 2>&1; then
        pruned=$($PY fuzz/ledger.py prune "$target" "$merged")
    fi
    echo "fuzz: $target ${runs:-?} runs this session, corpus $pruned$( [ -n "$(ls .run/fuzz/$target-crash-* 2>/dev/null)" ] && echo ', CRASH found')"
done
$PY fuzz/ledger.py show
exit $status
