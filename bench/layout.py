"""Line-finding benchmark: the learned line finder and the OpenCV segmenter on the same pages.

Pages (htr_ray.data.synth.layout_pages.compose_page, split ``test``: held-out IAM-OnDB forms, unseen fonts):
  composed real   iam_plain + iam_ruled: real IAM-OnDB lines of held-out forms on plain / ruled paper
  forms real      iam_form_cheque / _prescription / _homework: printed forms filled in with those lines
  generated       generated cheques, prescriptions, homework in the unseen test fonts

Scores (htr_ray.evaluation.line_finding, on filled polygons, every line printed or handwritten): precision,
recall and F1 at IoU 0.5, split rate, merge rate, kind accuracy of the matched lines, and the share of
the handwritten fields of cheques and prescriptions found as one line. Time: CPU ms (this thread) per page of
``find`` with one thread, and a separate timing on pages resized to 1700x2200.

    python bench/layout.py --pages 12 --json work/bench/layout.json
    python bench/layout.py --pages 12 --groups forms\ real,generated --dump work/bench/layout_fails

The learned finder's time is also split into its parts (``LearnedLineFinder.last_timings``: shrink +
network, maps to lines, geometry + reading order). ``--dump DIR`` writes every cheque / prescription page
with a handwritten field not found as one line: truth outlines in green, found lines in red
(handwritten) or blue (printed), the failing fields' truth thick.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GROUPS = {"composed real": ("iam_plain", "iam_ruled"),
          "forms real": ("iam_form_cheque", "iam_form_prescription", "iam_form_homework"),
          "generated": ("generated",)}


def finders(args):
    from htr_ray.layout.opencv import OpenCVLineFinder

    out = {}
    if args.model:
        from htr_ray.layout.finder import LearnedLineFinder

        out["learned"] = LearnedLineFinder.from_uri(args.model)
    if not args.no_opencv:
        out["opencv"] = OpenCVLineFinder(printed_filter=None)
    if args.with_filter:
        from htr_ray.layout.printed import DEFAULT_FILTER

        out["opencv+filter"] = OpenCVLineFinder(printed_filter=DEFAULT_FILTER)
    return out


def run(args) -> dict:
    import torch

    from htr_ray.data.synth.layout_pages import compose_page
    from htr_ray.evaluation.line_finding import score_page, summarise
    from htr_ray.layout.base import points_to_input

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    fs = finders(args)
    for f in fs.values():  # first use (the learned finder exports its net to onnxruntime then): not timed
        f.find(np.full((256, 192), 255, np.uint8))
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
    scores = {n: {} for n in fs}
    fields = {n: [] for n in fs}
    cpu = {n: [] for n in fs}
    kinds = [k for g in args.groups for k in GROUPS[g]]
    big = []
    for kind in kinds:
        for seed in range(args.pages):
            page = compose_page(args.seed + seed, args.split, kind)
            H, W = page.image.shape
            if kind in ("iam_plain", "iam_ruled") and len(big) < args.timing_pages:
                big.append(cv2.resize(page.image, (1700, 2200), interpolation=cv2.INTER_AREA))
            truth = [ln["polygon"] for ln in page.lines]
            tk = [ln["kind"] for ln in page.lines]
            domain = page.meta.get("domain", "")
            for name, f in fs.items():
                t = time.thread_time()
                lay = f.find(page.image)
                cpu[name].append(time.thread_time() - t)
                found = [points_to_input(ln.outline(), lay.angle, (W, H)) for ln in lay.lines]
                sc = score_page(truth, found, truth_kinds=tk, found_kinds=[ln.kind for ln in lay.lines])
                scores[name].setdefault(kind, []).append(sc)
                if domain in ("cheque", "prescription"):
                    oks = [ok for ok, ln in zip(sc["one_line"], page.lines) if ln["kind"] == "handwritten"]
                    fields[name] += oks
                    if args.dump and not all(oks):
                        bad = [t for ok, t, ln in zip(sc["one_line"], truth, page.lines) if not ok and ln["kind"] == "handwritten"]
                        dump(os.path.join(args.dump, f"{name}-{kind}-{args.seed + seed}.png"), page.image, truth, bad,
                             found, [ln.kind for ln in lay.lines])
    result = {"split": args.split, "pages_per_kind": args.pages, "finders": {}}
    for name in fs:
        per_kind = {k: summarise(v) for k, v in scores[name].items()}
        groups = {g: summarise([s for k in GROUPS[g] for s in scores[name].get(k, [])]) for g in args.groups}
        timing, parts = [], []
        for img in big:
            for _ in range(args.repeats):
                t, w, pt = time.thread_time(), time.perf_counter(), time.process_time()
                fs[name].find(img)
                timing.append((time.thread_time() - t, time.perf_counter() - w, time.process_time() - pt))
                if getattr(fs[name], "last_timings", None):
                    parts.append(dict(fs[name].last_timings))
        result["finders"][name] = {
            "groups": groups, "kinds": per_kind,
            "fields_one_line": float(np.mean(fields[name])) if fields[name] else None, "fields": len(fields[name]),
            "cpu_ms_per_page": 1000 * float(np.mean(cpu[name])),
            "cpu_ms_1700x2200_median": 1000 * float(np.median([c for c, _, _ in timing])) if timing else None,
            "cpu_ms_1700x2200_min": 1000 * float(np.min([c for c, _, _ in timing])) if timing else None,
            "wall_ms_1700x2200_median": 1000 * float(np.median([w for _, w, _ in timing])) if timing else None,
            # every thread of the process: equal to the above unless the finder ran work on other threads
            "process_cpu_ms_1700x2200_median": 1000 * float(np.median([p for _, _, p in timing])) if timing else None,
            "parts_ms_1700x2200_median": {k: 1000 * float(np.median([p[k] for p in parts])) for k in parts[0]} if parts else None,
        }
    return result


def table(result: dict) -> str:
    rows = ["| finder | pages | lines | P | R | F1 | split | merge | kind acc. |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["finders"].items():
        for g, s in r["groups"].items():
            rows.append(f"| {name} | {g} ({s['pages']}) | {s['truth']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
                        f"| {100 * s['split_rate']:.1f} % | {100 * s['merge_rate']:.1f} % | {s['kind_accuracy']:.3f} |")
    rows += ["", "| finder | cheque + prescription fields as one line | CPU ms / page (as composed) | CPU ms 1700x2200 median (min) |",
             "|---|---|---|---|"]
    for name, r in result["finders"].items():
        f = f"{100 * r['fields_one_line']:.1f} % of {r['fields']}" if r["fields_one_line"] is not None else "-"
        t = f"{r['cpu_ms_1700x2200_median']:.0f} ({r['cpu_ms_1700x2200_min']:.0f})" if r["cpu_ms_1700x2200_median"] else "-"
        rows.append(f"| {name} | {f} | {r['cpu_ms_per_page']:.0f} | {t} |")
    for name, r in result["finders"].items():
        if r.get("parts_ms_1700x2200_median"):
            rows.append(f"\n{name}, CPU ms per 1700x2200 page by part (median): "
                        + ", ".join(f"{k} {v:.1f}" for k, v in r["parts_ms_1700x2200_median"].items()))
    if "load" in result:
        rows.append(f"load average {result['load'][0]:.2f} / {result['load'][1]:.2f} at start / end, {os.cpu_count()} cores")
    return "\n".join(rows)


def dump(path: str, image: np.ndarray, truth, bad, found, found_kinds) -> None:
    """A page with truth outlines (green; the failing fields thick) and found lines (red handwritten,
    blue printed)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)

    def poly(p):
        a = np.asarray(p, np.float64)
        if a.ndim == 1:
            x0, y0, x1, y1 = a
            a = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return [np.round(a).astype(np.int32).reshape(-1, 1, 2)]

    for t in truth:
        cv2.polylines(rgb, poly(t), True, (0, 170, 0), 1)
    for t in bad:
        cv2.polylines(rgb, poly(t), True, (0, 170, 0), 4)
    for f, k in zip(found, found_kinds):
        cv2.polylines(rgb, poly(f), True, (200, 0, 0) if k == "printed" else (0, 0, 230), 2)
    cv2.imwrite(path, rgb)


def main(argv=None) -> int:
    from htr_ray.layout.finder import DEFAULT_LINE_FINDER

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_LINE_FINDER, help="learned line finder checkpoint ('' to skip)")
    ap.add_argument("--pages", type=int, default=12, help="pages per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test")
    ap.add_argument("--groups", default=",".join(GROUPS), help="page groups: " + ", ".join(GROUPS))
    ap.add_argument("--with-filter", action="store_true", help="also the OpenCV segmenter + printed-text filter")
    ap.add_argument("--no-opencv", action="store_true", help="the learned finder only")
    ap.add_argument("--timing-pages", type=int, default=3, help="composed real pages resized to 1700x2200 for timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    ap.add_argument("--dump", default="", help="write the cheque / prescription pages with a failing field here")
    args = ap.parse_args(argv)
    args.groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    t0 = time.time()
    load0 = os.getloadavg()[0]
    result = run(args)
    result["load"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    result["command"] = "python bench/layout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["seconds"] = round(time.time() - t0, 1)
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(table(result))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
