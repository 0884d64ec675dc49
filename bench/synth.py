"""Benchmark of the synthetic generator: lines and pages per second on ONE core (one process, one thread).

    OMP_NUM_THREADS=1 .venv/bin/python bench/synth.py [--lines 400] [--pages 12] [--out work/bench/synth.json]

Prints a table and writes JSON. Each row renders samples after a warm-up (glyph caches filled; the
'cold' row shows the first samples of a fresh process). "+png" rows include the PNG encoding a shard
row needs. The machine is shared: the load average at start and end is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

cv2.setNumThreads(1)

from htr_ray.io import images  # noqa: E402
from htr_ray.data.synth import pages, render, strokes  # noqa: E402


def _rate(fn, n: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, n / cpu if cpu else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=400, help="lines per measured row")
    ap.add_argument("--pages", type=int, default=12, help="pages per measured row")
    ap.add_argument("--out", default="work/bench/synth.json")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    rows = []

    def row(name, fn, n, unit):
        per_wall, per_cpu = _rate(fn, n)
        rows.append({"what": name, "n": n, "unit": unit, "per_s_wall": round(per_wall, 1), "per_s_cpu": round(per_cpu, 1)})
        print(f"{name:<34} {n:>6} {per_wall:>10.1f} {per_cpu:>10.1f}  {unit}/s", flush=True)

    print(f"{'what':<34} {'n':>6} {'wall /s':>10} {'cpu /s':>10}")
    gen = render.LineGenerator(seed=123)
    row("lines, cold start (mixed domains)", lambda i: gen.sample(i), min(100, args.lines), "lines")
    for i in range(100, 100 + args.lines):  # warm the glyph caches
        gen.sample(i)
    base = 10_000
    row("lines, mixed domains", lambda i: gen.sample(base + i), args.lines, "lines")
    row("lines, mixed domains +png", lambda i: images.encode_png(gen.sample(2 * base + i)[0], compression=1), args.lines, "lines")
    for dom in render.DEFAULT_WEIGHTS:
        g = render.LineGenerator(seed=5, domains=[dom])
        for i in range(60):
            g.sample(i)
        row(f"lines, {dom}", lambda i, g=g: g.sample(base + i), args.lines // 2, "lines")
    if strokes.load() is not None:
        sg = render.LineGenerator(seed=7, domains=["generic"], strokes_fraction=1.0)
        row("lines, IAM strokes re-rendered", lambda i: sg.sample(i), args.lines // 2, "lines")
    for dom in pages.PAGE_DOMAINS:
        pg = pages.PageGenerator(seed=3, domains=[dom])
        pg.sample(0)
        row(f"pages, {dom} +png", lambda i, pg=pg: images.encode_png(pg.sample(1 + i).image, compression=1), args.pages, "pages")
    load1 = os.getloadavg()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/synth.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loadavg_start": load0, "loadavg_end": load1, "rows": rows,
        "note": "one process, one thread; 'cpu /s' = samples per second of this process's CPU time",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
