"""Whole-page quality on generated pages in unseen handwriting fonts: line finding and page CER, with
and without the printed-text filter, through the single-process path the bulk job and Serve share.

    .venv/bin/python bench/page_quality.py [--pages 30] [--model URI] [--filter URI] [--json out.json]

Per domain: handwritten lines in the ground truth, recall of those lines at IoU >= 0.5 among the boxes
the reader ends up with (segmenter boxes; with the filter, its handwritten pieces), and the page CER
(:func:`htr_ray.pages.reader.score_page`: matched lines' character errors + every character of a missed
line, over the truth's characters; what the filter flags as printed is not part of the page text).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from htr_ray.io import images
from htr_ray.pages import reader as pages
from htr_ray.layout import segment  # noqa: E402
from htr_ray.layout.printed import DEFAULT_FILTER, PrintedFilter  # noqa: E402
from htr_ray.recognition.recognizer import Recognizer  # noqa: E402
from htr_ray.data.synth.pages import PAGE_DOMAINS, PageGenerator  # noqa: E402
from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=30, help="pages, the three domains in turn")
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL)
    ap.add_argument("--filter", default=DEFAULT_FILTER)
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "page_quality.json"))
    args = ap.parse_args()

    rec = Recognizer.from_uri(args.model)
    flt = PrintedFilter.from_uri(args.filter)
    gens = {d: PageGenerator(seed=args.seed, split="test", domains=[d]) for d in PAGE_DOMAINS}
    stats: dict = defaultdict(lambda: defaultdict(float))
    started = time.time()
    for i in range(args.pages):
        domain = PAGE_DOMAINS[i % len(PAGE_DOMAINS)]
        sample = gens[domain].sample(i)
        data = images.encode_png(sample.image)
        truth = [ln["bbox"] for ln in sample.lines]
        for mode, f in (("lines whole", None), ("printed filter", flt)):
            row = pages.transcribe_bytes(data, rec, printed_filter=f)[0]
            s = stats[(domain, mode)]
            score = pages.score_page(sample.lines, row["lines"])
            s["pages"] += 1
            s["truth_lines"] += len(sample.lines)
            s["errors"] += score["errors"]
            s["chars"] += score["chars"]
            boxes = [ln["bbox"] for ln in row["lines"] if not ln["printed"]]
            s["found_at_iou_half"] += len(segment.match_boxes(truth, boxes, threshold=0.5))
            s["printed_pieces"] += sum(ln["printed"] for ln in row["lines"])
    seconds = time.time() - started

    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
           "model": args.model, "filter": args.filter, "pages": args.pages, "seed": args.seed,
           "seconds": round(seconds, 1), "rows": []}
    print(f"{args.pages} generated test-font pages, model {args.model}")
    print(f"{'domain':<14}{'mode':<16}{'lines':>7}{'recall@0.5':>12}{'page CER':>10}{'printed pieces':>16}")
    for mode in ("lines whole", "printed filter"):
        total = defaultdict(float)
        for domain in PAGE_DOMAINS:
            s = stats[(domain, mode)]
            for k, v in s.items():
                total[k] += v
            rows = [(domain, s)]
            if domain == PAGE_DOMAINS[-1]:
                rows.append(("all", total))
            for name, t in rows:
                r = {"domain": name, "mode": mode, "pages": int(t["pages"]), "lines": int(t["truth_lines"]),
                     "recall_iou_0.5": round(t["found_at_iou_half"] / max(t["truth_lines"], 1), 3),
                     "page_cer": round(t["errors"] / max(t["chars"], 1), 4), "printed_pieces": int(t["printed_pieces"])}
                out["rows"].append(r)
                print(f"{name:<14}{mode:<16}{r['lines']:>7}{r['recall_iou_0.5']:>12.3f}{r['page_cer']:>10.3f}{r['printed_pieces']:>16}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json} ({seconds:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
