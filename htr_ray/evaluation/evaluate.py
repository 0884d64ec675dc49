"""Evaluate a checkpoint on sample shards: metrics, calibration, confusions and report files.

Line models: CER/WER overall, per domain and per source, the most frequent character confusions, CER
per confidence decile (with the review-threshold table), an error gallery of the worst lines.
Classifiers: accuracy, per-class precision/recall/F1, a confusion-matrix PNG, a gallery of
misclassified characters. Everything goes into ``<report>/metrics.json`` beside the PNGs and a
``predictions.jsonl`` (one line per sample).

Small data is read in this process; large data (``use_ray=True``, or automatically above
``ray_threshold`` samples) runs with Ray Data: shards are read with ``read_parquet`` and recognised by an
actor pool of :class:`~htr_ray.distributed.actors.RecognizerActor` (the bulk job's too; one recogniser per actor), then the
(small) predictions are gathered here for the metrics. Page samples (rows with ``lines``) are evaluated
line by line, cropping each line's bbox out of the page. An unreadable sample is a prediction with an
``error`` (and counts as fully wrong): samples in = predictions out.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from htr_ray.io import images, shards, storage
from htr_ray.evaluation import metrics, reports

log = logging.getLogger(__name__)

ROW_COLUMNS = ["id", "image", "text", "source", "domain", "lines"]


# ------------------------------------------------------------------------------------ samples


def expand_row(row: dict) -> Iterator[dict]:
    """One sample row -> the items to recognise: itself, or, for a page with ``lines``, each line cropped
    from the page (id ``<page id>#L<k>``). Items carry ``gray`` (or ``error``)."""
    base = {"source": row.get("source") or "", "domain": row.get("domain") or "generic"}
    try:
        gray = images.decode_gray(row["image"]) if row.get("image") is not None else None
        err = None if gray is not None else "empty: no image"
    except images.ImageError as exc:
        gray, err = None, f"{exc.kind}: {exc}"
    lines = row.get("lines") or []
    if not lines:
        yield {**base, "id": row["id"], "truth": row.get("text") or "", "gray": gray, "error": err}
        return
    for k, ln in enumerate(lines):
        item = {**base, "id": f"{row['id']}#L{k}", "truth": ln.get("text") or "", "gray": None, "error": err}
        if gray is not None:
            try:
                x0, y0, x1, y1 = [int(round(v)) for v in ln["bbox"]]
                crop = gray[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
                if min(crop.shape) < 2:
                    raise ValueError(f"bbox {ln['bbox']} is empty")
                item["gray"] = crop
            except Exception as exc:
                item["error"] = f"bad_bbox: {exc}"
        yield item


def recognize_items(rec, items: list[dict]) -> list[dict]:
    """Recognise expanded items with a :class:`Recognizer`; returns prediction dicts (no images)."""
    usable = [i for i, it in enumerate(items) if it.get("gray") is not None and not it.get("error")]
    t0 = time.perf_counter()
    results = rec.recognize([items[i]["gray"] for i in usable]) if usable else []
    dt = time.perf_counter() - t0
    by_index = dict(zip(usable, results))
    out = []
    for i, it in enumerate(items):
        r = by_index.get(i)
        pred = {"id": it["id"], "truth": it["truth"], "source": it["source"], "domain": it["domain"],
                "pred": "", "confidence": 0.0, "char_confidences": [], "error": it.get("error")}
        if r is not None:
            pred.update(pred=r.text, confidence=float(r.confidence), char_confidences=[round(c, 4) for c in r.char_confidences],
                        error=r.error)
        out.append(pred)
    if out:
        out[0]["_seconds"] = dt  # batch timing, summed by the caller
    return out


def expand_stage(batch) -> "pyarrow.Table":
    """Ray Data task stage: shard rows -> line rows for :class:`~htr_ray.distributed.actors.RecognizerActor`
    (``crop``/``h``/``w`` plus id, truth, source, domain and the reading error, if any)."""
    import pyarrow as pa

    from htr_ray.distributed.actors import crop_columns

    items = [it for row in batch.to_pylist() for it in expand_row(row)]
    cols = crop_columns([None if it.get("error") else it.get("gray") for it in items])
    return pa.table({"id": [it["id"] for it in items], "truth": [it["truth"] for it in items],
                     "source": [it["source"] for it in items], "domain": [it["domain"] for it in items],
                     "error": [it.get("error") or "" for it in items],
                     "crop": pa.array(cols["crop"], pa.binary()), "h": pa.array(cols["h"], pa.int32()),
                     "w": pa.array(cols["w"], pa.int32())})


def predict_local(rec, data_uri: str, split: str, limit: int | None = None, batch_size: int = 256) -> tuple[list[dict], float]:
    preds: list[dict] = []
    seconds = 0.0
    pending: list[dict] = []
    rows_seen = 0

    def flush():
        nonlocal seconds
        out = recognize_items(rec, pending)
        if out:
            seconds += out[0].pop("_seconds", 0.0)
        preds.extend(out)
        pending.clear()

    for row in shards.iter_rows(data_uri, split, columns=_columns(data_uri, split)):
        if limit is not None and rows_seen >= limit:
            break
        rows_seen += 1
        pending.extend(expand_row(row))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return preds, seconds


def _columns(data_uri: str, split: str) -> list[str]:
    """The sample columns present in the shards (older shards may lack ``lines``); reads only the
    first shard's footer."""
    uris = shards.list_shards(data_uri, split)
    if not uris:
        raise FileNotFoundError(f"no shards under {storage.join(data_uri, split)}")
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_filesystem(uris[0])
    with fs.open_input_file(path) as fh:
        names = pq.read_schema(fh).names
    return [c for c in ROW_COLUMNS if c in names]


def predict_ray(spec, data_uri: str, split: str, actors: int = 2, batch_size: int = 128,
                limit: int | None = None) -> tuple[list[dict], float]:
    """Predictions with Ray Data: read_parquet -> expand_stage (tasks: decode, crop page lines) ->
    map_batches(RecognizerActor) on an actor pool of up to
    ``actors`` recognisers built from ``spec`` (a
    :class:`~htr_ray.recognition.spec.RecognizerSpec`; 1 CPU each, or 1 GPU each when its device is cuda)."""
    import ray
    from ray.data import ActorPoolStrategy

    uris = shards.list_shards(data_uri, split)
    if not uris:
        raise FileNotFoundError(f"no shards under {storage.join(data_uri, split)}")
    fs, _ = storage.pyarrow_filesystem(uris[0])
    paths = [storage.pyarrow_filesystem(u)[1] for u in uris]
    from htr_ray.distributed.actors import RecognizerActor
    from htr_ray.distributed.runtime import ensure_ray

    ensure_ray()
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=_columns(data_uri, split))
    if limit is not None:
        ds = ds.limit(limit)
    ds = ds.map_batches(expand_stage, batch_format="pyarrow", batch_size=int(batch_size))
    ds = ds.map_batches(
        RecognizerActor,
        fn_constructor_kwargs={"spec": spec.as_dict()},
        batch_format="pyarrow",
        batch_size=int(batch_size),
        compute=ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        **({"num_gpus": 1} if str(spec.device).startswith("cuda") else {"num_cpus": 1}),
    )
    rows = ds.take_all()
    preds = []
    seconds = 0.0
    for r in rows:
        seconds += float(r.pop("seconds", 0.0))
        preds.append({"id": r["id"], "truth": r["truth"], "source": r["source"], "domain": r["domain"],
                      "pred": r["text"], "confidence": float(r["confidence"]),
                      "char_confidences": [round(c, 4) for c in r["char_confidences"] or []],
                      "error": r["error"] or None})
    return preds, seconds


# ------------------------------------------------------------------------------------ metrics


def line_metrics(preds: Sequence[dict], top_k: int = 20, bins: int = 10) -> dict:
    refs = [p["truth"] for p in preds]
    hyps = [p["pred"] for p in preds]
    confs = [p["confidence"] for p in preds]
    return {
        "overall": metrics.line_report(refs, hyps),
        "by_domain": metrics.by_group(refs, hyps, [p["domain"] for p in preds]),
        "by_source": metrics.by_group(refs, hyps, [p["source"] for p in preds]),
        "confusions": metrics.top_confusions(refs, hyps, k=top_k),
        "calibration": metrics.calibration(confs, refs, hyps, bins=bins),
        "review_thresholds": metrics.review_thresholds(confs, refs, hyps),
        "domain_checks": domain_check_agreement(preds),
    }


def domain_check_agreement(preds: Sequence[dict]) -> dict:
    """For page samples of the checked domains (cheque, prescription, homework): run the domain checks
    on the recognised lines and on the true lines, and count how often the verdicts agree. A page whose
    truth passes but whose reading fails is a false alarm caused by recognition errors; the reverse is
    a missed error."""
    from htr_ray.evaluation import domain_checks

    pages: dict[str, list[dict]] = {}
    for p in preds:
        if "#L" in p["id"] and p["domain"] in domain_checks.DOMAINS:
            pages.setdefault(p["id"].rsplit("#L", 1)[0], []).append(p)
    out: dict[str, dict] = {}
    for page_id, lines in sorted(pages.items()):
        lines.sort(key=lambda p: int(p["id"].rsplit("#L", 1)[1]))
        domain = lines[0]["domain"]
        truth = domain_checks.check_page([p["truth"] for p in lines], domain)
        read = domain_checks.check_page([{"text": p["pred"], "confidence": p["confidence"]} for p in lines], domain)
        d = out.setdefault(domain, {"pages": 0, "agree": 0, "false_alarms": 0, "missed": 0})
        d["pages"] += 1
        d["agree"] += truth["ok"] == read["ok"]
        d["false_alarms"] += truth["ok"] and not read["ok"]
        d["missed"] += (not truth["ok"]) and read["ok"]
    return out


def score_page(truth: Sequence[dict], found: Sequence, iou_threshold: float = 0.3) -> dict:
    """Character errors of a read page against its handwritten ground truth lines (``{text, bbox}``).

    ``found``: the page's lines, :class:`~htr_ray.pages.results.TextLine` s or their rows (a
    :class:`~htr_ray.pages.results.PageResult` is taken whole). Lines flagged printed are left out: what
    a user reads as the page's handwriting is scored. Lines are paired one to one by shape overlap (IoU >=
    ``iou_threshold``, of polygons where every line has one, else of boxes: a reader's box is its padded
    crop box, which on a tilted page overlaps the true box much less than the polygons do; a found line may also hold a printed label beside the handwriting, hence the low
    threshold). A truth line with no partner counts all its characters as deleted. Found lines with no
    partner (form print, stray marks) are counted as ``extra`` but not charged: the ground truth covers
    handwriting only."""
    from htr_ray.evaluation.line_finding import match

    if hasattr(found, "lines") and not isinstance(found, (list, tuple)):
        found = found.lines

    def get(line, name, default=None):
        return line.get(name, default) if isinstance(line, dict) else getattr(line, name, default)

    def printed(line) -> bool:
        kind = get(line, "kind")
        return kind == "printed" if kind else bool(get(line, "printed", False))

    found = [f for f in found if not printed(f)]
    shapes = "polygon" if all(get(x, "polygon") for x in list(truth) + list(found)) else "bbox"
    pairs = match([get(t, shapes) for t in truth], [get(f, shapes) for f in found], threshold=iou_threshold)
    errors = chars = 0
    matched = set()
    for ti, fi, _ in pairs:
        e, n = metrics.char_errors(truth[ti]["text"], get(found[fi], "text") or "")
        errors, chars = errors + e, chars + n
        matched.add(ti)
    missed = [t for i, t in enumerate(truth) if i not in matched]
    for t in missed:
        errors, chars = errors + len(t["text"]), chars + len(t["text"])
    return {"errors": errors, "chars": chars, "lines": len(truth), "matched": len(pairs), "missed": len(missed),
            "extra": len(found) - len(pairs)}


def classifier_metrics(preds: Sequence[dict], classes: Sequence[str] | None = None, top_k: int = 20, bins: int = 10) -> dict:
    labels = [p["truth"] for p in preds]
    hyps = [p["pred"] for p in preds]
    known = list(classes) if classes else None
    if known is not None:
        extra = sorted({x for x in labels + hyps if x not in set(known)})
        known = known + extra  # unreadable samples predict "" and unknown labels still count
    report = metrics.per_class_report(labels, hyps, known)
    cls, matrix = metrics.confusion_matrix(labels, hyps, known)
    return {
        "accuracy": report["accuracy"],
        "report": report,
        "classes": [str(c) for c in cls],
        "confusion_matrix": matrix,
        "top_confusions": metrics.top_class_confusions(labels, hyps, k=top_k),
        "by_source": {g: {"accuracy": metrics.accuracy([labels[i] for i in ii], [hyps[i] for i in ii]), "samples": len(ii)}
                      for g, ii in _group_indices([p["source"] for p in preds]).items()},
        "calibration": metrics.calibration([p["confidence"] for p in preds], labels, hyps, bins=bins),
    }


def _group_indices(groups: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(str(g), []).append(i)
    return dict(sorted(out.items()))


def worst(preds: Sequence[dict], k: int, kind: str) -> list[dict]:
    """The ``k`` worst predictions: lines by character errors (then CER), characters misclassified
    (least confident first among the wrong ones)."""
    if kind == "line":
        scored = []
        for p in preds:
            e, n = metrics.char_errors(p["truth"], p["pred"])
            if e:
                scored.append((e / max(n, 1), e, p))
        scored.sort(key=lambda x: (x[0], x[1]), reverse=True)
        return [p for _, _, p in scored[:k]]
    wrong = [p for p in preds if p["truth"] != p["pred"]]
    wrong.sort(key=lambda p: -p["confidence"])  # confidently wrong first: the most instructive
    return wrong[:k]


def fetch_images(data_uri: str, split: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Gray images of the given sample ids (page-line ids are cropped from their page). Each shard's
    ``id`` column is read first; only shards holding a wanted id are read whole."""
    wanted = set(ids)
    pages = {i.split("#L")[0] for i in wanted}
    out: dict[str, np.ndarray] = {}
    columns = _columns(data_uri, split)
    for uri in shards.list_shards(data_uri, split):
        if pages.isdisjoint(shards.read_table(uri, ["id"]).column("id").to_pylist()):
            continue
        for row in shards.read_table(uri, columns).to_pylist():
            if row["id"] not in pages:
                continue
            for it in expand_row(row):
                if it["id"] in wanted and it.get("gray") is not None:
                    out[it["id"]] = it["gray"]
    return out


# ------------------------------------------------------------------------------------ front door


@dataclass
class EvalResult:
    metrics: dict
    predictions: list[dict]
    report_dir: str | None


def evaluate(recognizer, data: str, split: str = "test", report: str | None = None, limit: int | None = None,
             use_ray: bool | None = None, ray_threshold: int = 20000, actors: int = 2, batch_size: int = 128,
             gallery: int = 24) -> EvalResult:
    """Evaluate a recogniser on ``data``/``split`` and (with ``report``) write the report files.

    ``recognizer``: the :class:`~htr_ray.recognition.spec.RecognizerSpec` that reads the samples (a
    model URI alone stands for ``RecognizerSpec(model=uri)``: the model's own decoding defaults). The
    spec decides everything, as in every other job: fields it leaves unset take the model's
    ``model.json`` ``"decoding"`` defaults (:meth:`RecognizerSpec.resolved`), and the metrics record the
    resolved spec, so a report says how its lines were read."""
    from htr_ray.models import checkpoint
    from htr_ray.recognition import export
    from htr_ray.recognition.spec import RecognizerSpec

    spec = recognizer if isinstance(recognizer, RecognizerSpec) else RecognizerSpec(model=recognizer)
    if not spec.model:
        raise ValueError("a model URI is required (RecognizerSpec.model)")
    model = spec.model
    meta = export.read_meta(model) if export.is_exported(model) else checkpoint.read_meta(model)
    spec = spec.resolved(meta)
    kind = meta.get("kind", "line")
    n_rows = shards.count_rows(data, split)
    if n_rows == 0:
        raise FileNotFoundError(f"no samples in {storage.join(data, split)}")
    if use_ray is None:
        use_ray = min(n_rows, limit or n_rows) >= ray_threshold
    t0 = time.perf_counter()
    if use_ray:
        preds, model_seconds = predict_ray(spec, data, split, actors=actors, batch_size=batch_size, limit=limit)
    else:
        preds, model_seconds = predict_local(spec.build(), data, split, limit=limit)
    wall = time.perf_counter() - t0
    preds.sort(key=lambda p: p["id"])
    errors = [p for p in preds if p.get("error")]
    lm = None if spec.lm in (None, "", "none") else spec.lm
    result: dict[str, Any] = {
        "model": model, "architecture": meta.get("architecture"), "kind": kind, "data": data, "split": split,
        "decoder": "beam" if (spec.lexicon or lm) else spec.decoder, "lexicon": spec.lexicon, "lm": lm,
        "beam_options": spec.beam_options() if (spec.decoder == "beam" or spec.lexicon or lm) else None,
        "width_bucket": spec.width_bucket, "recognizer": spec.as_dict(),
        "samples": len(preds), "unreadable": len(errors),
        "unreadable_examples": [{"id": p["id"], "error": p["error"]} for p in errors[:20]],
        "ray": bool(use_ray),
        # per_second: one recogniser's rate (recognition time summed over actors); wall_per_second: the
        # whole evaluation's, reading and decoding the images included
        "timing": {"wall_seconds": round(wall, 3), "recognize_seconds": round(model_seconds, 3),
                   "per_second": round(len(preds) / max(model_seconds, 1e-9), 2),
                   "wall_per_second": round(len(preds) / max(wall, 1e-9), 2)},
    }
    if kind == "line":
        result.update(line_metrics(preds))
    else:
        result.update(classifier_metrics(preds, classes=list(meta["charset"])))
    report_dir = None
    if report:
        report_dir = write_report(report, result, preds, data, split, kind, gallery)
    return EvalResult(result, preds, report_dir)


def write_report(report: str, result: dict, preds: Sequence[dict], data: str, split: str, kind: str,
                 gallery: int = 24) -> str:
    files: dict[str, str] = {}
    bad = worst(preds, gallery, kind)
    imgs = fetch_images(data, split, [p["id"] for p in bad]) if bad else {}
    items = []
    for p in bad:
        note = (f"{p['id']}  CER {metrics.char_errors(p['truth'], p['pred'])[0] / max(len(p['truth']), 1):.2f}  "
                f"conf {p['confidence']:.2f}" if kind == "line" else f"conf {p['confidence']:.2f}")
        items.append({"image": imgs.get(p["id"]), "truth": p["truth"], "pred": p["pred"], "note": note})
    if kind == "line":
        title = f"worst {len(items)} of {len(preds)} lines (CER {result['overall']['cer']:.4f})"
        files["error_gallery"] = reports.error_gallery_png(storage.join(report, "error_gallery.png"), items, title=title)
    else:
        title = f"{len(items)} misclassified (most confident first); accuracy {result['accuracy']:.4f}"
        files["error_gallery"] = reports.error_gallery_png(storage.join(report, "error_gallery.png"), items, title=title,
                                                           columns=6, image_height=64, tile_width=150)
        classes, matrix = result["classes"], result["confusion_matrix"]
        if len(classes) > 60:  # keep the picture readable: the 60 classes with most samples
            support = np.asarray(matrix).sum(axis=1)
            keep = sorted(np.argsort(-support)[:60].tolist())
            classes = [classes[i] for i in keep]
            matrix = [[matrix[i][j] for j in keep] for i in keep]
        files["confusion_matrix"] = reports.confusion_matrix_png(
            storage.join(report, "confusion_matrix.png"), classes, matrix,
            title=f"{result.get('architecture')} on {split}: accuracy {result['accuracy']:.4f}")
    lines = "\n".join(json.dumps({k: v for k, v in p.items() if k != "_seconds"}, ensure_ascii=False) for p in preds)
    storage.write_bytes(storage.join(report, "predictions.jsonl"), (lines + "\n").encode("utf-8"))
    files["predictions"] = storage.join(report, "predictions.jsonl")
    files["metrics"] = storage.join(report, "metrics.json")
    result["files"] = files
    reports.write_json(files["metrics"], result)
    return report


def summary_lines(m: dict) -> list[str]:
    """A short printable summary of :func:`evaluate`'s metrics."""
    out = [f"model {m['model']} ({m.get('architecture')}, {m['kind']}) on {m['data']} [{m['split']}]: "
           f"{m['samples']} samples, {m['unreadable']} unreadable, {m['timing']['per_second']:.1f}/s "
           f"({'Ray Data' if m['ray'] else 'in process'}, decoder {m['decoder']}"
           f"{', LM ' + m['lm'] if m.get('lm') else ''})"]
    if m["kind"] == "line":
        o = m["overall"]
        out.append(f"CER {o['cer']:.4f}  WER {o['wer']:.4f}  line accuracy {o['line_accuracy']:.3f}")
        for group in ("by_domain", "by_source"):
            for g, r in m[group].items():
                out.append(f"  {group[3:]:<6} {g:<16} lines {r['lines']:>6}  CER {r['cer']:.4f}  WER {r['wer']:.4f}")
        for dom, d in m.get("domain_checks", {}).items():
            out.append(f"  domain checks, {dom}: {d['agree']}/{d['pages']} pages give the truth's verdict "
                       f"({d['false_alarms']} false alarms, {d['missed']} missed)")
        subs = m["confusions"]["substitutions"][:8]
        if subs:
            out.append("top substitutions: " + ", ".join(f"{s['ref']!r}->{s['hyp']!r} x{s['count']}" for s in subs))
        cal = m["calibration"]
        out.append(f"calibration: {cal['monotonic_violations']} non-monotonic decile steps, "
                   f"rank correlation {cal['spearman'] if cal['spearman'] is None else round(cal['spearman'], 3)}")
        out.append(reports.calibration_table_text(cal))
        for r in m.get("review_thresholds", []):
            if r["threshold"] is None:
                out.append(f"  for CER <= {r['target_cer']:.0%} in accepted lines: no threshold reaches it")
            else:
                out.append(f"  for CER <= {r['target_cer']:.0%} in accepted lines: review lines with confidence < "
                           f"{r['threshold']:.4g} ({r['review_share']:.0%} of lines)")
    else:
        r = m["report"]
        out.append(f"accuracy {m['accuracy']:.4f}  macro F1 {r['macro']['f1']:.4f}")
        conf = m["top_confusions"][:8]
        if conf:
            out.append("top confusions: " + ", ".join(f"{c['label']}->{c['predicted']} x{c['count']}" for c in conf))
    if m.get("files"):
        out.append("report: " + ", ".join(m["files"].values()))
    return out
