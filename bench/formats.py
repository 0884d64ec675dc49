"""Standard outputs benchmark: what writing ALTO, PAGE-XML and hOCR costs per page, how big the files are,
and whether every file validates against its official schema (the same schemas tests/test_formats.py uses).

Pages are made of real IAM-OnDB transcriptions (``../shared/data/iam_ondb_lines/labels.tsv``, read by
:mod:`htr_ray.data.labels`), ``--lines``
per page laid out on a 1700x2200 page with polygons, baselines, per-character x and confidences, one line
in five printed: the shape of a page the reader returns. The writers' cost depends only on that shape,
not on the pixels.

    python bench/formats.py --pages 50 --lines 30
    python bench/formats.py --pages 50 --lines 30 --real 5   # also pages read end to end

``--real N`` also reads N composed pages of held-out (test-split) IAM-OnDB forms end to end (the page
reader, the shipped line finder and recogniser), writes the three formats from what they return, and
checks that every file validates and that the ALTO reads back with the same text.

Prints a table and writes JSON (``--out``, default work/bench/formats.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from htr_ray import paths  # noqa: E402
from htr_ray.data import labels  # noqa: E402
from htr_ray.pages.formats import FORMATS, read_alto, render  # noqa: E402
from htr_ray.pages.results import PageResult, TextLine  # noqa: E402

IAM_LINES = paths.shared_data() / "iam_ondb_lines"


def make_pages(n_pages: int, n_lines: int, seed: int = 0) -> list[PageResult]:
    texts = [row.text for row in labels.read_rows(str(IAM_LINES)) if row.text]
    rng = random.Random(seed)
    pages = []
    for p in range(n_pages):
        lines, y = [], 80
        for i in range(n_lines):
            text = rng.choice(texts)
            x0, h = rng.randint(60, 200), rng.randint(50, 70)
            x1 = min(1680, x0 + 22 * len(text) + rng.randint(0, 60))
            step = (x1 - x0) / len(text)
            lines.append(TextLine(
                text=text, confidence=rng.uniform(0.6, 1.0),
                char_confidences=[rng.uniform(0.3, 1.0) for _ in text], bbox=[x0, y, x1, y + h],
                polygon=[[x0, y + 3], [(x0 + x1) // 2, y], [x1, y + 2], [x1, y + h], [x0, y + h - 2]],
                baseline=[[x0, y + h - 12], [x1, y + h - 10]],
                kind="printed" if i % 5 == 0 else "handwritten",
                char_x=[int(x0 + step * (k + 0.5)) for k in range(len(text))]))
            y += h + 4
        pages.append(PageResult(uri=f"s3://bench/pages/page_{p:04d}.png", width=1700, height=max(2200, y),
                                lines=lines, model="bench"))
    return pages


def schemas():
    import xmlschema

    def f(dist, path):
        return str(importlib.metadata.distribution(dist).locate_file(path))

    xlink = f("ocrd-validators", "ocrd_validators/xlink.xsd")
    return {
        "alto": xmlschema.XMLSchema(f("htrflow", "htrflow/serialization/schemas/alto-4-4.xsd"), allow="local",
                                    locations={"http://www.w3.org/1999/xlink": xlink}),
        "page": xmlschema.XMLSchema(f("ocrd-validators", "ocrd_validators/page.xsd"), allow="local"),
        "hocr": xmlschema.XMLSchema(str(Path(xmlschema.__file__).parent / "schemas/XHTML/xhtml1-strict.xsd"),
                                    allow="local"),
    }


def real_pages(n: int) -> dict:
    import cv2

    from htr_ray.data.synth.layout_pages import IAM_KINDS, compose_page
    from htr_ray.pages.reader import PageReader
    from htr_ray.paths import shipped_model
    from htr_ray.recognition.spec import RecognizerSpec

    sch = schemas()
    recognizer = RecognizerSpec(model=shipped_model("en_line_crnn_small")).build()
    reader = PageReader()
    invalid = {f: 0 for f in FORMATS}
    same, lines, kinds = 0, 0, {}
    for i in range(n):
        kind = IAM_KINDS[i % len(IAM_KINDS)]
        page = compose_page(i, "test", kind)
        result = reader.read(f"{kind}_{i}.png", cv2.imencode(".png", page.image)[1].tobytes(), recognizer)[0]
        for fmt in FORMATS:
            invalid[fmt] += bool(list(sch[fmt].iter_errors(render(result, fmt).decode())))
        same += read_alto(render(result, "alto")).text == result.text
        lines += len(result.lines)
        for ln in result.lines:
            kinds[ln.kind] = kinds.get(ln.kind, 0) + 1
    return {"pages": n, "lines": lines, "kinds": kinds, "invalid": invalid, "round_trip_text_equal": f"{same}/{n}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--lines", type=int, default=30, help="lines per page")
    ap.add_argument("--validate", type=int, default=5, help="validate the files of this many pages (0: none)")
    ap.add_argument("--real", type=int, default=0, help="also read this many composed test pages end to end")
    ap.add_argument("--out", default=str(REPO / "work" / "bench" / "formats.json"))
    args = ap.parse_args()

    pages = make_pages(args.pages, args.lines)
    chars = sum(len(ln.text) for p in pages for ln in p.lines) / len(pages)
    rows = []
    for fmt in FORMATS:
        t0 = time.process_time()
        docs = [render(p, fmt) for p in pages]
        ms = 1000 * (time.process_time() - t0) / len(pages)
        rows.append({"format": fmt, "ms_per_page": round(ms, 2),
                     "kb_per_page": round(sum(map(len, docs)) / len(docs) / 1024, 1), "docs": docs})
    alto_docs = rows[0]["docs"]
    t0 = time.process_time()
    back = [read_alto(d) for d in alto_docs]
    read_ms = 1000 * (time.process_time() - t0) / len(pages)
    same_text = sum(b.text == p.text for b, p in zip(back, pages))
    # ALTO has no place for runs of spaces or spaces at either end of a line (see htr_ray/pages/formats.py)
    same_words = sum([ln.split() for ln in b.text.split("\n")] == [ln.split() for ln in p.text.split("\n")]
                     for b, p in zip(back, pages))

    invalid = {}
    if args.validate:
        sch = schemas()
        for r in rows:
            invalid[r["format"]] = sum(bool(list(sch[r["format"]].iter_errors(d.decode())))
                                       for d in r["docs"][:args.validate])

    print(f"{args.pages} pages x {args.lines} lines ({chars:.0f} characters a page), CPU time on one core")
    print(f"{'format':8} {'ms/page':>8} {'KiB/page':>9} {'invalid':>12}")
    for r in rows:
        v = f"{invalid[r['format']]}/{min(args.validate, args.pages)}" if args.validate else "-"
        print(f"{r['format']:8} {r['ms_per_page']:8.2f} {r['kb_per_page']:9.1f} {v:>12}")
    print(f"read_alto {read_ms:.2f} ms/page; after the round trip, page text equal: {same_text}/{len(pages)}, "
          f"equal up to runs of spaces and spaces at line ends: {same_words}/{len(pages)}")

    real = real_pages(args.real) if args.real else None
    if real:
        print(f"end to end: {real['pages']} composed test pages ({real['lines']} lines, kinds {real['kinds']}); "
              f"invalid files {real['invalid']}; ALTO text equal after the round trip: {real['round_trip_text_equal']}")

    out = {"real": real, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.node(),
           "cpus": os.cpu_count(), "pages": args.pages, "lines_per_page": args.lines,
           "chars_per_page": round(chars), "read_alto_ms_per_page": round(read_ms, 2),
           "round_trip_text_equal": f"{same_text}/{len(pages)}",
           "round_trip_words_equal": f"{same_words}/{len(pages)}",
           "formats": [{k: v for k, v in r.items() if k != "docs"} | {"invalid": invalid.get(r["format"])}
                       for r in rows]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
