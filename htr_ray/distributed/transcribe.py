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

import io
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
from htr_ray.pages.reader import PageReader, PreparedPage, is_scan
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL, PAGE_READING_DEFAULT, RecognizerSpec

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LINE_MODEL", "TranscribeConfig", "Summary", "run", "committed_rows", "prepare_stage", "PageStage"]

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


# -------------------------------------------------------------------------------------- the output

# What a stage hands the driver: the result row and, beside it, its JSONL line and how many page files
# were written for it (dropped before the Parquet commit).
JOB_SCHEMA = pa.schema(list(res.RESULT_SCHEMA) + [pa.field("_json", pa.string()), pa.field("_files", pa.int32())])


def parts_prefix(output: str) -> str:
    return storage.join(output, "parts")


def list_parts(output: str, suffixes=(".parquet",)) -> list[str]:
    try:
        return storage.list_uris(parts_prefix(output), suffixes=suffixes)
    except storage.StorageError:  # no output yet
        return []


def committed_rows(output: str, columns=("uri", "page", "pages", "status", "error_kind")) -> list[dict]:
    """Every committed result row as dicts (small outputs: demos, tests, benchmarks; the job itself
    never holds all rows)."""
    rows = []
    for uri in list_parts(output):
        rows.extend(pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=list(columns)).to_pylist())
    return rows


def clean_uncommitted(output: str) -> int:
    """Delete JSONL parts whose Parquet twin was never written (the driver died in between)."""
    listed = list_parts(output, suffixes=None)
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


def write_page_files(output: str, result: res.PageResult, formats: list[str]) -> int:
    """The page's file in each format, under its deterministic name; none for an error page (its reason
    is in the results). Returns the number written."""
    if not formats or not result.ok:
        return 0
    from htr_ray.pages import formats as fmt_module

    for fmt in formats:
        storage.write_bytes(format_file_uri(output, result.uri, result.page, fmt), fmt_module.render(result, fmt))
    return len(formats)


def result_table(results: list[res.PageResult], output: str | None = None, formats=()) -> pa.Table:
    """Page results -> the rows a stage hands the driver (:data:`JOB_SCHEMA`), their page files
    written first."""
    rows, lines, files = [], [], []
    for r in results:
        row = r.to_row()
        files.append(write_page_files(output, r, list(formats)) if formats else 0)
        rows.append(row)
        lines.append(json.dumps(row, ensure_ascii=False))
    table = pa.Table.from_pylist(rows, schema=res.RESULT_SCHEMA)
    return table.append_column(JOB_SCHEMA.field("_json"), pa.array(lines, pa.string())) \
        .append_column(JOB_SCHEMA.field("_files"), pa.array(files, pa.int32()))


def page_counts(table: pa.Table) -> dict:
    """Counts over result rows, in Arrow: rows, objects (rows of page 0: every object has exactly one),
    ok, lines and pages without lines (ok pages), errors by kind, and summed stage seconds of ok pages
    (for the ones the table holds)."""
    n = table.num_rows
    out = {"rows": n, "objects": 0, "ok": 0, "lines": 0, "without_text": 0, "errors_by_kind": {}, "stages": {}}
    if not n:
        return out
    names = table.column_names
    if "page" in names:
        out["objects"] = int(pc.sum(pc.equal(table.column("page"), 0)).as_py() or 0)
    ok = pc.fill_null(pc.equal(table.column("status"), res.OK), False)
    out["ok"] = int(pc.sum(ok).as_py() or 0)
    if "error_kind" in names and out["ok"] < n:
        counts = pc.value_counts(table.column("error_kind").filter(pc.invert(ok))).to_pylist()
        out["errors_by_kind"] = {c["values"] or "": int(c["counts"]) for c in counts}
    if "lines" in names and out["ok"]:
        per_page = pc.fill_null(pc.list_value_length(table.column("lines").filter(ok)), 0)
        out["lines"] = int(pc.sum(per_page).as_py() or 0)
        out["without_text"] = int(pc.sum(pc.equal(per_page, 0)).as_py() or 0)
    if "timings" in names and out["ok"]:
        flat = table.select(["timings"]).filter(ok).flatten()
        out["stages"] = {c.split(".", 1)[1]: float(pc.sum(flat.column(c)).as_py() or 0.0) for c in flat.column_names}
    return out


class PartWriter:
    """Buffers result rows (Arrow tables of :data:`JOB_SCHEMA`) until their object is whole, and commits
    whole objects as part files: JSONL, then Parquet (the commit)."""

    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id
        self.pending: dict[str, list[pa.Table]] = {}  # rows of objects not yet whole
        self.pending_rows: Counter = Counter()
        self.ready: list[pa.Table] = []
        self.ready_rows = 0
        self.count = 0

    def _ready(self, table: pa.Table) -> None:
        self.ready.append(table)
        self.ready_rows += table.num_rows

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        table = table.select(JOB_SCHEMA.names).cast(JOB_SCHEMA)
        uris, pages = table.column("uri").to_pylist(), table.column("pages").to_pylist()
        seen: Counter = Counter(uris)
        expect = dict(zip(uris, pages))
        held = [u for u, n in seen.items() if u in self.pending or n < max(1, int(expect[u] or 1))]
        if not held:  # the usual case: a stage returns whole objects
            self._ready(table)
            return
        held_set = set(held)
        whole = [i for i, u in enumerate(uris) if u not in held_set]
        if whole:
            self._ready(table.take(whole))
        for u in held:
            self.pending.setdefault(u, []).append(table.take([i for i, v in enumerate(uris) if v == u]))
            self.pending_rows[u] += seen[u]
            if self.pending_rows[u] >= max(1, int(expect[u] or 1)):
                self._ready(pa.concat_tables(self.pending.pop(u)).sort_by("page"))
                del self.pending_rows[u]

    def release_pending(self) -> list[tuple[str, int, int]]:
        """Objects still missing pages (uri, pages got, pages expected), moved to the next part: for the
        end of a run, where they can only mean a row went missing; reported, never dropped."""
        out = []
        for u, tables in self.pending.items():
            t = pa.concat_tables(tables).sort_by("page")
            out.append((u, t.num_rows, int(t.column("pages")[0].as_py() or 1)))
            self._ready(t)
        self.pending.clear()
        self.pending_rows.clear()
        return out

    def flush(self) -> int:
        if not self.ready:
            return 0
        table = pa.concat_tables(self.ready)
        base = storage.join(parts_prefix(self.output), f"part-{self.run_id}-{self.count:05d}")
        storage.write_text(base + ".jsonl", "\n".join(table.column("_json").to_pylist()) + "\n")
        sink = io.BytesIO()
        pq.write_table(table.select(res.RESULT_SCHEMA.names), sink, compression="zstd")
        storage.write_bytes(base + ".parquet", sink.getvalue())  # the commit
        n = table.num_rows
        self.ready, self.ready_rows, self.count = [], 0, self.count + 1
        return n


# ------------------------------------------------------------------------------ the listing, streamed

MANIFEST_ROWS_PER_GROUP = 1000  # URIs per row group of a manifest shard: the most one read task takes


class DoneIndex:
    """Which URIs the committed parts already hold, without holding them: each part's URI range (the
    min and max of its ``uri`` column, from its Parquet footer statistics). :meth:`remove_done` reads the
    ``uri`` column of only the parts whose range overlaps a shard's, so memory is one shard's worth of
    done URIs plus two strings a part. Listing in key order (S3) keeps the overlaps few."""

    def __init__(self, parts: list[str], threads: int = 16):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, min(threads, len(parts) or 1))) as pool:
            ranges = [r for r in pool.map(self._range, parts) if r is not None]
        self.parts = [p for p, _, _ in ranges]
        self.lo = pa.array([lo for _, lo, _ in ranges], pa.string())
        self.hi = pa.array([hi for _, _, hi in ranges], pa.string())
        self.parts_read = 0

    @staticmethod
    def _range(part: str) -> tuple[str, str, str] | None:
        fs, path = storage.pyarrow_filesystem(part)
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
            if not meta.num_rows:
                return None
            col = meta.schema.to_arrow_schema().get_field_index("uri")
            lo = hi = None
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(col).statistics
                if st is None or not st.has_min_max:  # no statistics: the column itself
                    uris = pq.ParquetFile(f).read(columns=["uri"]).column("uri")
                    mm = pc.min_max(uris).as_py()
                    return part, mm["min"], mm["max"]
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        return part, lo, hi

    def __len__(self) -> int:
        return len(self.parts)

    def remove_done(self, uris: pa.Array) -> pa.Array:
        """``uris`` without those a committed part holds."""
        if not len(self.parts) or not len(uris):
            return uris
        mm = pc.min_max(uris).as_py()
        overlap = pc.and_(pc.less_equal(self.lo, mm["max"]), pc.greater_equal(self.hi, mm["min"]))
        hits = [self.parts[i] for i in pc.indices_nonzero(overlap).to_pylist()]
        if not hits:
            return uris
        self.parts_read += len(hits)
        done = pa.chunked_array([pq.read_table(io.BytesIO(storage.read_bytes(p)), columns=["uri"]).column("uri")
                                 for p in hits]).combine_chunks()
        return uris.filter(pc.invert(pc.is_in(uris, value_set=done)))


@dataclass
class Manifest:
    """The URIs a run reads, in Parquet shards under ``<output>/_manifest/<run>/``: what the dataset
    reads instead of a list on the driver."""

    shards: list[tuple[str, list[int]]]  # (shard URI, rows of each row group)
    scans: int = 0  # scans listed
    others: int = 0  # files that are not scans
    todo: int = 0  # scans not yet done: rows of the shards

    def slices(self, rows_per_read: int) -> list[tuple[str, int, int, int]]:
        """(shard, row group, first row, end row) of every read task."""
        out = []
        for uri, groups in self.shards:
            for g, n in enumerate(groups):
                out += [(uri, g, a, min(a + rows_per_read, n)) for a in range(0, n, rows_per_read)]
        return out


def manifest_prefix(output: str, run_id: str | None = None) -> str:
    return storage.join(output, "_manifest", run_id) if run_id else storage.join(output, "_manifest")


def write_manifest(input_prefix: str, output: str, run_id: str, done: DoneIndex,
                   shard_keys: int = 100_000) -> Manifest:
    """Stream the listing (:func:`storage.iter_uris`), drop what ``done`` holds, and write the rest as
    manifest shards of up to ``shard_keys`` URIs: memory is one shard, whatever the archive's size."""
    man = Manifest(shards=[])
    buf: list[str] = []

    def flush() -> None:
        if not buf:
            return
        todo = done.remove_done(pa.array(buf, pa.string()))
        buf.clear()
        if not len(todo):
            return
        uri = storage.join(manifest_prefix(output, run_id), f"shard-{len(man.shards):05d}.parquet")
        sink = io.BytesIO()
        pq.write_table(pa.table({"uri": todo}), sink, row_group_size=MANIFEST_ROWS_PER_GROUP, compression="zstd")
        storage.write_bytes(uri, sink.getvalue())
        n = len(todo)
        man.shards.append((uri, [min(MANIFEST_ROWS_PER_GROUP, n - a) for a in range(0, n, MANIFEST_ROWS_PER_GROUP)]))
        man.todo += n

    for uri in storage.iter_uris(input_prefix):
        if not is_scan(uri):
            man.others += 1
            continue
        man.scans += 1
        buf.append(uri)
        if len(buf) >= shard_keys:
            flush()
    flush()
    return man


def remove_manifests(output: str) -> int:
    """Delete manifest shards (this run's when it ends; an interrupted run's at the next start)."""
    try:
        shards = storage.list_uris(manifest_prefix(output))
    except storage.StorageError:
        return 0
    for u in shards:
        storage.delete(u)
    return len(shards)


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


def output_counts(output: str, threads: int = 16) -> dict:
    """Totals over every committed part (rows, objects, ok, errors by kind), counted part by part in
    Arrow: memory is one part, not the output."""
    from concurrent.futures import ThreadPoolExecutor

    def one(part: str) -> dict:
        t = pq.read_table(io.BytesIO(storage.read_bytes(part)), columns=["page", "status", "error_kind"])
        return page_counts(t)

    total = {"rows": 0, "objects": 0, "ok": 0, "errors_by_kind": Counter()}
    parts = list_parts(output)
    with ThreadPoolExecutor(max(1, min(threads, len(parts) or 1))) as pool:
        for c in pool.map(one, parts):
            for k in ("rows", "objects", "ok"):
                total[k] += c[k]
            total["errors_by_kind"].update(c["errors_by_kind"])
    total["errors_by_kind"] = dict(total["errors_by_kind"])
    return total


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
