"""Training of the line finder (:mod:`htr_ray.models.line_finder`) in one process.

Pages come from :func:`htr_ray.data.synth.layout_pages.compose_page` (real IAM-OnDB lines of TRAIN
forms on plain / ruled paper and in printed forms, generated pages in train fonts, empty forms, blank
paper). A producer process composes pages one seed after another and stores each one, already shrunk to
the net's scale, with its three target maps (body, extent, printed) in ``<work>/cache/page-NNNNNN.npz``;
the trainer learns on random crops of every page stored so far, so the cache is a growing replay buffer
and a second run (or a resumed one) starts from what is already there. Validation uses whole pages of
VAL forms; the held-out TEST forms are for ``bench/layout.py`` only.

    python -m htr_ray.training.line_finder --work work/line_finder --time-limit 4200 --threads 1

Checkpoints (self-describing, :mod:`htr_ray.models.checkpoint`): ``<work>/last`` (with the optimizer
state: rerunning the same command resumes) and ``<work>/best`` (lowest validation loss).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import multiprocessing as mp
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from htr_ray.models import build_model, checkpoint
from htr_ray.models.line_finder import MAPS, page_input

log = logging.getLogger(__name__)

# what the producer composes, by share of pages
TRAIN_MIX = {"iam_plain": 0.24, "iam_ruled": 0.18, "iam_form_cheque": 0.1, "iam_form_prescription": 0.1,
             "iam_form_homework": 0.1, "generated": 0.2, "empty_form": 0.04, "blank": 0.04}


def kind_for(seed: int, mix: dict[str, float] = TRAIN_MIX) -> str:
    r = np.random.default_rng([seed, 99]).random()
    acc = 0.0
    for k, v in mix.items():
        acc += v / sum(mix.values())
        if r < acc:
            return k
    return list(mix)[-1]


def targets(lines: list[dict], shape: tuple[int, int], sx: float, sy: float) -> np.ndarray:
    """(3, H, W) uint8 maps at the net's resolution: body (the x-height core of each line), extent (its
    rotated box), printed (the extent of printed lines)."""
    h, w = shape
    out = np.zeros((3, h, w), np.uint8)
    s = np.float32([sx, sy])
    bodies = []
    for ln in lines:
        poly = np.round(np.float32(ln["polygon"]) * s).astype(np.int32)
        cv2.fillPoly(out[1], [poly], 1)
        if ln["kind"] == "printed":
            cv2.fillPoly(out[2], [poly], 1)
        core = np.float32(ln["core"]) * s  # corners: top-left, top-right, bottom-right, bottom-left
        top, bot = core[:2].mean(axis=0), core[2:].mean(axis=0)
        gap = float(np.linalg.norm(bot - top))
        if gap < 1.5:  # keep the band about 1.5 px tall at this scale: small writing still has a body
            d = (bot - top) / max(gap, 1e-3) * (1.5 - gap) / 2
            core = np.float32([core[0] - d, core[1] - d, core[2] + d, core[3] + d])
        bodies.append(np.round(core).astype(np.int32))
    for b in bodies:  # bodies after all extents, in their own map: they are what tells lines apart
        cv2.fillPoly(out[0], [b], 1)
    return out


def make_sample(seed: int, split: str, kind: str, scale: float, rng: np.random.Generator | None = None) -> dict:
    from htr_ray.data.synth.layout_pages import compose_page

    page = compose_page(seed, split, kind)
    s = scale * (float(rng.uniform(0.8, 1.25)) if rng is not None else 1.0)  # writing sizes beyond the composer's
    x = page_input(page.image, s)
    h, w = x.shape
    sx, sy = w / page.image.shape[1], h / page.image.shape[0]
    small = np.clip(255.0 - x * 255.0, 0, 255).astype(np.uint8)
    return {"image": small, "maps": targets(page.lines, (h, w), sx, sy), "kind": kind, "seed": seed}


def _producer(cache: str, start: int, scale: float, stop_at: float) -> None:
    torch.set_num_threads(1)
    os.nice(5)
    seed = start
    while time.time() < stop_at:
        path = os.path.join(cache, f"page-{seed:06d}.npz")
        if not os.path.exists(path):
            kind = kind_for(seed)
            try:
                s = make_sample(seed, "train", kind, scale, np.random.default_rng([seed, 5]))
            except Exception as e:  # noqa: BLE001  a page that cannot be composed is skipped, and said so
                log.warning("page %d (%s) failed: %s", seed, kind, e)
                seed += 1
                continue
            tmp = path + ".tmp.npz"
            np.savez_compressed(tmp, image=s["image"], maps=s["maps"], kind=s["kind"])
            os.replace(tmp, path)
        seed += 1


def _load(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as z:
            return z["image"], z["maps"]
    except Exception:  # noqa: BLE001  half-written or corrupt: skip
        return None


def _crop(img: np.ndarray, maps: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        fill = int(np.median(img))
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
        maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)))
        h, w = img.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return img[y:y + size, x:x + size], maps[:, y:y + size, x:x + size]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((255.0 - img.astype(np.float32)) / 255.0)


def loss_fn(logits: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """BCE on body and extent (+ soft dice on body, whose pixels are few), BCE on printed inside lines."""
    body, extent, printed = maps[:, 0], maps[:, 1], maps[:, 2]
    lb = F.binary_cross_entropy_with_logits(logits[:, 0], body, pos_weight=torch.tensor(2.0))
    pb = torch.sigmoid(logits[:, 0])
    dice = 1 - (2 * (pb * body).sum() + 1) / (pb.sum() + body.sum() + 1)
    le = F.binary_cross_entropy_with_logits(logits[:, 1], extent)
    inside = extent
    lp = (F.binary_cross_entropy_with_logits(logits[:, 2], printed, reduction="none") * inside).sum() / inside.sum().clamp(min=1)
    total = lb + dice + le + lp
    return total, {"body": float(lb.detach()), "dice": float(dice.detach()), "extent": float(le.detach()),
                   "printed": float(lp.detach())}


def val_set(n: int, scale: float) -> list[dict]:
    kinds = [k for k in TRAIN_MIX if k != "blank"]
    return [make_sample(1000 + i, "val", kinds[i % len(kinds)], scale) for i in range(n)]


def evaluate(model, val: list[dict]) -> dict:
    model.eval()
    tot, parts = 0.0, {}
    with torch.inference_mode():
        for s in val:
            x = to_tensor(s["image"])[None, None]
            m = torch.from_numpy(s["maps"].astype(np.float32))[None]
            loss, p = loss_fn(model(x), m)
            tot += float(loss)
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v
    model.train()
    n = max(1, len(val))
    return {"val_loss": tot / n, **{f"val_{k}": v / n for k, v in parts.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--work", default="work/line_finder", help="folder for the page cache and the checkpoints")
    ap.add_argument("--time-limit", type=float, default=3600, help="seconds of training (all runs of this work folder together)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (the producer uses one more process)")
    ap.add_argument("--producers", type=int, default=1, help="page-composing processes (0: use the cache as it is)")
    ap.add_argument("--channels", default="4,8,16,32,48,64")
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-pages", type=int, default=21)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--min-pages", type=int, default=12, help="pages in the cache before training starts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    cache = os.path.join(args.work, "cache")
    os.makedirs(cache, exist_ok=True)
    last_uri, best_uri = os.path.join(args.work, "last"), os.path.join(args.work, "best")

    channels = [int(c) for c in args.channels.split(",")]
    model = build_model("line_finder_unet", num_classes=len(MAPS), channels=channels, scale=args.scale)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, spent, best = 0, 0.0, math.inf
    state = checkpoint.load_train_state(last_uri) if checkpoint.is_checkpoint(last_uri) else None
    if state is not None:
        m, _ = checkpoint.load(last_uri)
        model.load_state_dict(m.state_dict())
        opt.load_state_dict(state["optimizer"])
        step, spent, best = state["step"], state["spent"], state["best"]
        log.info("resumed at step %d (%.0f s spent, best val %.4f)", step, spent, best)
    model.train()
    remaining = args.time_limit - spent
    if remaining <= 0:
        log.info("time limit already spent")
        return 0
    t_start = time.time()
    stop_at = t_start + remaining
    procs = []
    existing = sorted(glob.glob(os.path.join(cache, "page-*.npz")))
    next_seed = (int(os.path.basename(existing[-1])[5:11]) + 1) if existing else args.seed
    ctx = mp.get_context("fork")
    for k in range(args.producers):
        p = ctx.Process(target=_producer, args=(cache, next_seed + k * 1_000_000, args.scale, stop_at), daemon=True)
        p.start()
        procs.append(p)
    log.info("composing %d val pages", args.val_pages)
    val = val_set(args.val_pages, args.scale)
    pages: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def refresh():
        for path in sorted(glob.glob(os.path.join(cache, "page-*.npz"))):
            if path not in pages:
                s = _load(path)
                if s is not None:
                    pages[path] = s

    refresh()
    while len(pages) < args.min_pages and time.time() < stop_at:
        time.sleep(5)
        refresh()
    log.info("training on %d cached pages (more arrive as it runs)", len(pages))
    rng = np.random.default_rng([args.seed, step])
    keys = list(pages)
    running = None
    cmd = "python -m htr_ray.training.line_finder " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(uri: str, metrics: dict, with_state: bool):
        meta = {"charset": list(MAPS), "metrics": metrics, "step": step,
                "train_seconds": round(spent + time.time() - t_start), "pages_seen": len(pages),
                "data": {"train": "compose_page(seed, 'train', kind) for kind in " + json.dumps(TRAIN_MIX),
                         "val": f"{args.val_pages} pages compose_page(1000+i, 'val', kind)"},
                "command": cmd, "postprocess": "htr_ray.layout.finder"}
        st = {"optimizer": opt.state_dict(), "step": step, "spent": spent + time.time() - t_start, "best": best} if with_state else None
        checkpoint.save(uri, model, meta, st)

    while time.time() < stop_at:
        frac = min(1.0, (spent + time.time() - t_start) / args.time_limit)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        xs, ms = [], []
        for _ in range(args.batch_size):
            img, maps = pages[keys[int(rng.integers(len(keys)))]]
            ci, cm = _crop(img, maps, args.crop, rng)
            if rng.random() < 0.3:  # contrast / brightness of the scan
                ci = np.clip(ci.astype(np.float32) * rng.uniform(0.7, 1.1) + rng.uniform(-30, 20), 0, 255).astype(np.uint8)
            xs.append(to_tensor(ci))
            ms.append(torch.from_numpy(cm.astype(np.float32)))
        x = torch.stack(xs)[:, None]
        m = torch.stack(ms)
        loss, parts = loss_fn(model(x), m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        running = float(loss) if running is None else 0.98 * running + 0.02 * float(loss)
        if step % 50 == 0:
            log.info("step %d loss %.4f lr %.2e pages %d %s", step, running, lr, len(pages),
                     " ".join(f"{k}={v:.3f}" for k, v in parts.items()))
        if step % 100 == 0:
            refresh()
            keys = list(pages)
        if step % args.eval_every == 0 or time.time() >= stop_at:
            metrics = {**evaluate(model, val), "train_loss": running}
            log.info("eval step %d: %s", step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
            if metrics["val_loss"] < best:
                best = metrics["val_loss"]
                save(best_uri, metrics, False)
            save(last_uri, metrics, True)
    metrics = {**evaluate(model, val), "train_loss": running}
    if metrics["val_loss"] < best:
        best = metrics["val_loss"]
        save(best_uri, metrics, False)
    save(last_uri, metrics, True)
    for p in procs:
        p.join(timeout=60)
    log.info("done: step %d, best val loss %.4f", step, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
