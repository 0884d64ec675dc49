"""Bulk transcription of an archive with Ray Data, on the page reader (:mod:`htr_ray.pages.reader`).

On CPU (the default):

    list scans -> read, find lines, recognise, assemble (an actor pool of :class:`PageStage`, one per core,
    one thread each) -> finished page rows -> the driver commits part files

Each actor takes a block of ``--objects-per-block`` objects and reads it with
:meth:`PageReader.read_many <htr_ray.pages.reader.PageReader.read_many>` (the lines of all the block's
pages batched together, each page assembled by :meth:`PageReader.assemble`); it renders and writes the
``--formats`` page files of its pages itself, and returns one result row per page
(:data:`htr_ray.pages.results.RESULT_SCHEMA`) with its JSONL line. Nothing but page rows reaches the
driver, which only buffers them per object and commits parts.

With ``--gpus-per-worker``: read + prepare (CPU tasks, :func:`prepare_stage`: one row per line crop plus
one small header row per page) -> recognise (an autoscaling pool of GPU
:class:`~htr_ray.distributed.actors.RecognizerActor` s, ``--lines-per-batch`` lines a call, filling across
pages) -> the driver gathers a page's lines and header and assembles it (:class:`PageAssembler`, the same
:meth:`PageReader.assemble`), then writes its page files.

Exactly-once output: result rows are committed in *part files* that hold only whole input objects
(every page of a multi-page TIFF together). The ``--formats`` page files of a part's pages (one per page,
deterministic names, so a rerun overwrites them) are written before the part; each part is written
JSONL first, then Parquet; the Parquet file is the commit. A rerun skips the objects committed parts
hold and deletes JSONL parts that never got their Parquet twin. So a driver killed at any moment loses
at most the rows it had not yet committed, and a rerun adds exactly those: one row per page, none
missing, none twice.

Layout under ``--output``: ``parts/part-<run>-<n>.parquet`` and ``.jsonl`` (the results,
:data:`htr_ray.pages.results.RESULT_SCHEMA`), ``<fmt>/...`` (page files), ``_summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from htr_ray import config
from htr_ray.distributed.actors import RecognizerActor, crop_columns, pin_threads
from htr_ray.io import images, storage
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.pages import results as res
from htr_ray.pages.output import (MANIFEST_ROWS_PER_GROUP, DoneIndex, Manifest, PartWriter, clean_uncommitted,
                                  committed_rows, list_parts, output_counts, page_counts, parse_formats,
                                  remove_manifests, result_table, write_manifest)
from htr_ray.pages.reader import PageReader, PreparedPage
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL, PAGE_READING_DEFAULT, RecognizerSpec

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LINE_MODEL", "TranscribeConfig", "Summary", "run", "prepare_stage", "PageStage"]

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
    # ONNX Runtime int8 by default, as Serve and the demo (spec.PAGE_READING_DEFAULT): on 300 held-out
    # IAM-OnDB lines CER 0.1097 vs 0.1106 for torch fp32 at 1.9x the lines/s on one thread
    # (bench/transcribe.py --backend-check 300, 2026-12-01); --backend torch reads exactly as torch does
    recognizer: RecognizerSpec = config.field(PAGE_READING_DEFAULT, help="how lines are read")
    workers: int = config.field(None, help="recogniser actors, one thread each (default: one per CPU of the cluster)")
    gpus_per_worker: float = config.field(0.0, help="GPUs per recogniser actor (0 = CPU)")
    lines_per_batch: int = config.field(64, help="GPU actors: lines per actor call (from several pages); CPU actors "
                                                 "read the lines of one block's pages per call")
    objects_per_block: int = config.field(4, help="input objects an actor reads per call (the pages whose lines share batches)")
    manifest_keys: int = config.field(100_000, help="URIs per manifest shard: the listing is streamed into shards of "
                                                    "this many, so the driver holds one shard, not the archive")
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
    """GPU path, task stage: URIs in; per page a header row and one row per line crop out (or one error row)."""
    pin_threads(1)  # one task per CPU
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


class PageStage(RecognizerActor):
    """CPU stage: URIs in, one finished result row per page out (:func:`result_table`).

    ``objects_per_call`` objects at a time: reads them, then :meth:`PageReader.read_many` prepares every
    page (decode, find lines, deskew, crop), recognises the lines of all their pages in one call and
    assembles each page; the page files of ``formats`` are written here, under ``output``, before the
    rows go back to the driver."""

    def __init__(self, spec, threads: int | None = 1, line_finder: str = "auto", printed_filter: str | None = None,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS, output: str | None = None, formats=(),
                 objects_per_call: int = 4):
        super().__init__(spec, threads)
        self.objects_per_call = max(1, int(objects_per_call))
        self.reader = PageReader(line_finder, printed_filter=printed_filter, max_pixels=max_pixels,
                                 model=self.spec.model)
        self.reader.finder  # noqa: B018  loaded now, not in the first call's time
        pin_threads(int(self.spec.threads or 1))  # again: the learned finder imports torch
        self.output, self.formats = output, list(formats or [])
        if self.formats and not output:
            raise ValueError("page files need an output prefix")

    def __call__(self, batch: pa.Table) -> pa.Table:
        uris = batch.column("uri").to_pylist()
        out = []
        for start in range(0, len(uris), self.objects_per_call):  # a read task may hand over more than a block
            items = []
            for uri in uris[start:start + self.objects_per_call]:
                try:
                    items.append((uri, storage.read_bytes(uri), None))
                except storage.StorageError as exc:
                    items.append((uri, None, str(exc)))
            out.append(result_table(self.reader.read_many(items, self.recognizer), self.output, self.formats))
        return pa.concat_tables(out) if out else result_table([])


class PageAssembler:
    """GPU path, driver side: gathers each page's header and line results; a page is assembled (by the
    reader) as soon as all of its lines are back."""

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


def _read_slice(shard: str, group: int, start: int, stop: int) -> list[pa.Table]:
    fs, path = storage.pyarrow_filesystem(shard)
    with fs.open_input_file(path) as f:
        return [pq.ParquetFile(f).read_row_group(group, columns=["uri"]).slice(start, stop - start)]


def read_tasks(slices: list[tuple[str, int, int, int]]) -> list:
    """Ray Data read tasks, one per manifest slice (a shard URI and a row range: no URIs)."""
    import functools

    from ray.data.block import BlockMetadata
    from ray.data.datasource import ReadTask

    return [ReadTask(functools.partial(_read_slice, *s),
                     BlockMetadata(num_rows=s[3] - s[2], size_bytes=(s[3] - s[2]) * 100, input_files=None,
                                   exec_stats=None)) for s in slices]


def manifest_dataset(manifest: Manifest, rows_per_read: int):
    """A Ray Data dataset of the manifest's URIs, one read task per ``rows_per_read`` URIs. The driver
    holds the read tasks, not the URIs. (Not ``ray.data.read_parquet``: in Ray 2.60 it lists files in
    a task of its own, which waits forever for a CPU while a fixed actor pool holds them all, and it
    reads a whole file per task.) The read fuses into the first stage."""
    import ray
    from ray.data.datasource import Datasource

    slices = manifest.slices(rows_per_read)

    class ManifestDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return manifest.todo * 100

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return read_tasks(slices)

    return ray.data.read_datasource(ManifestDatasource(), override_num_blocks=max(1, len(slices)))


# ------------------------------------------------------------------------------------------ the job


def run(cfg: TranscribeConfig, on_progress=print) -> Summary:
    from htr_ray.distributed.runtime import cluster_cpus, ensure_ray

    ensure_ray(cfg.address)
    started = time.time()
    formats = parse_formats(cfg.formats)  # a wrong format fails here, before any work
    summary = Summary()
    removed = clean_uncommitted(cfg.output)
    if removed:
        log.info("removed %d uncommitted JSONL parts of an interrupted run", removed)
    if remove_manifests(cfg.output):
        log.info("removed the manifest of an interrupted run")
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    done = DoneIndex(list_parts(cfg.output))
    manifest = write_manifest(cfg.input, cfg.output, run_id, done, cfg.manifest_keys)
    try:
        summary.inputs, summary.not_scans = manifest.scans, manifest.others
        summary.skipped_done = manifest.scans - manifest.todo
        summary.objects = manifest.todo
        summary.workers = max(1, int(cfg.workers or cluster_cpus() or 1))
        on_progress(f"transcribe: {manifest.scans} scans under {cfg.input} ({summary.skipped_done} already done, "
                    f"{manifest.todo} to do, {manifest.others} other files ignored)")
        if manifest.todo:
            _execute(cfg, manifest, run_id, summary, formats, on_progress)
    finally:
        remove_manifests(cfg.output)
    summary.seconds = time.time() - started
    storage.write_text(storage.join(cfg.output, "_summary.json"),
                       json.dumps({"run": summary.as_dict(), "output": output_counts(cfg.output), "input": cfg.input,
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


def _execute(cfg: TranscribeConfig, manifest: Manifest, run_id: str, summary: Summary, formats: list[str],
             on_progress) -> None:
    import ray

    spec = actor_spec(cfg)
    gpu = cfg.gpus_per_worker > 0
    per_block = max(1, int(cfg.objects_per_block))
    # Read tasks of --objects-per-block URIs while the run is small (about 16 per worker), growing to a
    # manifest row group (1,000) for large ones: the driver holds one small read task per that many URIs.
    # The read is fused into the first stage: an actor call takes one read task's URIs.
    rows_per_read = max(per_block, min(MANIFEST_ROWS_PER_GROUP, -(-manifest.todo // (summary.workers * 16))))
    ds = manifest_dataset(manifest, rows_per_read)
    todo = manifest.todo
    finder = {"line_finder": cfg.line_finder, "printed_filter": _filter_uri(cfg.printed_filter),
              "max_pixels": cfg.max_pixels}
    if gpu:
        # CPU tasks prepare; an autoscaling pool of GPU actors reads the crops that come through the object
        # store, --lines-per-batch a call; the driver assembles pages
        ds = ds.map_batches(prepare_stage, batch_size=None, batch_format="pyarrow", num_cpus=1, fn_kwargs=finder)
        ds = ds.map_batches(RecognizerActor, fn_constructor_kwargs={"spec": spec.as_dict(), "threads": spec.threads or 1},
                            batch_size=max(1, int(cfg.lines_per_batch)), batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=summary.workers),
                            num_gpus=cfg.gpus_per_worker)
    else:
        # one actor per core, each reading --objects-per-block objects at a time into page rows; a fixed
        # pool keeps every core busy from the start. No batch size: a call is one read task (with a batch
        # size Ray Data no longer fuses the read into the actors and runs it as tasks that need a CPU the
        # pool holds)
        ds = ds.map_batches(PageStage, batch_size=None, batch_format="pyarrow", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=summary.workers),
                            fn_constructor_kwargs={"spec": spec.as_dict(), "threads": spec.threads or 1,
                                                   "output": cfg.output, "formats": formats,
                                                   "objects_per_call": per_block, **finder})
    assembler = PageAssembler(cfg.recognizer.model) if gpu else None
    writer = PartWriter(cfg.output, run_id)
    totals = {"errors": Counter(), "stages": Counter()}
    last_flush = last_report = time.time()

    def take(table: pa.Table) -> None:
        c = page_counts(table)
        summary.pages += c["rows"]
        summary.pages_ok += c["ok"]
        summary.lines += c["lines"]
        summary.pages_without_text += c["without_text"]
        summary.format_files += int(pc.sum(table.column("_files")).as_py() or 0) if table.num_rows else 0
        totals["errors"].update(c["errors_by_kind"])
        totals["stages"].update(c["stages"])
        writer.add(table)

    def assemble(batch: pa.Table) -> pa.Table:  # GPU path: line rows -> the pages they complete
        done = [r for r in map(assembler.add, batch.to_pylist()) if r is not None]
        return result_table(done, cfg.output, formats)

    t_start = time.time()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        take(assemble(batch) if gpu else batch)
        if not summary.first_batch_seconds and summary.pages:
            summary.first_batch_seconds, summary.first_batch_pages = round(time.time() - t_start, 3), summary.pages
        now = time.time()
        if writer.ready_rows >= cfg.flush_pages or now - last_flush >= cfg.flush_seconds:
            writer.flush()
            last_flush = now
        if now - last_report >= cfg.progress_seconds:
            on_progress(f"  {summary.pages} pages done ({todo} files to do), {summary.lines} lines, "
                        f"{sum(totals['errors'].values())} errors")
            last_report = now
    if assembler is not None and assembler.incomplete():  # cannot happen unless a row went missing: an error row, not a gap
        lost = []
        for uri, page in assembler.incomplete():
            log.error("%s page %d: not all of its lines came back", uri, page)
            header = assembler.headers.get((uri, page))
            lost.append(res.PageResult.failed(uri, "incomplete", "not all of the page's lines came back from the "
                                              "recognisers", page, header.pages if header else 1, cfg.recognizer.model))
        take(result_table(lost))
    for uri, got, expected in writer.release_pending():  # cannot happen unless a page row went missing
        log.error("object %s: got %d of %d pages", uri, got, expected)
    writer.flush()
    summary.parts_written = writer.count
    summary.errors_by_kind = dict(totals["errors"])
    summary.stage_seconds = {k: round(v, 4) for k, v in totals["stages"].items()}
