"""The README's main command: the service end to end on one machine, on a local Ray started here.

Today it ingests the three real handwriting sets in ../shared/data into shards under --workdir and
prints what it read; it grows into the full demo (generate an archive, transcribe it, score it).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from htr_ray import config  # noqa: E402
from htr_ray.ingest import run_ingest  # noqa: E402


@dataclass
class DemoConfig:
    """Run htr-ray end to end on local folders with a local Ray."""

    data: str = config.field(str(REPO.parent / "shared" / "data"), help="folder holding mnist/, casia_hwdb_21/, iam_ondb_lines/")
    workdir: str = config.field(str(REPO / "work" / "demo"), help="where shards and results are written")


REAL_SETS = (("mnist", "mnist", 70_000), ("casia-png", "casia_hwdb_21", 13_828), ("iam", "iam_ondb_lines", 10_194))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = config.from_args(DemoConfig, argv)
    import ray

    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ok = True
    for fmt, folder, expected in REAL_SETS:
        report = run_ingest(fmt, os.path.join(cfg.data, folder), os.path.join(cfg.workdir, "shards", folder))
        print("\n".join(report.summary_lines()))
        if report.read != expected:
            print(f"  !! expected {expected} records from {folder}")
            ok = False
    ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
