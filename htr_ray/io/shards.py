"""Sample shards: the Parquet format of every training and evaluation set (DESIGN.md).

One row per sample: ``id``, ``image`` (PNG bytes), ``text`` (transcription or class label), ``source``,
``domain``, ``split``, and for whole pages ``lines`` (a list of ``{text, bbox}``, bbox = x0, y0, x1, y1
in pixels). Files live at ``<root>/<split>/part-NNNNN.parquet``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from htr_ray.io import storage

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DOMAINS = ("cheque", "prescription", "homework", "digits", "hanzi", "generic")

LINE_TYPE = pa.struct([("text", pa.string()), ("bbox", pa.list_(pa.int32()))])
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.binary()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("split", pa.string()),
        ("lines", pa.list_(LINE_TYPE)),
    ]
)
DEFAULT_ROWS_PER_SHARD = 5000


@dataclass
class Sample:
    id: str
    image: bytes
    text: str
    source: str
    domain: str = "generic"
    split: str = "train"
    lines: list[dict] | None = None  # pages only: [{"text": str, "bbox": [x0, y0, x1, y1]}]

    def as_row(self) -> dict:
        return {
            "id": self.id,
            "image": self.image,
            "text": self.text,
            "source": self.source,
            "domain": self.domain,
            "split": self.split,
            "lines": self.lines,
        }


def shard_uri(root: str, split: str, index: int) -> str:
    return storage.join(root, split, f"part-{index:05d}.parquet")


def rows_to_table(rows: Sequence[dict]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # PNG bytes do not compress further; the small string columns do.
    pq.write_table(table, sink, compression="zstd", use_dictionary=["source", "domain", "split"])
    return sink.getvalue()


def write_shard(uri: str, samples: Sequence[Sample | dict]) -> int:
    """Write one Parquet shard atomically; returns the number of rows."""
    rows = [s.as_row() if isinstance(s, Sample) else s for s in samples]
    storage.write_bytes(uri, table_bytes(rows_to_table(rows)))
    return len(rows)


class ShardWriter:
    """Buffers samples per split and writes ``part-NNNNN.parquet`` files of ``rows_per_shard`` rows.

    ``first_index`` lets parallel writers use disjoint part numbers (worker k of n starts at k * big).
    """

    def __init__(self, root: str, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, first_index: int = 0):
        self.root = root
        self.rows_per_shard = rows_per_shard
        self._buffers: dict[str, list[Sample]] = {}
        self._next_index: dict[str, int] = {}
        self._first_index = first_index
        self.written: dict[str, int] = {}
        self.files: list[str] = []

    def add(self, sample: Sample) -> None:
        if sample.split not in SPLITS:
            raise ValueError(f"sample {sample.id}: unknown split {sample.split!r} (expected one of {SPLITS})")
        buf = self._buffers.setdefault(sample.split, [])
        buf.append(sample)
        if len(buf) >= self.rows_per_shard:
            self._flush(sample.split)

    def _flush(self, split: str) -> None:
        buf = self._buffers.get(split)
        if not buf:
            return
        index = self._next_index.get(split, self._first_index)
        uri = shard_uri(self.root, split, index)
        write_shard(uri, buf)
        self._next_index[split] = index + 1
        self.written[split] = self.written.get(split, 0) + len(buf)
        self.files.append(uri)
        self._buffers[split] = []

    def close(self) -> dict[str, int]:
        for split in list(self._buffers):
            self._flush(split)
        return dict(self.written)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_samples(root: str, samples: Iterable[Sample], rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> dict[str, int]:
    with ShardWriter(root, rows_per_shard) as writer:
        for s in samples:
            writer.add(s)
    return writer.written


# ------------------------------------------------------------------------------------------ reading


def list_shards(root: str, split: str | None = None) -> list[str]:
    """Shard URIs under ``root`` (one split, or all of them)."""
    prefix = storage.join(root, split) if split else root
    try:
        return storage.list_uris(prefix, suffixes=(".parquet",))
    except storage.StorageError:
        return []


def read_table(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=list(columns) if columns else None)


def iter_rows(root: str, split: str | None = None, columns: Sequence[str] | None = None) -> Iterator[dict]:
    for uri in list_shards(root, split):
        yield from read_table(uri, columns).to_pylist()


def iter_samples(root: str, split: str | None = None) -> Iterator[Sample]:
    for row in iter_rows(root, split):
        yield Sample(**{k: row.get(k) for k in SCHEMA.names})


def count_rows(root: str, split: str | None = None) -> int:
    total = 0
    for uri in list_shards(root, split):
        total += pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows
    return total


def summary(root: str) -> dict[str, dict]:
    """Rows per split, source and domain: what a dataset holds, without decoding an image."""
    out: dict[str, dict] = {}
    for split in SPLITS:
        rows = list(iter_rows(root, split, columns=["source", "domain"]))
        if not rows:
            continue
        by_source: dict[str, int] = {}
        by_domain: dict[str, int] = {}
        for r in rows:
            by_source[r["source"]] = by_source.get(r["source"], 0) + 1
            by_domain[r["domain"]] = by_domain.get(r["domain"], 0) + 1
        out[split] = {"rows": len(rows), "sources": by_source, "domains": by_domain}
    return out
