"""The core training loop: one function, :func:`fit`, that runs in a single process (``--local``, CPU
or GPU) and, unchanged, inside every Ray Train worker (:mod:`htr_ray.training` passes a different
:class:`Context`).

What it does, per epoch:

- draws the epoch's samples from one or several data sources with mixing weights (shards by URI, or an
  IAM-style folder with ``labels.tsv``), decodes, augments (:mod:`htr_ray.augment`) and normalises them
  (:func:`htr_ray.io.images.normalize_line` / ``normalize_char``, the same functions inference uses) in a
  thread pool, in width-bucketed batches for line models so padding stays small;
- AdamW with linear warm-up then cosine decay (per step), gradient clipping, mixed precision on GPU;
- validates (greedy CTC decoding -> CER/WER, or accuracy for classifiers), all-reduced over workers;
- writes a self-describing checkpoint (:mod:`htr_ray.checkpoint`) with the optimizer state, keeps the
  best few by validation score, and stops early when the score has not improved for ``patience``
  epochs. Started again on the same output, it resumes from the latest checkpoint.

Images that cannot be decoded are counted (``bad_samples`` in the epoch metrics), never dropped
silently.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from htr_ray.data import augment
from htr_ray.models import checkpoint
from htr_ray import config
from htr_ray.io import images, shards, storage
from htr_ray.evaluation import metrics
from htr_ray.models.charset import Charset
from htr_ray.recognition.decode import greedy
from htr_ray.models import build_model, grow_output

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ config


@dataclass
class TrainConfig:
    """Train a recognizer (CTC line model or character classifier) from sample shards."""

    model: str = config.field("crnn_small", help="architecture from htr_ray.models (crnn_small, crnn_medium, crnn_large, char_cnn, char_cnn_hanzi)")
    model_params: str = config.field("", help="JSON object overriding architecture parameters, e.g. '{\"lstm_hidden\": 192}'")
    data: list[str] = config.field([], help="training data URIs: shard roots (<root>/<split>/part-*.parquet) or IAM-style folders with labels.tsv")
    weights: list[float] = config.field([], help="mixing weight per --data URI (default: proportional to size)")
    train_split: str = config.field("train", help="split of --data used for training")
    val_data: list[str] = config.field([], help="validation data URIs (default: the first --data URI)")
    val_split: str = config.field("val", help="split used for validation / early stopping")
    test_split: str = config.field("test", help="split of the validation URIs evaluated once at the end with the best checkpoint ('' = none)")
    epochs: int = config.field(30, help="maximum number of epochs")
    epoch_size: int = config.field(0, help="training samples per epoch over all workers (0: one pass over the data, or over the first source when weights are given)")
    batch_size: int = config.field(32, help="batch size per worker")
    lr: float = config.field(2e-3, help="peak learning rate (AdamW)")
    weight_decay: float = config.field(0.01, help="AdamW weight decay")
    warmup: float = config.field(0.05, help="fraction of the planned steps spent warming the learning rate up")
    clip: float = config.field(5.0, help="gradient norm clipping (0 = off)")
    patience: int = config.field(6, help="early stopping: epochs without validation improvement")
    augment: float = config.field(1.0, help="augmentation strength (0 = none)")
    label_smoothing: float = config.field(0.1, help="classifiers only: label smoothing")
    output: str = config.field("work/runs/train", help="--local only: checkpoint folder URI (local or s3://); rerunning resumes from it")
    keep: int = config.field(3, help="checkpoints kept (the best by validation score, plus the latest)")
    init: str = config.field("", help="checkpoint URI to fine-tune from (its charset grows with new characters)")
    threads: int = config.field(2, help="torch intra-op threads per worker (CPU)")
    loader_threads: int = config.field(2, help="threads decoding + augmenting batches per worker")
    device: str = config.field("auto", help="auto, cpu, cuda")
    amp: bool = config.field(True, help="mixed precision on GPU")
    seed: int = config.field(0, help="random seed")
    max_val: int = config.field(0, help="validate on at most this many samples (0 = all)")
    time_limit: float = config.field(0.0, help="minutes; stop (after a complete epoch) when the next epoch would pass it (0 = none)")
    # Ray Train shell (htr_ray.training); ignored with --local
    local: bool = config.field(False, help="run the loop in this process without Ray")
    workers: int = config.field(2, help="Ray Train workers (data-parallel)")
    use_gpu: bool = config.field(False, help="one GPU per worker")
    cpus_per_worker: float = config.field(1.0, help="CPUs reserved per worker")
    storage_path: str = config.field("work/ray_results", help="Ray Train storage path (local or s3://); with --name, rerunning resumes")
    name: str = config.field("htr-train", help="Ray Train run name")
    max_failures: int = config.field(2, help="worker failures tolerated (training restarts from the last checkpoint)")
    command: str = config.field("", help="(recorded in the checkpoint; filled in by jobs/train.py)")

    def params(self) -> dict:
        return json.loads(self.model_params) if self.model_params else {}


# -------------------------------------------------------------------------------------------- data


def _iam_rows(root: str, split: str) -> list[dict]:
    """Rows of an IAM-style folder (labels.tsv: line_id, image, transcription), split by form with the
    project's rule (crc32(form) % 100: < 5 test, < 10 val, else train)."""
    text = storage.read_text(storage.join(root, "labels.tsv"))
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    rows = []
    for rec in reader:
        if len(rec) < 3:
            continue
        line_id, rel, transcription = rec[0], rec[1], rec[2]
        form = line_id.rsplit("-", 1)[0]
        v = zlib.crc32(form.encode()) % 100
        s = "test" if v < 5 else "val" if v < 10 else "train"
        if s != split:
            continue
        rows.append({"id": line_id, "image_uri": storage.join(root, *rel.split("/")), "text": transcription})
    # read the images (threads: mostly I/O)
    with cf.ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda r: _read_or_none(r["image_uri"]), rows))
    out = []
    for r, b in zip(rows, blobs):
        out.append({"id": r["id"], "image": b, "text": r["text"]})
    log.info("read %d %s rows from %s (labels.tsv, header %s)", len(out), split, root, header[:3])
    return out


def _read_or_none(uri: str) -> bytes | None:
    try:
        return storage.read_bytes(uri)
    except storage.StorageError as exc:
        log.warning("%s", exc)
        return None


def load_rows(uri: str, split: str) -> list[dict]:
    """All rows (id, image bytes, text) of one split of a data URI, in memory."""
    if storage.exists(storage.join(uri, "labels.tsv")) and not shards.list_shards(uri, split):
        return _iam_rows(uri, split)
    rows = list(shards.iter_rows(uri, split, columns=["id", "image", "text"]))
    log.info("read %d %s rows from %s", len(rows), split, uri)
    return rows


def png_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from a PNG header without decoding; None for other formats."""
    if data and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def estimated_width(row: dict, height: int) -> int:
    size = png_size(row.get("image"))
    if not size:
        return 0
    w, h = size
    return int(w * height / max(h, 1))


def bucketed_batches(rows: Iterable[dict], batch_size: int, height: int, buffer: int = 2048,
                     rng: random.Random | None = None) -> Iterator[list[dict]]:
    """Group a stream of rows into batches of similar width: fill a buffer, sort it by the width the
    image will have at ``height``, cut into batches, shuffle the batches. Works on any iterator
    (an in-memory list or a Ray Data shard)."""
    rng = rng or random.Random(0)
    buf: list[dict] = []

    def flush():
        buf.sort(key=lambda r: estimated_width(r, height))
        batches = [buf[i:i + batch_size] for i in range(0, len(buf), batch_size)]
        rng.shuffle(batches)
        return batches

    for row in rows:
        buf.append(row)
        if len(buf) >= buffer:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def plain_batches(rows: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Batch:
    x: torch.Tensor
    widths: torch.Tensor | None
    targets: list[list[int]] | torch.Tensor
    texts: list[str]
    bad: int  # rows of the source batch that could not be used (undecodable image, unknown label)


class Preprocessor:
    """Row -> model input, for one model kind; the same normalisation as inference."""

    def __init__(self, kind: str, charset: Charset, size: int, train: bool, strength: float, seed: int):
        self.kind, self.charset, self.size, self.train, self.strength = kind, charset, size, train, strength
        self.seed = seed

    def __call__(self, rows: list[dict], batch_seed: int = 0) -> Batch:
        rng = np.random.default_rng((self.seed, batch_seed))
        xs, texts, targets, bad = [], [], [], 0
        for row in rows:
            try:
                if row.get("image") is None:
                    raise images.ImageError("empty", "no image")
                gray = images.decode_gray(row["image"])
                text = row["text"] if isinstance(row["text"], str) else str(row["text"])
                if self.kind == "line":
                    target = self.charset.encode(text, unknown="skip")
                    if self.train and self.strength > 0:
                        gray = augment.augment_gray(gray, rng, self.strength)
                    x = images.normalize_line(gray, self.size)
                else:
                    target = self.charset.index(text) if text in self.charset else -1
                    if self.train and self.strength > 0:
                        gray = augment.augment_char_gray(gray, rng, self.strength)
                    x = images.normalize_char(gray, self.size)
                if self.train and self.strength > 0:
                    x = augment.augment_normalized(x, rng, self.strength)
                if self.train and (target == -1 or (self.kind == "line" and not target)):
                    raise KeyError(f"label {text!r} not in the charset")
            except (images.ImageError, KeyError, ValueError, cv2_error()) as exc:
                bad += 1
                log.debug("skipping %s: %s", row.get("id"), exc)
                continue
            xs.append(x)
            texts.append(text)
            targets.append(target)
        if not xs:
            return Batch(torch.zeros(0), None, [], [], bad)
        if self.kind == "line":
            arr, widths = images.pad_batch(xs, width_multiple=8)
            return Batch(torch.from_numpy(arr), torch.from_numpy(widths), targets, texts, bad)
        return Batch(torch.from_numpy(np.stack(xs)[:, None]), None, torch.tensor(targets), texts, bad)


def cv2_error():
    import cv2

    return cv2.error


def prefetch(fn: Callable, items: Iterable, threads: int, depth: int = 4) -> Iterator:
    """``map(fn, items)`` computed ahead in a thread pool (OpenCV and numpy release the GIL)."""
    if threads <= 0:
        for i, it in enumerate(items):
            yield fn(it, i)
        return
    with cf.ThreadPoolExecutor(threads) as pool:
        pending = []
        for i, it in enumerate(items):
            pending.append(pool.submit(fn, it, i))
            if len(pending) >= depth:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


# ----------------------------------------------------------------------------------------- context


class Context:
    """What differs between one process and a Ray Train worker. The default runs locally."""

    rank = 0
    world_size = 1

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(want)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return t

    def train_rows(self, epoch: int) -> Iterable[dict]:
        raise NotImplementedError

    def val_rows(self) -> list[dict]:
        raise NotImplementedError

    def latest_checkpoint(self) -> str | None:
        raise NotImplementedError

    def report(self, metrics: dict, save_fn: Callable[[str], None]) -> None:
        raise NotImplementedError


class LocalContext(Context):
    """One process, data in memory, checkpoints under ``cfg.output`` (``epoch-NNNN`` folders)."""

    def __init__(self, cfg: TrainConfig, sources: list[list[dict]] | None = None, val: list[dict] | None = None):
        super().__init__(cfg)
        if sources is None:
            sources = [load_rows(u, cfg.train_split) for u in cfg.data]
        if val is None:
            val = [r for u in (cfg.val_data or cfg.data[:1]) for r in load_rows(u, cfg.val_split)]
        self.sources, self.val = sources, val
        self.sizes = [len(s) for s in sources]

    def epoch_plan(self) -> list[int]:
        """Samples drawn from each source in one epoch."""
        return mixing_plan(self.sizes, self.cfg.weights, self.cfg.epoch_size)

    def train_rows(self, epoch: int) -> list[dict]:
        rng = random.Random(self.cfg.seed * 1000 + epoch)
        out: list[dict] = []
        for src, n in zip(self.sources, self.epoch_plan()):
            idx: list[int] = []
            while len(idx) < n:
                perm = list(range(len(src)))
                rng.shuffle(perm)
                idx.extend(perm[: n - len(idx)])
            out.extend(src[i] for i in idx)
        rng.shuffle(out)
        return out

    def val_rows(self) -> list[dict]:
        return self.val

    def _epoch_dirs(self) -> list[str]:
        try:
            names = {storage.parse(u).path.replace(os.sep, "/").rsplit("/", 2)[-2]
                     for u in storage.list_uris(self.cfg.output, suffixes=(checkpoint.META_FILE,))}
        except storage.StorageError:
            return []
        return sorted(n for n in names if n.startswith("epoch-"))

    def latest_checkpoint(self) -> str | None:
        dirs = self._epoch_dirs()
        return storage.join(self.cfg.output, dirs[-1]) if dirs else None

    def report(self, metrics: dict, save_fn: Callable[[str], None]) -> None:
        uri = storage.join(self.cfg.output, f"epoch-{metrics['epoch']:04d}")
        save_fn(uri)
        self._prune()

    def _prune(self) -> None:
        scored = []
        for d in self._epoch_dirs():
            uri = storage.join(self.cfg.output, d)
            meta = checkpoint.read_meta(uri)
            scored.append((meta["metrics"]["score"], meta["epoch"], uri))
        if not scored:
            return
        latest = max(scored, key=lambda s: s[1])
        best = sorted(scored)[: max(1, self.cfg.keep)]
        keepers = {s[2] for s in best} | {latest[2]}
        for _, _, uri in scored:
            if uri not in keepers:
                for name in (checkpoint.META_FILE, checkpoint.WEIGHTS_FILE, checkpoint.STATE_FILE):
                    storage.delete(storage.join(uri, name))
                loc = storage.parse(uri)
                if loc.scheme == "file":
                    try:
                        os.rmdir(loc.path)
                    except OSError:
                        pass
        top = sorted(scored)[0]
        storage.write_text(storage.join(self.cfg.output, "best.json"),
                           json.dumps({"best": top[2], "score": top[0], "epoch": top[1]}) + "\n")

    def best_checkpoint(self) -> str | None:
        uri = storage.join(self.cfg.output, "best.json")
        if not storage.exists(uri):
            return None
        return json.loads(storage.read_text(uri))["best"]


def mixing_plan(sizes: Sequence[int], weights: Sequence[float], epoch_size: int) -> list[int]:
    """Samples per source for one epoch. Without weights: each source once (or proportionally to its
    size when ``epoch_size`` is given). With weights: ``epoch_size`` split by weight; by default the
    epoch is sized so that the first source is seen once."""
    sizes = list(sizes)
    if not weights:
        if not epoch_size:
            return sizes
        weights = sizes
    if len(weights) != len(sizes):
        raise ValueError(f"{len(weights)} weights for {len(sizes)} data sources")
    total_w = float(sum(weights))
    w = [x / total_w for x in weights]
    if not epoch_size:
        epoch_size = int(round(sizes[0] / w[0])) if w[0] > 0 else sum(sizes)
    return [int(round(epoch_size * x)) if s else 0 for x, s in zip(w, sizes)]


# ------------------------------------------------------------------------------------------ helpers


def lr_at(progress: float, peak: float, warmup: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the planned run: linear warm-up from peak/25 over the
    first ``warmup`` fraction, then cosine down to peak/100."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return peak * (0.04 + 0.96 * progress / warmup)
    p = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p)))


def _ctc_loss(model, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    core = getattr(model, "module", model)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, N, C)
    t = log_probs.shape[0]
    in_lens = core.output_lengths(batch.widths).clamp(max=t).to(logits.device)
    tgt_lens = torch.tensor([len(x) for x in batch.targets], dtype=torch.long)
    flat = torch.tensor([k for x in batch.targets for k in x], dtype=torch.long)
    return F.ctc_loss(log_probs, flat.to(logits.device), in_lens, tgt_lens.to(logits.device), blank=0,
                      reduction="mean", zero_infinity=True)


def decode_batch(model, logits: torch.Tensor, widths: torch.Tensor | None, charset: Charset) -> list[str]:
    core = getattr(model, "module", model)
    lp = logits.float().log_softmax(-1).cpu().numpy()
    lens = core.output_lengths(widths).clamp(max=lp.shape[1]).tolist()
    cs = charset.as_string()
    return [greedy(lp[i, : lens[i]], cs).text for i in range(lp.shape[0])]


@torch.no_grad()
def evaluate(model, rows: Sequence[dict], charset: Charset, kind: str, size: int, batch_size: int = 64,
             device: torch.device | str = "cpu", threads: int = 2, ctx: Context | None = None) -> dict:
    """Validation/test metrics over ``rows`` (this worker's part when ``ctx`` is distributed; the
    counts are all-reduced). Lines: cer, wer; classifiers: accuracy. ``bad`` counts unusable rows."""
    model.eval()
    device = torch.device(device)
    prep = Preprocessor(kind, charset, size, train=False, strength=0.0, seed=0)
    if ctx is not None and ctx.world_size > 1:
        rows = rows[ctx.rank::ctx.world_size]
    if kind == "line":
        ordered = sorted(rows, key=lambda r: estimated_width(r, size))
    else:
        ordered = list(rows)
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    c_err = c_tot = w_err = w_tot = n = correct = bad = 0
    loss_sum = 0.0
    for b in prefetch(lambda rs, i: prep(rs, i), batches, threads):
        bad += b.bad
        if not b.texts:
            continue
        logits = model(b.x.to(device))
        if kind == "line":
            hyps = decode_batch(model, logits, b.widths, charset)
            for ref, hyp in zip(b.texts, hyps):
                e, t = metrics.char_errors(ref, hyp)
                c_err, c_tot = c_err + e, c_tot + t
                e, t = metrics.word_errors(ref, hyp)
                w_err, w_tot = w_err + e, w_tot + t
            ok = [i for i, t in enumerate(b.targets) if t]
            if ok:
                sub = Batch(b.x[ok], b.widths[ok], [b.targets[i] for i in ok], [], 0)
                loss_sum += float(_ctc_loss(model, logits[ok], sub)) * len(ok)
        else:
            pred = logits.argmax(1).cpu()
            correct += int((pred == b.targets).sum())
            valid = b.targets >= 0
            if valid.any():
                loss_sum += float(F.cross_entropy(logits[valid.to(logits.device)].float(),
                                                  b.targets[valid].to(device), reduction="sum"))
        n += len(b.texts)
    counts = torch.tensor([c_err, c_tot, w_err, w_tot, n, correct, bad, loss_sum], dtype=torch.float64)
    if ctx is not None:
        counts = ctx.all_reduce(counts)
    c_err, c_tot, w_err, w_tot, n, correct, bad, loss_sum = counts.tolist()
    out = {"samples": int(n), "bad": int(bad), "loss": loss_sum / max(n, 1)}
    if kind == "line":
        out.update(cer=c_err / max(c_tot, 1), wer=w_err / max(w_tot, 1))
        out["score"] = out["cer"]
    else:
        out.update(accuracy=correct / max(n, 1))
        out["score"] = 1.0 - out["accuracy"]
    return out


def model_size(model) -> int:
    core = getattr(model, "module", model)
    return int(getattr(core, "input_height", getattr(core, "input_size", 32)))


def build_charset(kind: str, texts: Iterable[str]) -> Charset:
    return Charset.from_texts(texts, whole_labels=(kind == "char"))


def kind_of(model_name: str, params: dict | None = None) -> str:
    return build_model(model_name, num_classes=2, **(params or {})).kind


# --------------------------------------------------------------------------------------------- fit


def fit(cfg: TrainConfig, ctx: Context, charset: Charset | None = None, texts: Iterable[str] | None = None,
        planned_samples: int | None = None) -> dict:
    """Train until ``cfg.epochs`` or early stopping; resume from ``ctx.latest_checkpoint()``.

    ``charset``: the model's charset when starting fresh (else built from ``texts`` or from the
    in-memory training rows of a :class:`LocalContext`). ``planned_samples``: samples per epoch over
    all workers (for the learning-rate schedule). Returns a summary dict.
    """
    torch.manual_seed(cfg.seed + ctx.rank)
    try:  # the loader threads run OpenCV in parallel already; its own pool would fight torch's
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass
    device = ctx.device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.threads))
    start_epoch, step, best_score, bad_epochs, prev_seconds = 1, 0, float("inf"), 0, 0.0
    opt_state = None
    history: list[dict] = []
    resume = ctx.latest_checkpoint()
    fresh_init = False
    if resume:
        model, meta = checkpoint.load(resume)
        charset = Charset.from_json(meta["charset"])
        ts = checkpoint.load_train_state(resume) or {}
        start_epoch = int(meta.get("epoch", 0)) + 1
        step = int(ts.get("step", 0))
        best_score = float(ts.get("best_score", meta["metrics"]["score"]))
        bad_epochs = int(ts.get("bad_epochs", 0))
        prev_seconds = float(ts.get("train_seconds", 0.0))
        opt_state = ts.get("optimizer")
        history = list(ts.get("history", []))
        log.info("resuming from %s at epoch %d", resume, start_epoch)
    else:
        if texts is None and isinstance(ctx, LocalContext):
            texts = (r["text"] for src in ctx.sources for r in src)
        if cfg.init:
            model, meta = checkpoint.load(cfg.init)
            charset = Charset.from_json(meta["charset"])
            if texts is not None:
                grown, added = charset.extended(texts)
                if added:
                    log.info("charset grows by %d new characters: %r", len(added), "".join(added))
                    charset = grown
                    grow_output(model, len(charset) + (1 if model.kind == "line" else 0))
            fresh_init = True
        else:
            if charset is None:
                if texts is None:
                    raise ValueError("fit needs a charset or the training texts")
                kind = kind_of(cfg.model, cfg.params())
                charset = build_charset(kind, texts)
            kind = kind_of(cfg.model, cfg.params())
            n_classes = len(charset) + (1 if kind == "line" else 0)
            model = build_model(cfg.model, num_classes=n_classes, **cfg.params())
    kind = model.kind
    size = model_size(model)
    model.to(device)
    base_model = model
    model = ctx.prepare_model(model)
    decay, no_decay = [], []
    for name, p in base_model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    if opt_state is not None:
        try:
            opt.load_state_dict(opt_state)
        except (ValueError, KeyError) as exc:
            log.warning("optimizer state not restored (%s); continuing with a fresh one", exc)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if planned_samples is None and isinstance(ctx, LocalContext):
        planned_samples = sum(ctx.epoch_plan())
    per_worker = math.ceil((planned_samples or 1) / ctx.world_size)
    steps_per_epoch = max(1, math.ceil(per_worker / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    val_rows = ctx.val_rows()
    if cfg.max_val and len(val_rows) > cfg.max_val:
        val_rows = random.Random(0).sample(val_rows, cfg.max_val)
    train_prep = Preprocessor(kind, charset, size, train=True, strength=cfg.augment, seed=cfg.seed * 7919 + ctx.rank)
    t_start = time.time()
    epoch_times: list[float] = []
    limit_s = cfg.time_limit * 60.0

    def progress() -> float:
        # with a time limit the schedule follows the clock, so the learning rate has decayed when
        # the budget is spent however fast the machine turns out to be
        p = step / total_steps
        if limit_s:
            p = max(p, (prev_seconds + time.time() - t_start) / limit_s)
        return p

    summary = {"stopped": "epochs"}
    for epoch in range(start_epoch, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            summary["stopped"] = "early"
            break
        if limit_s and epoch_times and prev_seconds + time.time() - t_start + 0.8 * max(epoch_times[-2:]) > limit_s:
            summary["stopped"] = "time_limit"
            break
        t0 = time.time()
        model.train()
        rows = ctx.train_rows(epoch)
        brng = random.Random(cfg.seed * 100003 + epoch * 31 + ctx.rank)
        batches = (bucketed_batches(rows, cfg.batch_size, size, rng=brng) if kind == "line"
                   else plain_batches(rows, cfg.batch_size))
        loss_sum, seen, bad, nsteps = 0.0, 0, 0, 0
        it = prefetch(lambda rs, i: train_prep(rs, epoch * 1_000_003 + i), batches, cfg.loader_threads)
        while True:
            b = next(it, None)
            # every worker must run the same number of steps (DDP all-reduces gradients each step)
            more = ctx.all_reduce(torch.tensor([0.0 if b is None else 1.0]), op="min")
            if more.item() < 1:
                break
            bad += b.bad
            if not b.texts:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(progress(), cfg.lr, cfg.warmup)
            x = b.x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(x)
            if kind == "line":
                loss = _ctc_loss(model, logits, b)
            else:
                loss = F.cross_entropy(logits.float(), b.targets.to(device), label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(base_model.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            nsteps += 1
            if math.isfinite(loss.item()):
                loss_sum += loss.item() * len(b.texts)
            seen += len(b.texts)
        train_time = time.time() - t0
        tot = ctx.all_reduce(torch.tensor([loss_sum, seen, bad], dtype=torch.float64))
        loss_sum, seen_all, bad = tot.tolist()
        val = evaluate(model, val_rows, charset, kind, size, batch_size=max(cfg.batch_size, 32), device=device,
                       threads=cfg.loader_threads, ctx=ctx)
        epoch_time = time.time() - t0
        epoch_times.append(epoch_time)
        improved = val["score"] < best_score - 1e-6
        if improved:
            best_score, bad_epochs = val["score"], 0
        else:
            bad_epochs += 1
        m = {"epoch": epoch, "loss": loss_sum / max(seen_all, 1), "samples": int(seen_all),
             "samples_per_s": seen_all / max(train_time, 1e-9), "epoch_s": epoch_time, "lr": opt.param_groups[0]["lr"],
             "bad_samples": int(bad + val["bad"]), "val_loss": val["loss"], "score": val["score"],
             "best_score": best_score, "world_size": ctx.world_size}
        m.update({f"val_{k}": v for k, v in val.items() if k in ("cer", "wer", "accuracy")})
        history.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()})
        if kind == "line":
            log.info("epoch %d/%d  loss %.4f  val CER %.4f  WER %.4f  %.1f samples/s  %.0fs  lr %.2e",
                     epoch, cfg.epochs, m["loss"], m["val_cer"], m["val_wer"], m["samples_per_s"], epoch_time, m["lr"])
        else:
            log.info("epoch %d/%d  loss %.4f  val accuracy %.4f  %.1f samples/s  %.0fs  lr %.2e",
                     epoch, cfg.epochs, m["loss"], m["val_accuracy"], m["samples_per_s"], epoch_time, m["lr"])

        def save_fn(uri: str, _m=m, _epoch=epoch) -> None:
            checkpoint.save(uri, base_model, {
                "charset": charset.to_json(), "epoch": _epoch, "metrics": _m,
                "data": {"train": list(cfg.data), "weights": list(cfg.weights), "train_split": cfg.train_split,
                         "val": list(cfg.val_data or cfg.data[:1]), "val_split": cfg.val_split},
                "command": cfg.command, "config": dataclasses.asdict(cfg),
            }, train_state={"step": step, "best_score": best_score, "bad_epochs": bad_epochs,
                            "train_seconds": prev_seconds + time.time() - t_start,
                            "optimizer": opt.state_dict(), "history": history})

        ctx.report(m, save_fn)
        summary.update(last=m)
    summary.update(best_score=best_score, history=history, charset=charset.to_json(), kind=kind)
    return summary


# ---------------------------------------------------------------------------------------- local run


def evaluate_checkpoint(uri: str, rows: Sequence[dict], threads: int = 2, batch_size: int = 64) -> dict:
    model, meta = checkpoint.load(uri)
    return evaluate(model, rows, Charset.from_json(meta["charset"]), model.kind, model_size(model),
                    batch_size=batch_size, threads=threads)


def record_test(best_uri: str, cfg: TrainConfig) -> dict | None:
    """Evaluate the best checkpoint once on the held-out test split and store the figures in its
    model.json (``test_metrics``)."""
    if not cfg.test_split:
        return None
    rows = [r for u in (cfg.val_data or cfg.data[:1]) for r in load_rows(u, cfg.test_split)]
    if not rows:
        return None
    res = evaluate_checkpoint(best_uri, rows, threads=cfg.loader_threads)
    meta = checkpoint.read_meta(best_uri)
    meta["test_metrics"] = {**res, "split": cfg.test_split}
    storage.write_text(storage.join(best_uri, checkpoint.META_FILE), json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return res


def run_local(cfg: TrainConfig) -> dict:
    """The whole ``--local`` run: train (or resume) in this process, then test the best checkpoint."""
    ctx = LocalContext(cfg)
    summary = fit(cfg, ctx)
    best = ctx.best_checkpoint()
    summary["best_checkpoint"] = best
    if best:
        summary["test"] = record_test(best, cfg)
    return summary
