"""Train a recognizer: ``python jobs/train.py --model crnn_small --data <uri> [...]``.

With ``--local`` the core loop runs in this process (no Ray); otherwise Ray Train runs it on
``--workers`` data-parallel workers (``ray job submit -- python jobs/train.py ...`` on a cluster).
Prints per epoch the loss, validation CER/WER (or accuracy) and samples/s, and at the end the best
checkpoint's URI. Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys

from htr_ray import config
from htr_ray.training.loop import TrainConfig, run_local


def main(argv=None) -> int:
    cfg = config.from_args(TrainConfig, argv)
    if not cfg.command:
        cfg.command = "python jobs/train.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if not cfg.data and not cfg.pack:
        print("--data (or --pack) is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("ray", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if cfg.local:
        summary = run_local(cfg)
    else:
        from htr_ray.distributed.train import run_ray

        summary = run_ray(cfg)
    best = summary.get("best_checkpoint")
    print(f"stopped: {summary.get('stopped')}  best score: {summary.get('best_score')}")
    if summary.get("test"):
        print("test:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary["test"].items()}))
    print(f"best checkpoint: {best}")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
