#!/bin/sh
# wordcount engine: {"text": "<string>", ...} -> {"words": W, "lines": L}
#   cold  (default): one JSON document (may span lines) on stdin.
#   jsonl (MESHD_ENGINE_MODE=jsonl or "--jsonl"): one document per line,
#         one result line each, flushed at once.
# Bad input: a message on stderr and exit status 2 (in both modes).
mode="${MESHD_ENGINE_MODE:-cold}"
[ "$1" = "--jsonl" ] && mode=jsonl
exec awk -v mode="$mode" -f /engine/wordcount.awk
