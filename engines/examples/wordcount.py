#!/usr/bin/env python3
"""Word count split/map/reduce.

* ``split``  ``{"text": str, "chunks": k}`` -> ``[{"text": chunk}, ...]``, cut
  at whitespace so no word is split.
* ``map``    ``{"text": str}`` -> ``{"counts": {word: n}}`` (lower-cased words
  of letters, digits and apostrophes).
* ``reduce`` ``[{"counts": {...}}, ...]`` -> ``{"counts": {...}}`` merged.

CLI: ``wordcount.py split|map|reduce [--jsonl]``.  Python entries:
``wordcount:split``, ``wordcount:count``, ``wordcount:merge``.
"""

import json
import re
import sys
from collections import Counter

_WORD = re.compile(r"[a-z0-9']+")


def split(task):
    text, chunks = task["text"], max(1, int(task.get("chunks", 1)))
    size = max(1, -(-len(text) // chunks))
    out, pos = [], 0
    while pos < len(text):
        end = min(len(text), pos + size)
        while end < len(text) and not text[end].isspace():
            end += 1
        out.append({"text": text[pos:end]})
        pos = end
    return out


def count(task):
    return {"counts": dict(Counter(_WORD.findall(task["text"].lower())))}


def merge(partials):
    total = Counter()
    for p in partials:
        total.update(p["counts"])
    return {"counts": dict(total)}


STAGES = {"split": split, "map": count, "reduce": merge}


def main(argv):
    args = [a for a in argv[1:] if a != "--jsonl"]
    fn = STAGES[args[0]]
    if "--jsonl" in argv:
        for line in sys.stdin:
            sys.stdout.write(json.dumps(fn(json.loads(line))) + "\n")
            sys.stdout.flush()
        return 0
    json.dump(fn(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
