"""Training lines as the page reader cuts them: crops of composed TRAIN-split pages, with their text.

The line recogniser was trained on IAM-OnDB lines as the dataset cut them and on generated lines. On a
page it reads what the page reader cuts instead: the learned finder's line polygon, deskewed, painted
paper outside the polygon, with ruling, form boxes and a neighbour's descenders near the edges. This
builder writes those crops, from pages composed of the real lines of IAM-OnDB **train** forms only
(and generated pages in train fonts), as an IAM-style folder (``labels.tsv`` + PNGs) that
``jobs/train.py --data`` mixes with the other sources:

    python -m htr_ray.training.page_crops --out work/page_crops --pages 200

Each found handwritten line is paired with a true line by polygon IoU (:func:`line_finding.match`); a
pair below ``--iou`` (a split or merged line, whose true text is not what the crop shows) is left out,
so a label is the text of the crop. Pages are ``compose_page(seed, "train", kind)`` for seeds
``--seed .. --seed + --pages - 1``: val and test forms, and the test split's fonts, are never read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from htr_ray.data.labels import FILE_NAME
from htr_ray.data.synth.layout_pages import IAM_KINDS, compose_page
from htr_ray.evaluation.line_finding import match
from htr_ray.io import images, storage
from htr_ray.models import checkpoint
from htr_ray.pages.reader import PageReader, PreparedPage
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL

log = logging.getLogger(__name__)

KINDS = IAM_KINDS + ("generated",)


def page_crops(reader: PageReader, seed: int, kind: str, iou: float) -> list[tuple[str, object]]:
    """(text, crop) of each handwritten line the reader found on one composed train page and could pair
    with a true line at polygon IoU >= ``iou``."""
    page = compose_page(seed, "train", kind)
    truth = [ln for ln in page.lines if ln["kind"] == "handwritten" and ln["text"].strip()]
    prepared = reader.prepare_gray(page.image, f"{kind}-{seed}")
    if not isinstance(prepared, PreparedPage) or not truth:
        return []
    hand = [i for i, ln in enumerate(prepared.lines) if ln.kind != "printed"]
    pairs = match([t["polygon"] for t in truth], [prepared.lines[i].outline() for i in hand], threshold=iou)
    return [(truth[t]["text"], prepared.crops[hand[f]]) for t, f, _ in sorted(pairs)]


def build(out: str, pages: int, seed: int = 0, kinds=KINDS, iou: float = 0.7, line_finder: str = "learned",
          charset: str | None = None) -> dict:
    """Write ``out/images/<kind>/*.png`` and ``out/labels.tsv``; returns counts per kind. With ``charset``
    (a string of characters), lines with a character outside it are left out (generated pages hold
    lines in Chinese, which a Latin line model is not to learn)."""
    reader = PageReader(line_finder, turn_check_below=0)
    allowed = set(charset) if charset else None
    rows, counts, started = [], {}, time.time()
    for kind in kinds:
        n = 0
        for s in range(seed, seed + pages):
            for k, (text, crop) in enumerate(page_crops(reader, s, kind, iou)):
                if allowed is not None and not set(text) <= allowed:
                    continue
                # one 'form' per page (labels.form_of drops the last -NN), so a page's lines share a split
                line_id = f"pc-{kind}-{s:05d}-{k:02d}"
                rel = f"images/{kind}/{line_id}.png"
                storage.write_bytes(storage.join(out, *rel.split("/")), images.encode_png(crop))
                rows.append(f"{line_id}\t{rel}\t{text}")
                n += 1
        counts[kind] = n
        log.info("%s: %d lines from %d pages (%.0f s)", kind, n, pages, time.time() - started)
    storage.write_bytes(storage.join(out, FILE_NAME), ("line_id\timage\ttranscription\n" + "\n".join(rows) + "\n").encode())
    summary = {"pages_per_kind": pages, "seed": seed, "iou": iou, "finder": reader.finder_name, "lines": counts,
               "seconds": round(time.time() - started, 1), "command": " ".join(["python -m htr_ray.training.page_crops"] + sys.argv[1:])}
    storage.write_bytes(storage.join(out, "page_crops.json"), json.dumps(summary, indent=1).encode())
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (local or s3://)")
    ap.add_argument("--pages", type=int, default=200, help="pages of each kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--iou", type=float, default=0.7, help="least polygon IoU of a found line with its true line")
    ap.add_argument("--line-finder", default="learned")
    ap.add_argument("--charset-of", default=DEFAULT_LINE_MODEL,
                    help="keep only lines this line model's charset covers ('': all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    charset = "".join(checkpoint.read_meta(args.charset_of)["charset"]) if args.charset_of else None
    summary = build(args.out, args.pages, args.seed, args.kinds, args.iou, args.line_finder, charset)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
