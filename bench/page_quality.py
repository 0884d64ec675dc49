"""Whole-page quality through the page reader (the path the bulk job, Serve and the demo share): line
recall and page CER per page kind and per line finder, against the CER of the same lines read from
their true crops.

    .venv/bin/python bench/page_quality.py [--pages 4] [--finders opencv opencv+filter learned] [--json out.json]

Pages: :func:`htr_ray.data.synth.layout_pages.compose_page` on the **test** split, ``--pages`` of each
kind: real IAM-OnDB lines of held-out forms on plain and ruled paper and filled into printed cheque,
prescription and homework forms, and generated pages in unseen fonts. Ground truth = the handwritten
lines only.

Per kind and finder: handwritten truth lines, their recall at IoU >= 0.5 (of polygons) among the handwritten lines the
reader returns, and the page CER (:func:`htr_ray.evaluation.evaluate.score_page`: matched lines'
character errors + every character of a missed line, over the truth's characters; lines flagged printed
are not part of the page text). ``true crops`` reads each truth line from its own box: the recogniser's
share of the page CER, and the floor a line finder is measured against (issue 13 goal: page CER at most
1.1 x this on composed held-out pages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

from htr_ray import paths
from htr_ray.data.synth.layout_pages import IAM_KINDS, compose_page
from htr_ray.evaluation.evaluate import score_page
from htr_ray.evaluation.metrics import char_errors
from htr_ray.io import images
from htr_ray.layout.base import crop
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.evaluation.line_finding import match
from htr_ray.pages.reader import PageReader, learned_finder_uri
from htr_ray.recognition.spec import RecognizerSpec

KINDS = IAM_KINDS + ("generated",)


def readers(names: list[str]) -> dict[str, PageReader]:
    out = {}
    for name in names:
        if name == "learned" and not learned_finder_uri():
            print("learned line finder not shipped (htr_ray.layout.finder / models/line_finder): skipped")
            continue
        if name == "learned-box":  # the learned finder, crops not masked to their polygons (the ablation)
            out[name] = PageReader("learned", mask_lines=False)
            continue
        finder, flt = {"opencv": ("opencv", None), "opencv+filter": ("opencv", DEFAULT_FILTER)}.get(name, (name, None))
        out[name] = PageReader(finder, printed_filter=flt)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=4, help="pages of each kind")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--model", default=RecognizerSpec().model)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--finders", nargs="+", default=["opencv", "opencv+filter", "learned"],
                    help="readers: learned, learned-box (crops not masked to their polygon), opencv, opencv+filter")
    ap.add_argument("--split", default="test", help="test (held-out forms, unseen fonts) or val (for choices)")
    ap.add_argument("--json", default=str(paths.REPO_ROOT / "work" / "bench" / "page_quality.json"))
    args = ap.parse_args()

    rec = RecognizerSpec(model=args.model, backend=args.backend, quantize=args.quantize).build()
    rds = readers(args.finders)
    stats: dict = defaultdict(lambda: defaultdict(float))
    started = time.time()
    for kind in KINDS:
        for i in range(args.pages):
            page = compose_page(args.seed + i, args.split, kind)
            truth = [ln for ln in page.lines if ln["kind"] == "handwritten"]
            data = images.encode_png(page.image)
            s = stats[(kind, "true crops")]
            s["pages"] += 1
            s["lines"] += len(truth)
            s["found"] += len(truth)
            for t, r in zip(truth, rec.recognize([crop(page.image, t["bbox"]) for t in truth]) if truth else []):
                e, n = char_errors(t["text"], r.text)
                s["errors"], s["chars"] = s["errors"] + e, s["chars"] + n
            for name, reader in rds.items():
                result = reader.read(f"{kind}-{i}.png", data, rec)[0]
                s = stats[(kind, name)]
                score = score_page(truth, result)
                s["pages"] += 1
                s["lines"] += len(truth)
                s["errors"] += score["errors"]
                s["chars"] += score["chars"]
                hand = [ln.polygon or ln.bbox for ln in result.lines if ln.kind != "printed"]
                s["found"] += len(match([t["polygon"] for t in truth], hand, threshold=0.5))
                s["printed_lines"] += sum(ln.kind == "printed" for ln in result.lines)
    seconds = time.time() - started

    out = {"date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU, load {os.getloadavg()[0]:.1f} at end",
           "model": args.model, "backend": args.backend, "quantize": args.quantize, "pages_per_kind": args.pages,
           "seed": args.seed, "split": args.split, "seconds": round(seconds, 1), "rows": []}
    modes = ["true crops"] + list(rds)
    print(f"{args.pages} {args.split}-split pages per kind, model {args.model} ({args.backend})")
    print(f"{'kind':<24}{'reader':<16}{'lines':>7}{'recall@0.5':>12}{'page CER':>10}{'printed':>9}")
    for kind in KINDS + ("all",):
        for mode in modes:
            t = stats[(kind, mode)] if kind != "all" else {
                k: sum(stats[(kd, mode)][k] for kd in KINDS) for k in ("pages", "lines", "found", "errors", "chars", "printed_lines")}
            r = {"kind": kind, "reader": mode, "pages": int(t["pages"]), "lines": int(t["lines"]),
                 "recall_iou_0.5": round(t["found"] / max(t["lines"], 1), 3),
                 "page_cer": round(t["errors"] / max(t["chars"], 1), 4), "printed_lines": int(t["printed_lines"])}
            out["rows"].append(r)
            print(f"{kind:<24}{mode:<16}{r['lines']:>7}{r['recall_iou_0.5']:>12.3f}{r['page_cer']:>10.3f}{r['printed_lines']:>9}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json} ({seconds:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
