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

import dataclasses
import json
import logging
import math
import random
import time
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from htr_ray.evaluation import metrics
from htr_ray.io import storage
from htr_ray.models import build_model, checkpoint, grow_output
from htr_ray.models.charset import Charset
from htr_ray.recognition.decode import greedy
from htr_ray.training.config import TrainConfig
from htr_ray.training.contexts import Context, LocalContext
from htr_ray.training.data import (  # noqa: F401  (re-exported: callers import them from here)
    Batch, Preprocessor, ProcessLoader, bucketed_batches, estimated_width, load_rows, mixing_plan, plain_batches, png_size, prefetch,
)

log = logging.getLogger(__name__)


def __getattr__(name: str):
    # ``shards`` (pyarrow) stays re-exported for htr_ray.distributed.train, imported on first use so
    # that training from a pack needs torch and numpy only
    if name == "shards":
        from htr_ray.io import shards

        return shards
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def autocast_dtype(model, bf16_supported: bool) -> torch.dtype:
    """Mixed-precision dtype for training ``model`` on CUDA. Under autocast cuDNN runs an LSTM in
    float16 whatever the autocast dtype (aten's AutocastRNN.cpp casts to kHalf), so a model with a
    recurrent layer trains in float16, with the gradient scaler; in bfloat16 there would be no scaler
    and the LSTM's small CTC gradients would underflow. Other models take bfloat16 where supported."""
    has_rnn = any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    return torch.bfloat16 if bf16_supported and not has_rnn else torch.float16


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
                    if hasattr(model, "grow_shortcut"):
                        model.grow_shortcut(len(charset) + 1)
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
    shortcut = kind == "line" and cfg.shortcut_weight > 0 and getattr(model, "shortcut", None) is not None
    model.to(device)
    memory_format = torch.channels_last if cfg.channels_last and device.type == "cpu" else torch.contiguous_format
    model.to(memory_format=memory_format)
    base_model = model
    model = ctx.prepare_model(model)
    if cfg.compile:  # lines vary in width: one graph with a symbolic width, not one per width
        model = torch.compile(model, dynamic=True)
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
    amp_dtype = autocast_dtype(base_model, use_amp and torch.cuda.is_bf16_supported())
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if planned_samples is None and isinstance(ctx, LocalContext):
        planned_samples = sum(ctx.epoch_plan())
    per_worker = math.ceil((planned_samples or 1) / ctx.world_size)
    steps_per_epoch = max(1, math.ceil(per_worker / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    val_rows = ctx.val_rows()
    if cfg.max_val and len(val_rows) > cfg.max_val:
        val_rows = random.Random(0).sample(val_rows, cfg.max_val)
    train_prep = Preprocessor(kind, charset, size, train=True, strength=cfg.augment, seed=cfg.seed * 7919 + ctx.rank,
                              distort=cfg.distort)
    # pack rows come at model height, unaugmented: the whole batch is augmented on the device
    device_augment = bool(cfg.pack) and kind == "line" and cfg.augment > 0
    if device_augment:
        from htr_ray.data.augment_torch import augment_batch

        aug_gen = torch.Generator(device=device)
        aug_gen.manual_seed(cfg.seed * 7919 + ctx.rank + 1)
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
    processes = cfg.loader_processes
    if processes < 0:
        processes = 1 if isinstance(ctx, LocalContext) else 0
    loader = ProcessLoader(processes) if processes > 0 else None
    try:
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
            seed_of = (lambda i, _e=epoch: _e * 1_000_003 + i)
            if loader is not None:
                it = loader.map(train_prep, batches, seed_of)
            else:
                it = prefetch(lambda rs, i: train_prep(rs, seed_of(i)), batches, cfg.loader_threads)
            while True:
                b = next(it, None)
                if limit_s and nsteps and prev_seconds + time.time() - t_start > limit_s:
                    b = None  # the clock ran out inside the epoch: stop here, then validate and save
                # every worker must run the same number of steps (DDP all-reduces gradients each step)
                more = ctx.all_reduce(torch.tensor([0.0 if b is None else 1.0]), op="min")
                if more.item() < 1:
                    break
                bad += b.bad
                if not b.texts:
                    continue
                for g in opt.param_groups:
                    g["lr"] = lr_at(progress(), cfg.lr, cfg.warmup)
                x = b.x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                if device_augment:
                    x = augment_batch(x, b.widths, aug_gen, strength=cfg.augment,
                                      distort=cfg.distort).contiguous(memory_format=memory_format)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    out = model(x, aux=True) if shortcut else model(x)
                logits, aux_logits = out if shortcut else (out, None)
                if kind == "line":
                    loss = _ctc_loss(model, logits, b)
                    if shortcut:  # the CTC shortcut head on the CNN sequence (models.crnn.CRNN2)
                        loss = loss + cfg.shortcut_weight * _ctc_loss(model, aux_logits, b)
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
                    "data": ({"pack": cfg.pack, "weights": list(cfg.weights), **getattr(ctx, "pack_info", {})} if cfg.pack else
                             {"train": list(cfg.data), "weights": list(cfg.weights), "train_split": cfg.train_split,
                              "val": list(cfg.val_data or cfg.data[:1]), "val_split": cfg.val_split}),
                    "command": cfg.command, "config": dataclasses.asdict(cfg),
                }, train_state={"step": step, "best_score": best_score, "bad_epochs": bad_epochs,
                                "train_seconds": prev_seconds + time.time() - t_start,
                                "optimizer": opt.state_dict(), "history": history})

            ctx.report(m, save_fn)
            summary.update(last=m)
    finally:
        if loader is not None:
            loader.close()
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
    if not cfg.test_split or cfg.pack:  # a pack holds no test lines (htr_ray.training.pack)
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
    if cfg.pack:
        from htr_ray.training.pack import pack_context

        ctx = pack_context(cfg)
    else:
        ctx = LocalContext(cfg)
    summary = fit(cfg, ctx)
    best = ctx.best_checkpoint()
    summary["best_checkpoint"] = best
    if best:
        summary["test"] = record_test(best, cfg)
    return summary
