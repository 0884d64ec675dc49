"""Bulk transcription of an archive with Ray Data: list -> read -> decode -> segment -> recognise in an
actor pool -> results, one row per page, errors included.

Exactly-once output: result rows reach the driver through the streaming executor, and the driver
writes them in *part files* that hold only whole input objects (every page of a multi-page TIFF
together). Each part is written JSONL first, then Parquet; the Parquet file is the commit. A rerun
reads the committed parts, skips the objects they hold, and deletes JSONL parts that never got their
Parquet twin. So a driver killed at any moment loses at most the rows it had not yet committed, and a
rerun adds exactly those: one row per page, none missing, none twice.

Layout under ``--output``: ``parts/part-<run>-<n>.parquet`` and ``.jsonl`` (the results),
``_summary.json`` (counts of the last run, and of the whole output).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from htr_ray.pages import reader as pages
from htr_ray.io import storage
from htr_ray import paths

log = logging.getLogger(__name__)

# The shipped English line recognizer (models/ beside the package in a checkout or the image).
DEFAULT_LINE_MODEL = paths.shipped_model("en_line_crnn_small", env="HTR_LINE_MODEL")

LINE_TYPE = pa.struct([("text", pa.string()), ("confidence", pa.float32()), ("bbox", pa.list_(pa.int32())),
                       ("printed", pa.bool_())])
RESULT_SCHEMA = pa.schema([
    ("uri", pa.string()), ("page", pa.int32()), ("pages", pa.int32()), ("status", pa.string()),
    ("error_kind", pa.string()), ("error", pa.string()), ("text", pa.string()), ("lines", pa.list_(LINE_TYPE)),
    ("model", pa.string()), ("seconds", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("angle", pa.float32()),
])
# Between the segment stage and the recogniser: a result row plus the deskewed page and its boxes.
PAGE_SCHEMA = pa.schema(list(RESULT_SCHEMA) + [
    ("pixels", pa.binary()), ("boxes", pa.list_(pa.list_(pa.int32()))), ("printed", pa.list_(pa.bool_())),
])


@dataclass
class TranscribeConfigCore:
    input: str
    output: str
    model: str
    workers: int = 2
    gpus_per_worker: float = 0.0
    batch_size: int = 8  # pages per recogniser call
    decoder: str = "greedy"
    lexicon: str | None = None
    lm: str | None = None
    flush_pages: int = 200
    flush_seconds: float = 20.0
    progress_seconds: float = 10.0
    max_pixels: int = 100_000_000
    printed_filter: str | None = None  # URI of a word_kind checkpoint (htr_ray.printed); None: no split


@dataclass
class Summary:
    inputs: int = 0
    skipped_done: int = 0  # objects already in the output from an earlier run
    not_scans: int = 0  # files under the prefix that are not images (listed, not read)
    objects: int = 0  # objects processed in this run
    pages: int = 0
    pages_ok: int = 0
    pages_without_text: int = 0
    lines: int = 0
    errors_by_kind: dict = field(default_factory=dict)
    seconds: float = 0.0
    parts_written: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["errors"] = sum(self.errors_by_kind.values())
        d["pages_per_s"] = round(self.pages / self.seconds, 3) if self.seconds else 0.0
        d["lines_per_s"] = round(self.lines / self.seconds, 3) if self.seconds else 0.0
        return d


# ------------------------------------------------------------------------------------ Ray Data stages


def _read_and_segment(batch: pa.Table, max_pixels: int, printed_filter: str | None = None) -> pa.Table:
    """Task stage: one row per input URI in, one row per page out (or one error row)."""
    from htr_ray.layout.printed import load_cached

    flt = load_cached(printed_filter) if printed_filter else None
    rows = []
    for uri in batch.column("uri").to_pylist():
        try:
            data, err = storage.read_bytes(uri), None
        except storage.StorageError as exc:
            data, err = None, str(exc)
        for item in pages.prepare_pages(uri, data, err, max_pixels=max_pixels, printed_filter=flt):
            if isinstance(item, dict):
                rows.append({**item, "pixels": b"", "boxes": [], "printed": None})
            else:
                h, w = item.gray.shape
                rows.append({
                    "uri": item.uri, "page": item.page, "pages": item.pages, "status": "pending", "error_kind": "",
                    "error": "", "text": "", "lines": [], "model": "", "seconds": item.seconds,
                    "width": item.size[0], "height": item.size[1], "angle": item.angle,
                    "pixels": item.gray.tobytes(), "boxes": item.boxes, "printed": item.printed,
                    # the deskewed page keeps the input's size (rotation is in place)
                })
    return pa.Table.from_pylist(rows, schema=PAGE_SCHEMA)


class RecognizeStage:
    """Actor stage: loads the recogniser once, then reads the lines of a batch of pages."""

    def __init__(self, model: str, device: str, decoder: str, lexicon: str | None, lm: str | None):
        from htr_ray.recognition.recognizer import Recognizer

        self.recognizer = Recognizer.from_uri(model, device=device, decoder=decoder, lexicon=lexicon, lm=lm)
        self.model_name = model

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        jobs, job_rows, out = [], [], []
        for r in rows:
            if r["status"] != "pending":
                r.pop("pixels"), r.pop("boxes"), r.pop("printed")
                r["model"] = self.model_name
                out.append(r)
                continue
            gray = np.frombuffer(r["pixels"], np.uint8).reshape(r["height"], r["width"])
            jobs.append(pages.PageJob(r["uri"], r["page"], r["pages"], gray, r["boxes"], r["angle"],
                                      (r["width"], r["height"]), r["seconds"], r["printed"]))
        try:
            out.extend(pages.recognize_pages(jobs, self.recognizer, self.model_name))
        except Exception as exc:  # a model failure on this batch: error rows, not a lost batch
            log.exception("recognition failed for %d pages", len(jobs))
            out.extend(pages.error_row(j.uri, "recognition_failed", f"{type(exc).__name__}: {exc}", j.page, j.pages,
                                       self.model_name) for j in jobs)
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


# -------------------------------------------------------------------------------------- the output


def parts_prefix(output: str) -> str:
    return storage.join(output, "parts")


def committed_rows(output: str, columns=("uri", "page", "pages", "status", "error_kind")) -> list[dict]:
    rows = []
    try:
        parts = storage.list_uris(parts_prefix(output), suffixes=(".parquet",))
    except storage.StorageError:  # no output yet
        parts = []
    for uri in parts:
        rows.extend(pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=list(columns)).to_pylist())
    return rows


def clean_uncommitted(output: str) -> int:
    """Delete JSONL parts whose Parquet twin was never written (the driver died in between)."""
    prefix = parts_prefix(output)
    try:
        listed = storage.list_uris(prefix)
    except storage.StorageError:
        return 0
    parquet = {u[: -len(".parquet")] for u in listed if u.endswith(".parquet")}
    removed = 0
    for u in listed:
        if u.endswith(".jsonl") and u[: -len(".jsonl")] not in parquet:
            storage.delete(u)
            removed += 1
    return removed


class PartWriter:
    """Buffers result rows per input object and commits whole objects as part files."""

    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id
        self.pending: dict[str, list[dict]] = defaultdict(list)
        self.ready: list[dict] = []
        self.count = 0

    def add(self, row: dict) -> None:
        rows = self.pending[row["uri"]]
        rows.append(row)
        if len(rows) >= max(1, int(row["pages"])):
            self.ready.extend(sorted(rows, key=lambda r: r["page"]))
            del self.pending[row["uri"]]

    def flush(self) -> int:
        if not self.ready:
            return 0
        base = storage.join(parts_prefix(self.output), f"part-{self.run_id}-{self.count:05d}")
        table = pa.Table.from_pylist(self.ready, schema=RESULT_SCHEMA)
        storage.write_text(base + ".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.ready))
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        storage.write_bytes(base + ".parquet", sink.getvalue())  # the commit
        n = len(self.ready)
        self.ready, self.count = [], self.count + 1
        return n


# ------------------------------------------------------------------------------------------ the job


def run(cfg: TranscribeConfigCore, on_progress=print) -> Summary:
    import ray

    if not ray.is_initialized():
        ray.init()
    started = time.time()
    summary = Summary()
    scans, others = pages.list_scans(cfg.input)
    summary.inputs, summary.not_scans = len(scans), len(others)
    removed = clean_uncommitted(cfg.output)
    if removed:
        log.info("removed %d uncommitted JSONL parts of an interrupted run", removed)
    done = {r["uri"] for r in committed_rows(cfg.output, columns=("uri",))}
    todo = [u for u in scans if u not in done]
    summary.skipped_done = len(scans) - len(todo)
    summary.objects = len(todo)
    on_progress(f"transcribe: {len(scans)} scans under {cfg.input} ({summary.skipped_done} already done, "
                f"{len(todo)} to do, {len(others)} other files ignored)")
    if todo:
        _execute(cfg, todo, summary, on_progress)
    summary.seconds = time.time() - started
    all_rows = committed_rows(cfg.output)
    total = {
        "rows": len(all_rows), "objects": len({r["uri"] for r in all_rows}),
        "ok": sum(r["status"] == "ok" for r in all_rows),
        "errors_by_kind": dict(Counter(r["error_kind"] for r in all_rows if r["status"] != "ok")),
    }
    storage.write_text(storage.join(cfg.output, "_summary.json"),
                       json.dumps({"run": summary.as_dict(), "output": total, "input": cfg.input, "model": cfg.model}, indent=1))
    return summary


def _execute(cfg: TranscribeConfigCore, todo: list[str], summary: Summary, on_progress) -> None:
    import ray

    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    ds = ray.data.from_items([{"uri": u} for u in todo], override_num_blocks=min(len(todo), 200))
    ds = ds.map_batches(_read_and_segment, batch_size=1, batch_format="pyarrow",
                        fn_kwargs={"max_pixels": cfg.max_pixels, "printed_filter": cfg.printed_filter})
    ds = ds.map_batches(
        RecognizeStage,
        fn_constructor_kwargs={"model": cfg.model, "device": device, "decoder": cfg.decoder,
                               "lexicon": cfg.lexicon, "lm": cfg.lm},
        batch_size=cfg.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cfg.workers)),
        num_gpus=cfg.gpus_per_worker or None,
    )
    writer = PartWriter(cfg.output, run_id)
    last_flush = last_report = time.time()
    errors: Counter = Counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            summary.pages += 1
            if row["status"] == "ok":
                summary.pages_ok += 1
                summary.lines += len(row["lines"])
                summary.pages_without_text += not row["lines"]
            else:
                errors[row["error_kind"]] += 1
            writer.add(row)
        now = time.time()
        if len(writer.ready) >= cfg.flush_pages or now - last_flush >= cfg.flush_seconds:
            writer.flush()
            last_flush = now
        if now - last_report >= cfg.progress_seconds:
            on_progress(f"  {summary.pages} pages done ({len(todo)} files to do), {summary.lines} lines, "
                        f"{sum(errors.values())} errors")
            last_report = now
    if writer.pending:  # cannot happen unless a page row went missing: report, never drop silently
        for uri, rows in writer.pending.items():
            log.error("object %s: got %d of %d pages", uri, len(rows), rows[0]["pages"])
            writer.ready.extend(rows)
    writer.flush()
    summary.parts_written = writer.count
    summary.errors_by_kind = dict(errors)
