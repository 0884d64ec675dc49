"""Evaluate a checkpoint on sample shards and write a report.

    python jobs/evaluate.py --model models/iam_line --data work/shards/iam --report work/reports/iam
    python jobs/evaluate.py --model s3://bucket/models/casia --data s3://bucket/shards/casia --split test \
        --report s3://bucket/reports/casia
    python jobs/evaluate.py --model models/rx_line --data work/shards/rx --decoder beam \
        --lexicon htr_ray/lexicons/drugs.txt --lm work/lm_rx.json

Line models: CER/WER overall, per domain and per source, top character confusions, CER per confidence
decile, error gallery. Classifiers: accuracy, per-class P/R/F1, confusion-matrix PNG, error gallery.
Large data (or --ray) runs with Ray Data across the cluster (an actor pool of recognisers).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from htr_ray import config  # noqa: E402


@dataclass
class EvaluateConfig:
    """Evaluate a line recogniser or character classifier checkpoint on Parquet sample shards."""

    model: str = config.field(help="checkpoint directory URI (local path or s3://...)")
    data: str = config.field(help="sample shards root URI (holds <split>/part-*.parquet)")
    split: str = config.field("test", help="which split to evaluate")
    report: str = config.field(None, help="report folder URI: metrics.json, PNGs, predictions.jsonl")
    decoder: str = config.field("greedy", help="CTC decoder: greedy or beam (line models)")
    lexicon: str = config.field(None, help="word list file (URI), one word per line: steers beam search")
    lm: str = config.field(None, help="character n-gram LM JSON (python -m htr_ray.lm) for beam search")
    beam_width: int = config.field(16, help="beam width")
    lm_weight: float = config.field(0.5, help="weight of the LM log-probability in the beam score")
    oov_penalty: float = config.field(None, help="beam score penalty per word not in the lexicon (default: 2.0 with an LM, 4.0 without)")
    char_bonus: float = config.field(None, help="beam score bonus per character (default: 2.0 with an LM, 0.5 with a lexicon only)")
    lexicon_mode: str = config.field("favour", help="favour or constrain (only lexicon words)")
    limit: int = config.field(None, help="evaluate at most this many samples (rows)")
    ray: bool = config.field(None, help="use Ray Data (default: when there are at least --ray-threshold rows)")
    ray_threshold: int = config.field(20000, help="row count from which Ray Data is used automatically")
    actors: int = config.field(2, help="recogniser actors in the Ray Data pool")
    batch_size: int = config.field(128, help="rows per Ray Data batch")
    gallery: int = config.field(24, help="how many worst samples the error gallery shows")
    device: str = config.field("cpu", help="torch device for in-process evaluation")
    width_bucket: int = config.field(32, help="line models: pad each line's width up to a multiple of this (pixels); lines of one bucket share a batch")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(EvaluateConfig, argv)
    from htr_ray.evaluation.evaluate import evaluate, summary_lines

    beam = {"beam_width": cfg.beam_width, "lm_weight": cfg.lm_weight, "oov_penalty": cfg.oov_penalty,
            "char_bonus": cfg.char_bonus, "lexicon_mode": cfg.lexicon_mode}
    res = evaluate(cfg.model, cfg.data, split=cfg.split, report=cfg.report, decoder=cfg.decoder, lexicon=cfg.lexicon,
                   lm=cfg.lm, limit=cfg.limit, use_ray=cfg.ray, ray_threshold=cfg.ray_threshold, actors=cfg.actors,
                   batch_size=cfg.batch_size, gallery=cfg.gallery, beam_options=beam, device=cfg.device,
                   width_bucket=cfg.width_bucket)
    print("\n".join(summary_lines(res.metrics)))
    assert res.metrics["samples"] == len(res.predictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
