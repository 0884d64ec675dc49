"""Bulk transcription of every scan under a prefix, with Ray Data.

    python jobs/transcribe.py --input s3://archive/scans/ --output s3://archive/transcripts/
    ray job submit --working-dir . -- python jobs/transcribe.py --input ... --output ... --workers 8
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without install

from htr_ray import config  # noqa: E402
from htr_ray.layout.printed import DEFAULT_FILTER  # noqa: E402
from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL, TranscribeConfigCore, run  # noqa: E402


@dataclass
class TranscribeConfig:
    """Read every scan (PNG, JPEG, TIFF with all pages, BMP, WebP) under --input, find the handwritten
    lines, recognise them in a pool of model actors and write one result row per page under --output
    (parts/*.parquet + .jsonl, _summary.json). Rerunning skips pages already done."""

    input: str = config.field(help="URI prefix of the scans (local folder or s3://bucket/prefix)")
    output: str = config.field(help="URI prefix for the results")
    model: str = config.field(DEFAULT_LINE_MODEL, help="line recognizer checkpoint URI")
    workers: int = config.field(2, help="recognizer actors (each loads the model once)")
    gpus_per_worker: float = config.field(0.0, help="GPUs per recognizer actor (0 = CPU)")
    batch_size: int = config.field(8, help="pages per recognizer call (their lines are sorted by width and batched)")
    decoder: str = config.field("greedy", help="CTC decoder: greedy or beam")
    lexicon: str = config.field(None, help="word list URI for beam search (e.g. drug names)")
    lm: str = config.field(None, help="character n-gram LM (JSON) URI for beam search")
    flush_pages: int = config.field(200, help="commit a result part after this many pages (a killed run redoes at most this many)")
    flush_seconds: float = config.field(20.0, help="... or after this many seconds")
    max_pixels: int = config.field(100_000_000, help="refuse images with more pixels than this (decompression bombs)")
    printed_filter: str = config.field(DEFAULT_FILTER, help="printed-text filter checkpoint URI: form print is read, flagged and kept out of the page text ('none': read lines whole)")
    address: str = config.field(None, help="Ray address (default: the cluster this job runs on, or a new local one)")


def build_parser():
    return config.build_parser(TranscribeConfig)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(TranscribeConfig, argv)
    import ray

    ray.init(address=cfg.address, logging_level=logging.WARNING)
    core = TranscribeConfigCore(**{k: v for k, v in config.to_dict(cfg).items() if k != "address"})
    if core.printed_filter in ("", "none"):
        core.printed_filter = None
    summary = run(core)
    s = summary.as_dict()
    print(f"transcribed {s['objects']} files ({s['skipped_done']} already done): {s['pages']} pages, "
          f"{s['lines']} lines, {s['errors']} errors in {s['seconds']:.1f}s "
          f"({s['pages_per_s']} pages/s, {s['lines_per_s']} lines/s)")
    if s["errors_by_kind"]:
        print("errors by kind: " + json.dumps(s["errors_by_kind"]))
    print(f"results under {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
