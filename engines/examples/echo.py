#!/usr/bin/env python3
"""No-op engine: the output is the input.  Used to measure runner overhead.

CLI: ``echo.py`` (one JSON document on stdin -> stdout) or ``echo.py --jsonl``
(one JSON object per line).  Python entry: ``echo:echo``.
"""

import json
import sys


def echo(value):
    return value


def main(argv):
    if "--jsonl" in argv:
        out = sys.stdout
        for line in sys.stdin:
            out.write(line if line.endswith("\n") else line + "\n")
            out.flush()
        return 0
    json.dump(json.load(sys.stdin), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
