"""The training job's configuration: one dataclass, whose fields become ``jobs/train.py``'s flags."""

from __future__ import annotations

import json
from dataclasses import dataclass

from htr_ray import config


@dataclass
class TrainConfig:
    """Train a recognizer (CTC line model or character classifier) from sample shards."""

    model: str = config.field("crnn_small", help="architecture from htr_ray.models (crnn_small, crnn_medium, crnn_large, crnn_small_v2, crnn_medium_v2, char_cnn, char_cnn_hanzi)")
    model_params: str = config.field("", help="JSON object overriding architecture parameters, e.g. '{\"lstm_hidden\": 192}'")
    data: list[str] = config.field([], help="training data URIs: shard roots (<root>/<split>/part-*.parquet) or IAM-style folders with labels.tsv")
    pack: str = config.field("", help="a training pack folder (python -m htr_ray.training.pack) instead of --data: its IAM-OnDB train-form lines, generated lines and page crops train (mixed by --weights, in that order), its val-form lines validate; batches are augmented on the training device (augment_torch); no test split in it. With Ray Train every worker reads the folder, so it must be on every node")
    weights: list[float] = config.field([], help="mixing weight per --data URI, or per pack source (iam, synth) with --pack (default: proportional to size)")
    train_split: str = config.field("train", help="split of --data used for training")
    val_data: list[str] = config.field([], help="validation data URIs (default: the first --data URI)")
    val_split: str = config.field("val", help="split used for validation / early stopping")
    test_split: str = config.field("test", help="split of the validation URIs evaluated once at the end with the best checkpoint ('' = none)")
    epochs: int = config.field(30, help="maximum number of epochs")
    epoch_size: int = config.field(0, help="training samples per epoch over all workers (0: one pass over the data, or over the first source when weights are given)")
    batch_size: int = config.field(32, help="batch size per worker")
    lr: float = config.field(2e-3, help="peak learning rate (AdamW)")
    weight_decay: float = config.field(0.01, help="AdamW weight decay")
    warmup: float = config.field(0.05, help="fraction of the planned steps spent warming the learning rate up")
    clip: float = config.field(5.0, help="gradient norm clipping (0 = off)")
    patience: int = config.field(6, help="early stopping: epochs without validation improvement")
    augment: float = config.field(1.0, help="augmentation strength (0 = none)")
    distort: float = config.field(0.0, help="line models: fraction of training lines given a grid (elastic) distortion")
    shortcut_weight: float = config.field(0.1, help="line models with a CTC shortcut head (crnn_*_v2): weight of its loss (0 = off)")
    label_smoothing: float = config.field(0.1, help="classifiers only: label smoothing")
    output: str = config.field("work/runs/train", help="--local only: checkpoint folder URI (local or s3://); rerunning resumes from it")
    keep: int = config.field(3, help="checkpoints kept (the best by validation score, plus the latest)")
    init: str = config.field("", help="checkpoint URI to fine-tune from (its charset grows with new characters)")
    threads: int = config.field(2, help="torch intra-op threads per worker (CPU)")
    loader_threads: int = config.field(2, help="threads decoding + augmenting batches per worker (when no loader processes)")
    loader_processes: int = config.field(0, help="worker processes decoding + augmenting training batches (0: --loader-threads threads; -1: 1 process with --local, threads on Ray workers)")
    channels_last: bool = config.field(False, help="CPU: convolutions in channels-last memory format")
    compile: bool = config.field(False, help="torch.compile the model (dynamic shapes); on 2 CPU cores it is no faster (docs/training.md)")
    device: str = config.field("auto", help="auto, cpu, cuda")
    amp: bool = config.field(True, help="mixed precision on GPU")
    seed: int = config.field(0, help="random seed")
    max_val: int = config.field(0, help="validate on at most this many samples (0 = all)")
    time_limit: float = config.field(0.0, help="minutes; stop when the next epoch would pass it, or inside an epoch when it is used up (that part-epoch is validated and saved) (0 = none)")
    # Ray Train shell (htr_ray.training); ignored with --local
    local: bool = config.field(False, help="run the loop in this process without Ray")
    workers: int = config.field(2, help="Ray Train workers (data-parallel)")
    use_gpu: bool = config.field(False, help="one GPU per worker")
    cpus_per_worker: float = config.field(1.0, help="CPUs reserved per worker")
    storage_path: str = config.field("work/ray_results", help="Ray Train storage path (local or s3://); with --name, rerunning resumes")
    name: str = config.field("htr-train", help="Ray Train run name")
    max_failures: int = config.field(2, help="worker failures tolerated (training restarts from the last checkpoint)")
    command: str = config.field("", help="(recorded in the checkpoint; filled in by jobs/train.py)")

    def params(self) -> dict:
        return json.loads(self.model_params) if self.model_params else {}

