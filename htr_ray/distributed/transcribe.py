"""Bulk transcription of an archive with Ray Data, on the page reader (:mod:`htr_ray.pages.reader`).

    list scans -> read + prepare (tasks: decode, find lines, deskew, crop) -> recognise (an actor pool of
    :class:`~htr_ray.distributed.actors.RecognizerActor`, one thread each) -> assemble (driver) -> part files

The prepare stage emits one row per *line* (its crop, a few kB) plus one small header row per page (the
page's geometry as JSON, or its error); whole pages never enter the object store. The actors read
batches of ``--lines-per-batch`` lines, which fill across pages and objects; the recogniser sorts each
batch by width. The driver gathers a page's line results and its header and assembles the
:class:`~htr_ray.pages.results.PageResult` with :meth:`PageReader.assemble`.

Exactly-once output: the driver writes result rows in *part files* that hold only whole input objects
(every page of a multi-page TIFF together). Each part is written JSONL first, then the page files of
``--formats`` (ALTO, PAGE-XML, hOCR: one per page, deterministic names, so a rerun overwrites), then
Parquet; the Parquet file is the commit. A rerun reads the committed parts, skips the objects they
hold, and deletes JSONL parts that never got their Parquet twin. So a driver killed at any moment loses
at most the rows it had not yet committed, and a rerun adds exactly those: one row per page, none
missing, none twice.

Layout under ``--output``: ``parts/part-<run>-<n>.parquet`` and ``.jsonl`` (the results,
:data:`htr_ray.pages.results.RESULT_SCHEMA`), ``<fmt>/...`` (page files), ``_summary.json``.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from htr_ray import config
from htr_ray.distributed.actors import RecognizerActor, crop_columns
from htr_ray.io import images, storage
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.pages import results as res
from htr_ray.pages.reader import PageReader, PreparedPage, list_scans
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL, RecognizerSpec

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LINE_MODEL", "TranscribeConfig", "Summary", "run", "committed_rows", "prepare_stage"]

# Between the prepare stage and the driver: one row per line (crop set) or per page (header: crop empty).
LINE_ROWS = pa.schema([
    ("uri", pa.string()), ("page", pa.int32()), ("idx", pa.int32()), ("meta", pa.string()),
    ("crop", pa.binary()), ("h", pa.int32()), ("w", pa.int32()),
])
HEADER, FAILED = -1, -2  # idx of a page's header row: a prepared page, or an error result


@dataclass
class TranscribeConfig:
    """Read every scan (PNG, JPEG, TIFF with all pages, BMP, WebP) under --input, find its lines, read
    them in a pool of recogniser actors and write one result row per page under --output
    (parts/*.parquet + .jsonl, optional ALTO / PAGE-XML / hOCR files, _summary.json). Rerunning skips
    what is already done."""

    input: str = config.field(help="URI prefix of the scans (local folder or s3://bucket/prefix)")
    output: str = config.field(help="URI prefix for the results")
    # ONNX Runtime int8 by default: on 300 held-out IAM-OnDB lines CER 0.1097 vs 0.1106 for torch fp32 at
    # 1.9x the lines/s on one thread (bench/transcribe.py --backend-check 300, 2026-12-01); --backend torch
    # reads exactly as torch does (Serve's default)
    recognizer: RecognizerSpec = config.field(RecognizerSpec(backend="onnx", quantize="int8", threads=1),
                                              help="how lines are read")
    workers: int = config.field(None, help="recogniser actors, one thread each (default: one per CPU of the cluster)")
    gpus_per_worker: float = config.field(0.0, help="GPUs per recogniser actor (0 = CPU)")
    lines_per_batch: int = config.field(64, help="GPU actors: lines per actor call (from several pages); CPU actors "
                                                 "read the lines of one block's pages per call")
    objects_per_block: int = config.field(4, help="input objects per Ray Data block (the pages whose lines share batches)")
    line_finder: str = config.field("auto", help="auto (the learned finder if shipped, else opencv), learned, "
                                                 "learned:<uri> or opencv")
    printed_filter: str = config.field(DEFAULT_FILTER, help="printed-text filter the opencv finder uses: form "
                                                            "print is read, flagged and kept out of the text ('none': lines whole)")
    formats: str = config.field(None, help="also write one file per page in these formats, under <output>/<fmt>/ "
                                           "(comma-separated: alto, page, hocr)")
    flush_pages: int = config.field(200, help="commit a result part after this many pages (a killed run redoes at most this many)")
    flush_seconds: float = config.field(20.0, help="... or after this many seconds")
    progress_seconds: float = config.field(10.0, help="print progress this often")
    max_pixels: int = config.field(100_000_000, help="refuse images with more pixels than this (decompression bombs)")
    address: str = config.field(None, help="Ray address (default: the cluster this job runs on, or a new local one)")


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
    format_files: int = 0
    workers: int = 0
    first_batch_seconds: float = 0.0  # from the start of execution to the first results (actor start-up included)
    first_batch_pages: int = 0  # pages completed with that first batch
    stage_seconds: dict = field(default_factory=dict)  # CPU seconds summed over pages: decode, find_lines, ...

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["errors"] = sum(self.errors_by_kind.values())
        d["pages_per_s"] = round(self.pages / self.seconds, 3) if self.seconds else 0.0
        d["lines_per_s"] = round(self.lines / self.seconds, 3) if self.seconds else 0.0
        return d


def _filter_uri(uri: str | None) -> str | None:
    return None if uri in (None, "", "none") else uri


# ------------------------------------------------------------------------------------ Ray Data stages


def prepare_stage(batch: pa.Table, line_finder: str = "auto", printed_filter: str | None = None,
                  max_pixels: int = images.DEFAULT_MAX_PIXELS) -> pa.Table:
    """Task stage: URIs in; per page a header row and one row per line crop out (or one error row)."""
    reader = PageReader(line_finder, printed_filter=printed_filter, max_pixels=max_pixels)
    rows = {name: [] for name in LINE_ROWS.names}

    def add(uri: str, page: int, idx: list[int], meta: list[str], crops: list) -> None:
        cols = crop_columns(crops)
        rows["uri"] += [uri] * len(idx)
        rows["page"] += [page] * len(idx)
        rows["idx"] += idx
        rows["meta"] += meta
        for k in ("crop", "h", "w"):
            rows[k] += cols[k]

    for uri in batch.column("uri").to_pylist():
        try:
            data, err = storage.read_bytes(uri), None
        except storage.StorageError as exc:
            data, err = None, str(exc)
        for item in reader.prepare(uri, data, err):
            if isinstance(item, PreparedPage):
                n = len(item.crops)
                add(item.uri, item.page, [HEADER] + list(range(n)), [json.dumps(item.meta())] + [""] * n,
                    [None] + item.crops)
            else:
                add(item.uri, item.page, [FAILED], [json.dumps(item.to_row())], [None])
    return pa.Table.from_pydict(rows, schema=LINE_ROWS)


class PageAssembler:
    """Driver side: gathers each page's header and line results; a page is assembled (by the reader)
    as soon as all of its lines are back."""

    def __init__(self, model: str):
        self.reader = PageReader(model=model)  # assembling loads no line finder
        self.headers: dict[tuple[str, int], PreparedPage] = {}
        self.lines: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)

    def add(self, row: dict) -> res.PageResult | None:
        key = (row["uri"], int(row["page"]))
        if row["idx"] == FAILED:
            return res.PageResult.from_row({**json.loads(row["meta"]), "model": self.reader.model})
        if row["idx"] == HEADER:
            self.headers[key] = PreparedPage.from_meta(json.loads(row["meta"]))
        else:
            self.lines[key][int(row["idx"])] = row
        return self._complete(key)

    def _complete(self, key) -> res.PageResult | None:
        page = self.headers.get(key)
        got = self.lines.get(key, {})
        if page is None or len(got) < len(page.lines):
            return None
        ordered = [got[i] for i in range(len(page.lines))]
        del self.headers[key]
        self.lines.pop(key, None)
        return self.reader.assemble(page, ordered, recognize_seconds=sum(float(r["seconds"]) for r in ordered))

    def incomplete(self) -> list[tuple[str, int]]:
        return sorted(set(self.headers) | set(self.lines))


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


def parse_formats(formats: str | None) -> list[str]:
    """``"alto,page,hocr"`` -> the formats to write (checked against :mod:`htr_ray.pages.formats`)."""
    wanted = [f.strip().lower() for f in (formats or "").split(",") if f.strip()]
    if not wanted:
        return []
    try:
        from htr_ray.pages import formats as fmt_module
    except ImportError as exc:
        raise ValueError(f"--formats {formats}: htr_ray.pages.formats is not available ({exc})") from exc
    unknown = [f for f in wanted if f not in fmt_module.FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}: one of {', '.join(fmt_module.FORMATS)}")
    return wanted


def format_file_uri(output: str, uri: str, page: int, fmt: str) -> str:
    from htr_ray.pages import formats as fmt_module

    return storage.join(output, fmt, fmt_module.page_file_name(uri, page, fmt))


class PartWriter:
    """Buffers result rows per input object and commits whole objects as part files."""

    def __init__(self, output: str, run_id: str, formats: list[str] | None = None):
        self.output, self.run_id = output, run_id
        self.formats = list(formats or [])
        self.pending: dict[str, list[dict]] = defaultdict(list)
        self.ready: list[dict] = []
        self.count = 0
        self.format_files = 0

    def add(self, row: dict) -> None:
        rows = self.pending[row["uri"]]
        rows.append(row)
        if len(rows) >= max(1, int(row["pages"])):
            self.ready.extend(sorted(rows, key=lambda r: r["page"]))
            del self.pending[row["uri"]]

    def _write_formats(self) -> None:
        if not self.formats:
            return
        from htr_ray.pages import formats as fmt_module

        for row in self.ready:
            if row["status"] != res.OK:
                continue  # an error row has no page to describe; its reason is in the results
            page = res.PageResult.from_row(row)
            for fmt in self.formats:
                storage.write_bytes(format_file_uri(self.output, row["uri"], row["page"], fmt),
                                    fmt_module.render(page, fmt))
                self.format_files += 1

    def flush(self) -> int:
        if not self.ready:
            return 0
        base = storage.join(parts_prefix(self.output), f"part-{self.run_id}-{self.count:05d}")
        table = pa.Table.from_pylist(self.ready, schema=res.RESULT_SCHEMA)
        storage.write_text(base + ".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.ready))
        self._write_formats()  # before the commit: a rerun rewrites them under the same names
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        storage.write_bytes(base + ".parquet", sink.getvalue())  # the commit
        n = len(self.ready)
        self.ready, self.count = [], self.count + 1
        return n


# ------------------------------------------------------------------------------------------ the job


def run(cfg: TranscribeConfig, on_progress=print) -> Summary:
    from htr_ray.distributed.runtime import cluster_cpus, ensure_ray

    ensure_ray(cfg.address)
    started = time.time()
    formats = parse_formats(cfg.formats)  # a wrong format fails here, before any work
    summary = Summary()
    scans, others = list_scans(cfg.input)
    summary.inputs, summary.not_scans = len(scans), len(others)
    removed = clean_uncommitted(cfg.output)
    if removed:
        log.info("removed %d uncommitted JSONL parts of an interrupted run", removed)
    done = {r["uri"] for r in committed_rows(cfg.output, columns=("uri",))}
    todo = [u for u in scans if u not in done]
    summary.skipped_done = len(scans) - len(todo)
    summary.objects = len(todo)
    summary.workers = max(1, int(cfg.workers or cluster_cpus() or 1))
    on_progress(f"transcribe: {len(scans)} scans under {cfg.input} ({summary.skipped_done} already done, "
                f"{len(todo)} to do, {len(others)} other files ignored)")
    if todo:
        _execute(cfg, todo, summary, formats, on_progress)
    summary.seconds = time.time() - started
    all_rows = committed_rows(cfg.output)
    total = {
        "rows": len(all_rows), "objects": len({r["uri"] for r in all_rows}),
        "ok": sum(r["status"] == "ok" for r in all_rows),
        "errors_by_kind": dict(Counter(r["error_kind"] for r in all_rows if r["status"] != "ok")),
    }
    storage.write_text(storage.join(cfg.output, "_summary.json"),
                       json.dumps({"run": summary.as_dict(), "output": total, "input": cfg.input,
                                   "recognizer": cfg.recognizer.as_dict(), "line_finder": cfg.line_finder}, indent=1))
    return summary


def actor_spec(cfg: TranscribeConfig) -> RecognizerSpec:
    """The spec the actors build: an exported model directory runs with its own backend and
    quantisation (the job's onnx/int8 default applies to checkpoints); a GPU actor runs on cuda, with
    torch fp32 in place of the CPU-only int8 default."""
    from htr_ray.recognition import export

    spec = cfg.recognizer
    if export.is_exported(spec.model):
        spec = spec.replace(backend=None, quantize=None)
    if cfg.gpus_per_worker > 0:
        if (spec.backend, spec.quantize) == ("onnx", "int8"):
            spec = spec.replace(backend="torch", quantize=None)
        spec = spec.replace(device="cuda")
    return spec


def _execute(cfg: TranscribeConfig, todo: list[str], summary: Summary, formats: list[str], on_progress) -> None:
    import ray

    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    spec = actor_spec(cfg)
    # Blocks of --objects-per-block URIs. On CPU, Ray Data fuses the prepare stage into the actors (same
    # resources): each actor prepares a block's pages and reads their lines in batches that fill across
    # those pages, and no crop is serialised at all; a fixed pool of one actor per core keeps every core
    # busy from the start. GPU actors stay apart: CPU tasks prepare, an autoscaling pool of GPU actors
    # reads the crops that come through the object store.
    gpu = cfg.gpus_per_worker > 0
    per_block = max(1, int(cfg.objects_per_block))
    ds = ray.data.from_items([{"uri": u} for u in todo], override_num_blocks=max(1, -(-len(todo) // per_block)))
    ds = ds.map_batches(prepare_stage, batch_size=1, batch_format="pyarrow", num_cpus=1,
                        fn_kwargs={"line_finder": cfg.line_finder, "printed_filter": _filter_uri(cfg.printed_filter),
                                   "max_pixels": cfg.max_pixels})
    pool = (ray.data.ActorPoolStrategy(min_size=1, max_size=summary.workers) if gpu
            else ray.data.ActorPoolStrategy(size=summary.workers))
    ds = ds.map_batches(
        RecognizerActor, fn_constructor_kwargs={"spec": spec.as_dict(), "threads": spec.threads or 1},
        # fused on CPU, a batch size would also size the task's *input* (URIs) and put them all into one
        # task; without one, a task is one block and its batch is the lines of the block's pages
        batch_size=max(1, int(cfg.lines_per_batch)) if gpu else None, batch_format="pyarrow", compute=pool,
        **({"num_gpus": cfg.gpus_per_worker} if gpu else {"num_cpus": 1}),
    )
    assembler = PageAssembler(cfg.recognizer.model)
    writer = PartWriter(cfg.output, run_id, formats)
    last_flush = last_report = time.time()
    errors: Counter = Counter()
    stages: Counter = Counter()

    def take(result: res.PageResult) -> None:
        summary.pages += 1
        if result.ok:
            summary.pages_ok += 1
            summary.lines += len(result.lines)
            summary.pages_without_text += not result.lines
            stages.update(result.timings)
        else:
            errors[result.error_kind] += 1
        writer.add(result.to_row())

    t_start = time.time()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            result = assembler.add(row)
            if result is not None:
                take(result)
        if not summary.first_batch_seconds:
            summary.first_batch_seconds, summary.first_batch_pages = round(time.time() - t_start, 3), summary.pages
        now = time.time()
        if len(writer.ready) >= cfg.flush_pages or now - last_flush >= cfg.flush_seconds:
            writer.flush()
            last_flush = now
        if now - last_report >= cfg.progress_seconds:
            on_progress(f"  {summary.pages} pages done ({len(todo)} files to do), {summary.lines} lines, "
                        f"{sum(errors.values())} errors")
            last_report = now
    for uri, page in assembler.incomplete():  # cannot happen unless a row went missing: an error row, not a gap
        log.error("%s page %d: not all of its lines came back", uri, page)
        header = assembler.headers.get((uri, page))
        take(res.PageResult.failed(uri, "incomplete", "not all of the page's lines came back from the recognisers",
                                   page, header.pages if header else 1, cfg.recognizer.model))
    if writer.pending:  # cannot happen unless a page row went missing: report, never drop silently
        for uri, rows in writer.pending.items():
            log.error("object %s: got %d of %d pages", uri, len(rows), rows[0]["pages"])
            writer.ready.extend(rows)
    writer.flush()
    summary.parts_written = writer.count
    summary.format_files = writer.format_files
    summary.errors_by_kind = dict(errors)
    summary.stage_seconds = {k: round(v, 4) for k, v in stages.items()}
