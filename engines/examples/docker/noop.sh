#!/bin/sh
# noop engine: returns its input unchanged.
#   cold  (default): copy the one JSON document on stdin to stdout.
#   jsonl (MESHD_ENGINE_MODE=jsonl or "--jsonl"): echo each line back.
mode="${MESHD_ENGINE_MODE:-cold}"
[ "$1" = "--jsonl" ] && mode=jsonl
if [ "$mode" = "jsonl" ]; then
    # IFS= and -r keep the line byte for byte (no trimming, no backslash magic).
    while IFS= read -r line; do
        [ -z "$line" ] && continue
        printf '%s\n' "$line"
    done
else
    exec cat
fi
