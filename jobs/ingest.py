"""Ingest real handwriting into sample shards.

    python jobs/ingest.py --format iam --input ../shared/data/iam_ondb_lines --output work/shards/iam
    python jobs/ingest.py --format mnist --input ../shared/data/mnist --output s3://bucket/shards/mnist
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from htr_ray import config
from htr_ray.data.datasets import FORMATS
from htr_ray.data.ingest import run_ingest


@dataclass
class IngestConfig:
    """Turn a real handwriting set (MNIST IDX, IAM-style labels.tsv, CASIA .gnt or PNG class folders,
    or a CSV/JSONL manifest) into Parquet sample shards under --output/<split>/part-NNNNN.parquet."""

    format: str = config.field(help=f"input format: one of {', '.join(FORMATS)}")
    input: str = config.field(help="input URI: a folder (mnist, iam, casia-png, casia-gnt) or a manifest file")
    output: str = config.field(help="output URI (local folder or s3://bucket/prefix) for the shards")
    chunk_size: int = config.field(5000, help="records per chunk = rows per part file")
    val_percent: int = config.field(5, help="percent of train (by document/writer where known) kept for validation")
    parallel: bool = config.field(None, help="read chunks with Ray Data (default: when there are 3+ chunks)")
    address: str = config.field(None, help="Ray cluster for --parallel (default: $RAY_ADDRESS if set, else a new local Ray)")


def build_parser():
    return config.build_parser(IngestConfig)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(IngestConfig, argv)
    report = run_ingest(cfg.format, cfg.input, cfg.output, cfg.chunk_size, cfg.val_percent, cfg.parallel,
                        address=cfg.address)
    print("\n".join(report.summary_lines()))
    assert report.read == report.total_written + report.total_errors, "count in != written + errors"
    return 0


if __name__ == "__main__":
    sys.exit(main())
