"""Bulk transcription of every scan under a prefix, with Ray Data (htr_ray.distributed.transcribe).

    python jobs/transcribe.py --input s3://archive/scans/ --output s3://archive/transcripts/ --formats alto,page
    ray job submit --working-dir . -- python jobs/transcribe.py --input ... --output ... --workers 8
"""

from __future__ import annotations

import json
import logging
import sys

from htr_ray import config
from htr_ray.distributed.transcribe import TranscribeConfig, run


def build_parser():
    return config.build_parser(TranscribeConfig)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(TranscribeConfig, argv)
    s = run(cfg).as_dict()
    print(f"transcribed {s['objects']} files ({s['skipped_done']} already done): {s['pages']} pages, "
          f"{s['lines']} lines, {s['errors']} errors in {s['seconds']:.1f}s "
          f"({s['pages_per_s']} pages/s, {s['lines_per_s']} lines/s, {s['workers']} recogniser actors)")
    if s["errors_by_kind"]:
        print("errors by kind: " + json.dumps(s["errors_by_kind"]))
    if s["format_files"]:
        print(f"{s['format_files']} page files ({cfg.formats})")
    print(f"results under {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
