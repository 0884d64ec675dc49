"""Run an ingest: plan a format into chunks, read each chunk into shards, count everything.

Small inputs are read in this process; large ones (more chunks than ``parallel_min_chunks``) are
read by Ray Data tasks across the cluster, each chunk writing its own part files. Either way the
result is the same set of shards and an :class:`IngestReport`, also written as ``<output>/_ingest.json``
(errors included), so that count in = written + errors can be checked after the fact.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from htr_ray.io import storage
from htr_ray.data.datasets import IngestError, get_format
from htr_ray.io.shards import DEFAULT_ROWS_PER_SHARD, ShardWriter

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    format: str
    input: str
    output: str
    read: int = 0  # records seen: written + errors
    written: dict[str, int] = field(default_factory=dict)  # per split
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    parallel: bool = False

    @property
    def total_written(self) -> int:
        return sum(self.written.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def add_errors(self, errors: list[dict]) -> None:
        for e in errors:
            self.errors_by_kind[e["kind"]] = self.errors_by_kind.get(e["kind"], 0) + 1
        self.errors.extend(errors)

    def as_dict(self) -> dict:
        return {
            "format": self.format, "input": self.input, "output": self.output, "read": self.read,
            "written": self.written, "total_written": self.total_written, "errors_by_kind": self.errors_by_kind,
            "total_errors": self.total_errors, "seconds": round(self.seconds, 2), "parallel": self.parallel,
            "files": len(self.files), "errors": self.errors,
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"ingest {self.format}: {self.input} -> {self.output}",
            f"  read {self.read} records in {self.seconds:.1f}s ({'Ray Data' if self.parallel else 'one process'})",
            f"  written {self.total_written}: " + ", ".join(f"{k} {v}" for k, v in sorted(self.written.items())),
            f"  errors {self.total_errors}" + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors_by_kind.items())) if self.errors_by_kind else ""),
        ]
        for e in self.errors[:10]:
            lines.append(f"    {e['kind']} at {e['where']}: {e['message']}")
        if len(self.errors) > 10:
            lines.append(f"    ... {len(self.errors) - 10} more in {storage.join(self.output, '_ingest.json')}")
        return lines


def ingest_chunk(format_name: str, chunk: dict, index: int, output: str) -> dict:
    """Read one chunk and write its shards (one part file per split, numbered ``index``).
    Returns counts and errors as plain data (it crosses process boundaries)."""
    fmt = get_format(format_name)
    writer = ShardWriter(output, rows_per_shard=10**9, first_index=index)
    errors: list[dict] = []
    read = 0
    for item in fmt.read(chunk):
        read += 1
        if isinstance(item, IngestError):
            errors.append(item.as_dict())
        else:
            writer.add(item)
    written = writer.close()
    return {"read": read, "written": written, "errors": errors, "files": writer.files}


def run_ingest(format_name: str, input_uri: str, output: str, chunk_size: int = DEFAULT_ROWS_PER_SHARD,
               val_percent: int | None = None, parallel: bool | None = None, parallel_min_chunks: int = 3,
               address: str | None = None) -> IngestReport:
    fmt = get_format(format_name)
    started = time.time()
    vp = fmt.default_val_percent if val_percent is None else val_percent
    chunks, plan_errors = fmt.plan(input_uri, chunk_size, vp)
    report = IngestReport(format_name, input_uri, output)
    report.add_errors([e.as_dict() for e in plan_errors])
    report.read += len(plan_errors)
    use_ray = parallel if parallel is not None else len(chunks) >= parallel_min_chunks
    results = _run_with_ray(format_name, chunks, output, address) if use_ray and chunks else \
        [ingest_chunk(format_name, c, i, output) for i, c in enumerate(chunks)]
    report.parallel = bool(use_ray and chunks)
    for r in results:
        report.read += r["read"]
        for split, n in r["written"].items():
            report.written[split] = report.written.get(split, 0) + n
        report.add_errors(r["errors"])
        report.files.extend(r["files"])
    report.seconds = time.time() - started
    storage.write_text(storage.join(output, "_ingest.json"), json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
    log.info("ingest %s done: %d read, %d written, %d errors", format_name, report.read, report.total_written, report.total_errors)
    return report


def _run_with_ray(format_name: str, chunks: list[dict], output: str, address: str | None = None) -> list[dict]:
    """One Ray Data row per chunk; each task reads its chunk and writes its own part files."""
    from htr_ray.distributed.runtime import ensure_ray

    ray = ensure_ray(address)
    items = [{"index": i, "chunk": json.dumps(c)} for i, c in enumerate(chunks)]

    def work(row: dict) -> dict:
        result = ingest_chunk(format_name, json.loads(row["chunk"]), int(row["index"]), output)
        return {"result": json.dumps(result)}

    ds = ray.data.from_items(items, override_num_blocks=len(items)).map(work)
    return [json.loads(r["result"]) for r in ds.take_all()]
