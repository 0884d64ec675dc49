"""Generate synthetic handwriting shards (text lines or whole pages) in parallel with Ray Data.

    python jobs/make_dataset.py --kind lines --n 100000 --output s3://bucket/synth/lines --preview docs/preview_lines.png
    python jobs/make_dataset.py --kind pages --n 300 --output work/synth/pages --domains cheque prescription
"""

from __future__ import annotations

import json
import logging
import sys

from htr_ray import config
from htr_ray.distributed.generation import MakeDatasetConfig, generate


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(MakeDatasetConfig, argv)
    report = generate(cfg)
    print(f"{cfg.kind}: {report['total_written']}/{report['requested']} written to {cfg.output} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(report['written'].items()))}) in {report['seconds']}s, "
          f"{report['samples_per_second']}/s, {report['tasks']} tasks, {len(report['errors'])} errors")
    for e in report["errors"][:10]:
        print("  error:", json.dumps(e))
    if report.get("preview"):
        print("preview:", report["preview"])
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
