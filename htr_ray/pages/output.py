"""The bulk job's output and to-do list on storage, exactly once; no Ray here.

- **Result parts**: :class:`PartWriter` commits result rows (:data:`JOB_SCHEMA`: the
  :data:`~htr_ray.pages.results.RESULT_SCHEMA` row plus its JSONL line and page-file count) in part
  files ``<output>/parts/part-<run>-<n>`` that hold whole input objects only: JSONL first, then Parquet,
  the commit. :func:`clean_uncommitted` removes a JSONL part whose Parquet twin was never written.
- **Page files** (``--formats``): :func:`write_page_files`, one per page under a deterministic name,
  written before their part is committed, so a rerun overwrites rather than duplicates.
- **The to-do list**: :func:`write_manifest` streams the input listing into Parquet shards under
  ``<output>/_manifest/<run>/``, minus what :class:`DoneIndex` (each committed part's URI range, from
  its Parquet footer) says is done: memory is one shard, whatever the archive's size.
- **Counts**: :func:`page_counts` and :func:`output_counts` count in Arrow, part by part.

:mod:`htr_ray.distributed.transcribe` runs the job on Ray Data around these.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from htr_ray.io import storage
from htr_ray.pages import results as res
from htr_ray.pages.reader import is_scan


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
