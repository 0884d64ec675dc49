"""Evaluate a checkpoint on sample shards and write a report.

    python jobs/evaluate.py --model models/en_line_crnn_small --data work/shards/iam --report work/reports/iam
    python jobs/evaluate.py --model s3://bucket/models/casia --data s3://bucket/shards/casia --split test \
        --report s3://bucket/reports/casia
    python jobs/evaluate.py --model models/en_line_crnn_small --data work/shards/iam --decoder beam \
        --lexicon my_words.txt          # beam search; with the LM the model names in its model.json, if any

The recognizer flags (--model, --decoder, --lexicon, --lm, beam options, --width-bucket ...) are the
:class:`~htr_ray.recognition.spec.RecognizerSpec` every job and the Serve app take; those left unset take
the model's own ``model.json`` "decoding" defaults (decoder, LM, beam options), as everywhere else.

Line models: CER/WER overall, per domain and per source, top character confusions, CER per confidence
decile, error gallery. Classifiers: accuracy, per-class P/R/F1, confusion-matrix PNG, error gallery.
Large data (or --ray) runs with Ray Data across the cluster (an actor pool of recognisers).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from htr_ray import config
from htr_ray.recognition.spec import RecognizerSpec


@dataclass
class EvaluateConfig:
    """Evaluate a line recogniser or character classifier checkpoint on Parquet sample shards."""

    data: str = config.field(help="sample shards root URI (holds <split>/part-*.parquet)")
    recognizer: RecognizerSpec = config.field(RecognizerSpec(model=None),
                                              help="the model and how it decodes (unset: the model's own defaults)")
    split: str = config.field("test", help="which split to evaluate")
    report: str = config.field(None, help="report folder URI: metrics.json, PNGs, predictions.jsonl")
    limit: int = config.field(None, help="evaluate at most this many samples (rows)")
    ray: bool = config.field(None, help="use Ray Data (default: when there are at least --ray-threshold rows)")
    ray_threshold: int = config.field(20000, help="row count from which Ray Data is used automatically")
    actors: int = config.field(2, help="recogniser actors in the Ray Data pool")
    rows_per_batch: int = config.field(128, help="rows per Ray Data batch")
    gallery: int = config.field(24, help="how many worst samples the error gallery shows")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(EvaluateConfig, argv)
    spec = cfg.recognizer
    if not spec.model:
        print("--model is required (a checkpoint or exported model URI)", file=sys.stderr)
        return 2
    from htr_ray.evaluation.evaluate import evaluate, summary_lines

    res = evaluate(spec, cfg.data, split=cfg.split, report=cfg.report, limit=cfg.limit, use_ray=cfg.ray,
                   ray_threshold=cfg.ray_threshold, actors=cfg.actors, batch_size=cfg.rows_per_batch,
                   gallery=cfg.gallery)
    print("\n".join(summary_lines(res.metrics)))
    assert res.metrics["samples"] == len(res.predictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
