#!/usr/bin/env python3
"""Mandelbrot escape-time tiles, split/map/reduce, with a numba kernel.

* ``split``  ``{"width": W, "height": H, "tile": T, "max_iter": M,
  "region": [x0, y0, x1, y1]}`` -> one task per T x T tile:
  ``{"x": px, "y": py, "w": tw, "h": th, "width": W, "height": H, "max_iter": M, "region": [...]}``
* ``map``    a tile -> ``{"x": px, "y": py, "rows": [[iterations, ...], ...]}``
* ``reduce`` ``{"width": W, "height": H, "tiles": [map outputs]}`` or a list of map
  outputs -> ``{"width": W, "height": H, "rows": [[...], ...]}`` the full image

The kernel is ``@njit(cache=True)`` when run as a script (see ``montecarlo_pi.py``).

CLI: ``mandelbrot.py split|map|reduce [--jsonl]``.  Python entries:
``mandelbrot:split``, ``mandelbrot:render_tile``, ``mandelbrot:reduce``.
"""

import json
import sys

import numpy as np

_kernel = None


def _tile_py(px, py, tw, th, width, height, x0, y0, x1, y1, max_iter):
    out = np.zeros((th, tw), dtype=np.int32)
    dx = (x1 - x0) / width
    dy = (y1 - y0) / height
    for j in range(th):
        ci = y0 + (py + j) * dy
        for i in range(tw):
            cr = x0 + (px + i) * dx
            zr = 0.0
            zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            out[j, i] = n
    return out


def _get_kernel():
    # Compiled lazily so split/reduce never import numba.  The on-disk cache
    # is used only when this file runs as a script: numba's cache records the
    # module name and re-imports it on load, so entries written while the file
    # was imported under another name (a python-protocol worker, a test) would
    # break the script's runs, and vice versa.
    global _kernel
    if _kernel is None:
        from numba import njit

        _kernel = njit(cache=__name__ == "__main__")(_tile_py)
    return _kernel


def split(task):
    w, h, t = int(task["width"]), int(task["height"]), int(task.get("tile", 64))
    region = [float(v) for v in task.get("region", [-2.0, -1.25, 0.5, 1.25])]
    m = int(task.get("max_iter", 100))
    return [{"x": x, "y": y, "w": min(t, w - x), "h": min(t, h - y), "width": w, "height": h,
             "max_iter": m, "region": region}
            for y in range(0, h, t) for x in range(0, w, t)]


def render_tile(task):
    x0, y0, x1, y1 = (float(v) for v in task["region"])
    rows = _get_kernel()(int(task["x"]), int(task["y"]), int(task["w"]), int(task["h"]), int(task["width"]),
                         int(task["height"]), x0, y0, x1, y1, int(task["max_iter"]))
    return {"x": int(task["x"]), "y": int(task["y"]), "rows": rows.tolist()}


def reduce(task):
    tiles = task["tiles"] if isinstance(task, dict) else task
    width = task.get("width") if isinstance(task, dict) else None
    height = task.get("height") if isinstance(task, dict) else None
    if width is None:
        width = max(t["x"] + len(t["rows"][0]) for t in tiles)
        height = max(t["y"] + len(t["rows"]) for t in tiles)
    image = [[0] * width for _ in range(height)]
    for t in tiles:
        for j, row in enumerate(t["rows"]):
            image[t["y"] + j][t["x"]:t["x"] + len(row)] = row
    return {"width": width, "height": height, "rows": image}


STAGES = {"split": split, "map": render_tile, "reduce": reduce}


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
