"""Training of the printed-text filter (:mod:`htr_ray.layout.printed` is its inference side).

The classifier is trained on generated pages, whose printed and handwritten ink are known pixel by
pixel, cut exactly as at inference time (the real segmenter, then :func:`~htr_ray.layout.printed.word_spans`):

    python -m htr_ray.training.printed_filter --output models/printed_filter      # ~30 min on 2 busy cores
    python -m htr_ray.training.printed_filter --sweep                             # val figures per threshold
    python -m htr_ray.training.printed_filter --remeasure --threshold 0.8         # set it, measure on test

Its accuracy on pages in unseen handwriting fonts, and how many words of real IAM-OnDB handwriting it
would wrongly call printed, are written into the checkpoint's ``model.json`` (``metrics``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

import numpy as np

from htr_ray import paths
from htr_ray.data import labels as label_file
from htr_ray.io import images
from htr_ray.layout import segment
from htr_ray.layout.printed import CLASSES, DEFAULT_FILTER, PrintedFilter, word_input, word_spans

log = logging.getLogger(__name__)


def page_words(sample, min_ink: int = 12, purity: float = 0.8) -> list[tuple[np.ndarray, int]]:
    """Labelled word crops of one generated page (``PageGenerator.sample(i, with_masks=True)``), cut as
    at inference: segment the page, split each line into words. A word is printed (1) or handwritten
    (0) when at least ``purity`` of its labelled ink is of that kind; mixed or unlabelled words are
    left out."""
    seg = segment.segment_page(sample.image)
    printed = segment.rotate(sample.masks["printed"], seg.angle)
    hand = segment.rotate(sample.masks["hand"], seg.angle)
    out = []
    for box in seg.boxes:
        crop = segment.crop(seg.page, box)
        x0, y0, x1, y1 = box
        for a, b in word_spans(crop):
            p = int(printed[y0:y1, x0 + a:x0 + b].sum())
            hw = int(hand[y0:y1, x0 + a:x0 + b].sum())
            if p + hw < min_ink:
                continue
            if p >= purity * (p + hw):
                out.append((crop[:, a:b], 1))
            elif hw >= purity * (p + hw):
                out.append((crop[:, a:b], 0))
    return out


def generated_words(n_pages: int, split: str, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    from htr_ray.data.synth.pages import PageGenerator

    gen = PageGenerator(seed=seed, split=split)
    crops, labels = [], []
    for i in range(n_pages):
        for crop, label in page_words(gen.sample(i, with_masks=True)):
            crops.append(crop)
            labels.append(label)
    return crops, np.array(labels, np.int64)


def iam_words(data: str, split: str, limit: int) -> list[np.ndarray]:
    """Word crops of real IAM-OnDB lines (all handwritten) of one split, read by the training loop's own
    loader (split by form): what the filter must not call printed."""
    from htr_ray.data.rows import load_rows

    crops: list[np.ndarray] = []
    for row in load_rows(data, split):
        gray = images.decode_gray(row["image"])
        crops += [gray[:, a:b] for a, b in word_spans(gray)]
        if len(crops) >= limit:
            break
    return crops[:limit]


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast and noise on the normalised input (ink = 1): scans differ in both."""
    x = x * rng.uniform(0.6, 1.0) + rng.normal(0, rng.uniform(0, 0.05), x.shape).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32)


def measure(flt: PrintedFilter, test_pages: int, seed: int, iam: str | None) -> dict:
    """Word accuracy on generated test-font pages (seed ``seed``), per class recall, and the share of
    real IAM-OnDB words of test forms (all handwritten) called printed, at the filter's threshold."""
    crops, labels = generated_words(test_pages, "test", seed)
    pred = flt.printed_probability(crops) >= flt.threshold
    metrics = {
        "threshold": flt.threshold, "test_words": int(len(labels)), "test_pages": test_pages,
        "test_accuracy": float((pred == labels.astype(bool)).mean()),
        "test_printed_recall": float(pred[labels == 1].mean()) if (labels == 1).any() else None,
        "test_handwritten_recall": float((~pred[labels == 0]).mean()) if (labels == 0).any() else None,
    }
    if iam:
        real = iam_words(iam, "test", 2000)
        metrics["iam_test_words"] = len(real)
        metrics["iam_called_printed"] = float((flt.printed_probability(real) >= flt.threshold).mean())
    return metrics


def train(output: str, pages: int = 240, val_pages: int = 40, epochs: int = 6, seed: int = 0,
          iam: str | None = None, command: str = "", threshold: float = 0.5) -> dict:
    """Train ``word_kind_cnn`` on words of generated train-font pages; report on test-font pages and on
    real IAM-OnDB words (handwritten). Writes a checkpoint directory at ``output``; returns its metrics."""
    import torch

    from htr_ray.models import checkpoint
    from htr_ray.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    crops, labels = generated_words(pages, "train", seed)
    model = build_model("word_kind_cnn", num_classes=len(CLASSES))
    h, w = model.input_height, model.input_width
    x = np.stack([word_input(c, h, w) for c in crops])[:, None]
    y = torch.from_numpy(labels)
    log.info("%d training words (%.0f%% printed) from %d pages in %.0fs", len(labels), 100 * labels.mean(), pages,
             time.time() - t0)
    # classes are unbalanced (about 30 % of the words on these forms are printed): weight the loss
    weight = torch.tensor([len(labels) / max(1, (labels == k).sum()) for k in range(len(CLASSES))], dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight / weight.sum() * len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * -(-len(labels) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(len(labels))
        total = 0.0
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            xb = torch.from_numpy(np.stack([_augment(x[j, 0], rng) for j in idx])[:, None])
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, total / len(labels))
    model.eval()
    flt = PrintedFilter(model, {"input": checkpoint.input_spec(model)}, threshold)
    metrics = {"train_words": int(len(labels)), "train_pages": pages, **measure(flt, val_pages, seed + 1, iam),
               "seconds": round(time.time() - t0, 1)}
    checkpoint.save(output, model, {"charset": CLASSES, "threshold": threshold, "metrics": metrics, "command": command,
                                    "data": {"train": f"generated pages, train fonts, seed {seed}",
                                             "test": f"generated pages, test fonts, seed {seed + 1}",
                                             "real": f"{iam} (test forms)" if iam else None}})
    return metrics


def sweep(flt: PrintedFilter, pages: int, seed: int, iam: str | None,
          thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)) -> list[dict]:
    """Accuracy and per-class recall on generated **val** pages, and the share of IAM-OnDB **val**-form
    words called printed, per threshold: the data the threshold is chosen on (never the test data)."""
    crops, labels = generated_words(pages, "val", seed)
    p = flt.printed_probability(crops)
    real = flt.printed_probability(iam_words(iam, "val", 1500)) if iam else None
    rows = []
    for t in thresholds:
        pred = p >= t
        rows.append({"threshold": t, "val_words": int(len(labels)), "accuracy": float((pred == labels.astype(bool)).mean()),
                     "printed_recall": float(pred[labels == 1].mean()), "handwritten_recall": float((~pred[labels == 0]).mean()),
                     "iam_val_called_printed": float((real >= t).mean()) if real is not None else None})
    return rows


def remeasure(output: str, threshold: float, test_pages: int, seed: int, iam: str | None, command: str) -> dict:
    """Set a trained filter's threshold (chosen on validation data) and measure it again, in place."""
    from htr_ray.models import checkpoint

    model, meta = checkpoint.load(output)
    flt = PrintedFilter(model, meta, threshold)
    metrics = {**meta.get("metrics", {}), **measure(flt, test_pages, seed + 1, iam)}
    keep = {k: v for k, v in meta.items() if k not in ("format", "architecture", "params", "kind", "input", "created")}
    checkpoint.save(output, model, {**keep, "threshold": threshold, "metrics": metrics,
                                    "command": f"{meta.get('command', '').split(' && ')[0]} && {command}".strip(" &")})
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=DEFAULT_FILTER, help="checkpoint directory URI to write")
    ap.add_argument("--pages", type=int, default=240, help="generated training pages (train fonts)")
    ap.add_argument("--test-pages", type=int, default=40, help="generated test pages (unseen fonts)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iam", default=str(paths.shared_data() / "iam_ondb_lines"),
                    help="IAM-OnDB lines folder: words of its test forms measure false 'printed' calls ('' to skip)")
    ap.add_argument("--threshold", type=float, default=0.5, help="P(printed) from which a word is printed")
    ap.add_argument("--remeasure", action="store_true",
                    help="do not train: set --threshold on the filter at --output and measure it again")
    ap.add_argument("--sweep", action="store_true",
                    help="do not train: print the filter's val figures per threshold (to choose --threshold)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    iam = args.iam if args.iam and label_file.has_labels(args.iam) else None
    command = "python -m htr_ray.training.printed_filter " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.sweep:
        flt = PrintedFilter.from_uri(args.output)
        for r in sweep(flt, 15, args.seed + 5, iam):
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
        return 0
    if args.remeasure:
        m = remeasure(args.output, args.threshold, args.test_pages, args.seed, iam, command.strip())
    else:
        m = train(args.output, args.pages, args.test_pages, args.epochs, args.seed, iam, command.strip(), args.threshold)
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
