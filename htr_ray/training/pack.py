"""Training packs: the line recogniser's training data in compact form, for a machine that has Python
and torch but not the data, OpenCV or the network (the GPU recipe, ``scripts/train-gpu``).

A pack is a folder of two files:

    pack.json    format, height, gray levels, how it was built, and one entry per line in storage
                 order: id, text, source (``iam``, ``synth`` or ``pages``), split (``train`` or ``val``), width
    pixels.npz   ``pixels``: every line's image concatenated, flat uint8, each (height, width) in C order;
                 already :func:`htr_ray.io.images.normalize_line`-d at the model's height, ink = 255

It holds IAM-OnDB lines of the *train* forms, the lines of the *val* forms apart for validation,
generated lines (:mod:`htr_ray.data.synth`, train split only: train fonts, pen strokes of train forms)
and, with ``--page-crops``, lines as the page reader cuts them from composed train-form pages
(:mod:`htr_ray.training.page_crops`: ruling, form boxes and neighbours' strokes at their edges).
The split is the project's one rule (:func:`htr_ray.data.labels.split_by_group` on the form, through
:func:`htr_ray.data.labels.read_rows`, as every training job reads ``labels.tsv``); lines of the test
forms are never read. Gray values are quantised to ``--levels`` levels (16 by default: steps of 1/15 of
full ink, about the augmentation's noise) and the faintest ``--floor`` levels (2: ink below 1/6) become
paper, so that the deflated pack stays under ``--max-mib`` (40): the generated lines' paper texture and
scan noise would otherwise take most of it.

Build (here, where the data, OpenCV and the fonts are)::

    python -m htr_ray.training.pack --data ../shared/data/iam_ondb_lines --out work/pack [--height 64] [--synth 2000]
        [--page-crops work/page_crops/paper work/page_crops/forms --pages-n 3000]

Train from it: ``python jobs/train.py --local --pack work/pack --model crnn_medium_v2 ...`` (the training
loop's ``--pack`` source, :func:`pack_context`), then turn the run's best checkpoint into a model folder::

    python -m htr_ray.training.pack export <run folder> <model folder>

Loading a pack (:func:`load`) and exporting need numpy and torch only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "htr-ray-line-pack/1"
META_FILE = "pack.json"
PIXELS_FILE = "pixels.npz"
SOURCES = ("iam", "synth", "pages")
DEFAULT_DOMAINS = ("cheque", "prescription", "homework", "generic")
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "models", "en_line_crnn_small")
MAX_MODEL_MIB = 16


class PackError(ValueError):
    """A pack that cannot be built or read; the message says which file and why."""


# -------------------------------------------------------------------------------------------- build


def quantize(x: np.ndarray, levels: int, floor: int = 0) -> np.ndarray:
    """float ink in [0, 1] -> uint8 (ink = 255) with ``levels`` evenly spaced gray values; the faintest
    ``floor`` levels above paper become paper (faint paper texture and scan noise, which cost most of
    the deflated size of generated lines)."""
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be 2..256, not {levels}")
    q = np.rint(np.clip(x, 0.0, 1.0) * (levels - 1))
    if floor > 0:
        q[q <= floor] = 0
    return np.rint(q * (255.0 / (levels - 1))).astype(np.uint8)


def _read_lines(rows, source: str, split: str, height: int, levels: int, floor: int) -> tuple[list[dict], list[np.ndarray], int]:
    """Label rows -> pack entries and pixels at ``height``; an unreadable line is left out and counted."""
    from htr_ray.io import images, storage

    entries, arrays, bad = [], [], 0
    for r in rows:
        try:
            gray = images.decode_gray(storage.read_bytes(r.image_uri()))
            px = quantize(images.normalize_line(gray, height), levels, floor)
        except (storage.StorageError, images.ImageError, ValueError) as exc:
            log.warning("%s: %s (left out of the pack)", r.image_uri(), exc)
            bad += 1
            continue
        entries.append({"id": r.line_id, "text": r.text, "source": source, "split": split, "width": int(px.shape[1])})
        arrays.append(px)
    return entries, arrays, bad


def _iam_lines(root: str, split: str, height: int, levels: int, floor: int, limit: int) -> tuple[list[dict], list[np.ndarray], int]:
    from htr_ray.data import labels

    rows = labels.read_rows(root, split)
    return _read_lines(rows[:limit] if limit else rows, "iam", split, height, levels, floor)


def _synth_lines(n: int, seed: int, domains, strokes_fraction: float, height: int, levels: int, floor: int) -> tuple[list[dict], list[np.ndarray]]:
    """``n`` generated lines of the *train* split of a run (its split rule, :func:`samples.split_of`):
    train fonts only (test fonts are unseen), pen strokes of train forms only."""
    from htr_ray.data.synth.samples import SampleMaker
    from htr_ray.io import images

    maker = SampleMaker("lines", seed, list(domains), strokes_fraction=strokes_fraction)
    entries, arrays = [], []
    i = 0
    t0 = time.time()
    while len(entries) < n:
        if maker.split_of(i) == "train":
            s = maker.generator("train").sample_full(i)
            px = quantize(images.normalize_line(s.image, height), levels, floor)
            entries.append({"id": f"synth-lines-{seed}-{i:09d}", "text": s.text, "source": "synth", "split": "train",
                            "width": int(px.shape[1]), "domain": s.domain})
            arrays.append(px)
            if len(entries) % 500 == 0:
                log.info("generated %d/%d lines (%.0f s)", len(entries), n, time.time() - t0)
        i += 1
    return entries, arrays


def _page_crop_lines(folders, n: int, height: int, levels: int, floor: int) -> tuple[list[dict], list[np.ndarray], int]:
    """Up to ``n`` lines (0: all), spread evenly over the rows of the ``page_crops`` folders (all of them
    cut from pages of train forms, so every row trains)."""
    from htr_ray.data import labels

    rows = [r for f in folders for r in labels.read_rows(f)]
    if n and len(rows) > n:
        rows = [rows[int(i * len(rows) / n)] for i in range(n)]
    return _read_lines(rows, "pages", "train", height, levels, floor)


def build(data: str, out: str, height: int = 64, synth: int = 2000, levels: int = 16, seed: int = 7,
          domains=DEFAULT_DOMAINS, strokes_fraction: float = 0.3, limit: int = 0, max_mib: float = 40.0,
          command: str = "", floor: int = 2, page_crops=(), pages_n: int = 0) -> dict:
    """Write a pack of ``data``'s train- and val-form lines plus ``synth`` generated lines to ``out``.
    ``page_crops``: folders written by :mod:`htr_ray.training.page_crops` (up to ``pages_n`` of their
    lines, 0: all). ``limit``: at most this many lines per IAM split (small packs for tests). Raises :class:`PackError`
    when the pack comes out larger than ``max_mib``. Returns the meta (without the per-line list)."""
    if height < 16 or height % 8:
        raise PackError(f"--height {height}: line models take a multiple of 8, at least 16")
    t0 = time.time()
    entries, arrays, bad = [], [], 0
    for split in ("train", "val"):
        e, a, b = _iam_lines(data, split, height, levels, floor, limit)
        if not e:
            raise PackError(f"{data}: no readable {split}-form lines")
        entries += e
        arrays += a
        bad += b
        log.info("IAM %s: %d lines (%d unreadable) at %d px (%.0f s)", split, len(e), b, height, time.time() - t0)
    if synth > 0:
        e, a = _synth_lines(synth, seed, domains, strokes_fraction, height, levels, floor)
        entries += e
        arrays += a
    if page_crops:
        e, a, b = _page_crop_lines(page_crops, pages_n, height, levels, floor)
        if not e:
            raise PackError(f"{', '.join(page_crops)}: no readable page-crop lines")
        entries += e
        arrays += a
        bad += b
        log.info("page crops: %d lines (%.0f s)", len(e), time.time() - t0)
    os.makedirs(out, exist_ok=True)
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8)
    # write to temporary names, then rename: a folder with pack.json is complete
    tmp_px = os.path.join(out, PIXELS_FILE + ".tmp.npz")
    np.savez_compressed(tmp_px, pixels=flat)
    counts = {f"{src}_{split}": sum(1 for e in entries if e["source"] == src and e["split"] == split)
              for src in SOURCES for split in ("train", "val")}
    meta = {
        "format": FORMAT, "height": height, "levels": levels, "floor": floor, "ink": 255, "lines": len(entries), "counts": counts,
        "unreadable": bad, "iam": os.path.abspath(data) if "://" not in data else data,
        "iam_split": "htr_ray.data.labels.split_by_group(form, val_percent=5): train and val forms; test forms not read",
        "synth": {"n": synth, "seed": seed, "domains": list(domains), "strokes_fraction": strokes_fraction,
                  "split": "train (train fonts, strokes of train forms)"},
        "pages": {"folders": [os.path.abspath(f) if "://" not in f else f for f in page_crops], "n": pages_n,
                  "split": "train (crops of composed pages of train forms, htr_ray.training.page_crops)"},
        "limit": limit, "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "entries": entries,
    }
    tmp_meta = os.path.join(out, META_FILE + ".tmp")
    with open(tmp_meta, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
    size = os.path.getsize(tmp_px) + os.path.getsize(tmp_meta)
    meta["bytes"] = size
    log.info("pack %s: %d lines, %.1f MiB, %.0f s", out, len(entries), size / 2**20, time.time() - t0)
    if size > max_mib * 2**20:
        os.remove(tmp_px)
        os.remove(tmp_meta)
        raise PackError(f"{out}: the pack would be {size / 2**20:.1f} MiB, over --max-mib {max_mib:g} (nothing "
                        f"written); use fewer generated lines (--synth), fewer gray levels (--levels), a higher "
                        f"--floor or a lower --height")
    os.replace(tmp_px, os.path.join(out, PIXELS_FILE))
    os.replace(tmp_meta, os.path.join(out, META_FILE))
    return {k: v for k, v in meta.items() if k != "entries"}


def pack_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, n)) for n in (META_FILE, PIXELS_FILE)
               if os.path.exists(os.path.join(folder, n)))


# --------------------------------------------------------------------------------------------- load


@dataclass
class Pack:
    meta: dict
    pixels: np.ndarray  # flat uint8

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    def rows(self, source: str | None = None, split: str | None = None) -> list[dict]:
        """Training rows (``id``, ``text``, ``pixels``: a (height, width) uint8 view, ``source``)."""
        h = self.height
        out, off = [], 0
        for e in self.meta["entries"]:
            n = h * int(e["width"])
            if (source is None or e["source"] == source) and (split is None or e["split"] == split):
                out.append({"id": e["id"], "text": e["text"], "source": e["source"],
                            "pixels": self.pixels[off:off + n].reshape(h, int(e["width"]))})
            off += n
        return out


def load(folder: str) -> Pack:
    """Read a pack; a missing, partial or inconsistent one raises :class:`PackError` naming the file."""
    meta_path, px_path = os.path.join(folder, META_FILE), os.path.join(folder, PIXELS_FILE)
    if not os.path.isfile(meta_path):
        raise PackError(f"{meta_path}: no training pack here; build one with "
                        f"`python -m htr_ray.training.pack --data ../shared/data/iam_ondb_lines --out {folder}`")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except ValueError as exc:
        raise PackError(f"{meta_path}: not JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise PackError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        with np.load(px_path, allow_pickle=False) as z:
            pixels = z["pixels"]
    except (OSError, KeyError, ValueError) as exc:
        raise PackError(f"{px_path}: cannot be read ({exc})") from exc
    want = sum(int(meta["height"]) * int(e["width"]) for e in meta["entries"])
    if pixels.dtype != np.uint8 or pixels.size != want:
        raise PackError(f"{px_path}: {pixels.size} {pixels.dtype} pixels, {meta_path} describes {want} uint8")
    return Pack(meta, pixels)


def pack_context(cfg):
    """The training loop's :class:`~htr_ray.training.contexts.LocalContext` over a pack (``--pack``):
    sources ``iam``, ``synth`` and ``pages`` that it holds (train lines, mixed by ``--weights`` in that
    order), validation on
    the val-form lines. The model's input height must be the pack's."""
    from htr_ray.models import build_model
    from htr_ray.training.contexts import LocalContext

    pack = load(cfg.pack)
    if not cfg.init:
        model_h = int(getattr(build_model(cfg.model, num_classes=2, **cfg.params()), "input_height", 0))
        if model_h != pack.height:
            raise PackError(f"{os.path.join(cfg.pack, META_FILE)}: lines are {pack.height} px high, {cfg.model} "
                            f"takes {model_h}; rebuild the pack with --height {model_h}")
    by_source = {src: pack.rows(src, "train") for src in SOURCES}
    names = [src for src in SOURCES if by_source[src]]
    sources = [by_source[src] for src in names]
    if cfg.weights and len(cfg.weights) != len(sources):
        raise PackError(f"{len(cfg.weights)} --weights for {len(sources)} pack sources ({', '.join(names)})")
    val = pack.rows("iam", "val")
    ctx = LocalContext(cfg, sources=sources, val=val)
    ctx.pack_info = {"pack_counts": pack.meta.get("counts"), "pack_height": pack.height, "pack_levels": pack.meta.get("levels"),
                     "pack_iam": pack.meta.get("iam"), "pack_synth": pack.meta.get("synth"),
                     "pack_pages": pack.meta.get("pages"),
                     "pack_command": pack.meta.get("command")}
    import torch

    log.info("pack %s: %s train lines per source, %d val lines, %d px; torch %s, %s", cfg.pack, [len(s) for s in sources],
             len(val), pack.height, torch.__version__,
             f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no cuda")
    return ctx


# ------------------------------------------------------------------------------------------- export


def export(run: str, model_dir: str, lm_from: str = SHIPPED_MODEL, max_mib: float = MAX_MODEL_MIB) -> dict:
    """The best checkpoint of a ``--local`` run folder -> ``model_dir`` (model.json + weights.pt, the
    format :class:`htr_ray.recognition.spec.RecognizerSpec` loads), with the character LM of ``lm_from``
    (``lm.npz`` and its ``decoding`` block) beside it when the LM's alphabet covers the model's charset.
    Returns the model's meta."""
    from htr_ray.models import checkpoint

    best_file = os.path.join(run, "best.json")
    if not os.path.isfile(best_file):
        raise PackError(f"{best_file}: no best checkpoint in the run folder (did training finish an epoch?)")
    with open(best_file, encoding="utf-8") as f:
        best = json.load(f)["best"]
    checkpoint.load(best)  # raises with the file's name when it is not loadable
    os.makedirs(model_dir, exist_ok=True)
    checkpoint.copy(best, model_dir)
    meta_path = os.path.join(model_dir, checkpoint.META_FILE)
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    size = sum(os.path.getsize(os.path.join(model_dir, n)) for n in (checkpoint.META_FILE, checkpoint.WEIGHTS_FILE))
    if size > max_mib * 2**20:
        raise PackError(f"{model_dir}: the checkpoint is {size / 2**20:.1f} MiB, over {max_mib:g} MiB")
    lm_file = os.path.join(lm_from, "lm.npz")
    meta.pop("decoding", None)
    if os.path.isfile(lm_file):
        from htr_ray.recognition.lm import load_lm

        vocab = set(load_lm(lm_file).vocab_chars)
        missing = sorted(set(meta["charset"]) - vocab)
        if missing:
            log.info("LM %s not copied: its alphabet lacks %r", lm_file, "".join(missing))
        else:
            shutil.copyfile(lm_file, os.path.join(model_dir, "lm.npz"))
            with open(os.path.join(lm_from, checkpoint.META_FILE), encoding="utf-8") as f:
                shipped = json.load(f).get("decoding") or {}
            meta["decoding"] = {
                "decoder": "greedy", "lm": "lm.npz",
                **({"beam_options": shipped["beam_options"]} if "beam_options" in shipped else {}),
                **({"lm_build": shipped["lm_build"]} if "lm_build" in shipped else {}),
                "tuned": f"not tuned for this model: the LM and beam options of {os.path.basename(lm_from)}",
            }
    meta["exported_from"] = best
    with open(meta_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return meta


# ---------------------------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if argv[:1] == ["export"]:
        ap = argparse.ArgumentParser(prog="python -m htr_ray.training.pack export",
                                     description="best checkpoint of a training run -> a model folder (+ the shipped LM)")
        ap.add_argument("run", help="the run's --output folder (holds best.json)")
        ap.add_argument("model", help="model folder to write")
        ap.add_argument("--lm-from", default=SHIPPED_MODEL, help="model folder whose lm.npz and decoding block to copy")
        a = ap.parse_args(argv[1:])
        try:
            meta = export(a.run, a.model, a.lm_from)
        except (PackError, ValueError, OSError) as exc:
            print(f"export: {exc}", file=sys.stderr)
            return 1
        m = meta.get("metrics", {})
        print(json.dumps({"model": a.model, "architecture": meta["architecture"], "epoch": meta.get("epoch"),
                          "val_cer": m.get("val_cer"), "val_wer": m.get("val_wer"),
                          "lm": (meta.get("decoding") or {}).get("lm")}))
        return 0
    ap = argparse.ArgumentParser(prog="python -m htr_ray.training.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="IAM-style folder with labels.tsv (IAM-OnDB lines)")
    ap.add_argument("--out", required=True, help="pack folder to write (e.g. work/pack, git-ignored)")
    ap.add_argument("--height", type=int, default=64, help="model input height (crnn_medium_v2: 64, crnn_small_v2: 48)")
    ap.add_argument("--synth", type=int, default=2000, help="generated lines (train split of the run)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed")
    ap.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS), help="text domains of the generated lines")
    ap.add_argument("--strokes-fraction", type=float, default=0.3, help="share of generic lines re-rendered from train-form pen strokes")
    ap.add_argument("--levels", type=int, default=16, help="gray levels kept (16: 4 bits)")
    ap.add_argument("--floor", type=int, default=2, help="the faintest levels above paper that become paper (2 of 16: ink below 1/6)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many lines per IAM split (tests)")
    ap.add_argument("--max-mib", type=float, default=40.0, help="fail when the pack is larger")
    ap.add_argument("--page-crops", nargs="*", default=[], help="page_crops folders (python -m htr_ray.training.page_crops)")
    ap.add_argument("--pages-n", type=int, default=0, help="at most this many page-crop lines (0: all)")
    a = ap.parse_args(argv)
    command = "python -m htr_ray.training.pack " + " ".join(shlex.quote(x) for x in argv)
    try:
        meta = build(a.data, a.out, a.height, a.synth, a.levels, a.seed, a.domains, a.strokes_fraction, a.limit,
                     a.max_mib, command, a.floor, a.page_crops, a.pages_n)
    except PackError as exc:
        print(f"pack: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: meta[k] for k in ("lines", "counts", "unreadable", "height", "levels", "bytes")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
