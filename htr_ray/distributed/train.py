"""Ray Train shell around the core loop (:func:`htr_ray.training.loop.fit`).

``run_ray(cfg)`` builds the training data as Ray Data datasets from the shard URIs (read with
``ray.data.read_parquet`` through :func:`htr_ray.io.storage.pyarrow_filesystem`, so S3 on any endpoint
works), mixes several sources by weight into one dataset, and starts a ``TorchTrainer`` with
``cfg.workers`` data-parallel workers. Each worker reads its part with
``ray.train.get_dataset_shard("train")``, runs the same loop as ``--local`` (DDP via
``ray.train.torch.prepare_model``) and calls ``ray.train.report`` every epoch on every rank; rank 0
attaches the self-describing checkpoint directory. Ray keeps the best ``cfg.keep`` checkpoints by
validation score (CER, or 1 - accuracy), ``FailureConfig(max_failures)`` replaces a dead worker and
restarts from the latest checkpoint, and starting the same run (same ``--name`` and
``--storage-path``) again resumes from it (Ray Train V2: ``ray.train.get_checkpoint()``).

Before anything starts, :func:`plan_resources` checks that the cluster can host the workers *and* the
data side: when the epoch samples its sources (``--epoch-size``/``--weights``: ``random_sample`` runs as
Ray Data tasks while the workers train), one CPU is kept free for those tasks, if need be by giving the
workers a fraction of a CPU each; a cluster too small even for that is refused with a message that says
what to change. (Without it, ``ray start --head --num-cpus 2`` + ``--workers 2`` hung: the two workers
held both CPUs and the data tasks never ran.)

With ``--pack`` (a training pack folder, :mod:`htr_ray.training.pack`: lines already normalised at the
model's height, augmented as batches on the device) no Ray Data is used: every worker loads the pack
(the folder must be readable on every node: a shared or copied path), draws the same epoch as a
``--local`` run would and trains on its rank's share of it. No line is decoded or augmented one at a
time, so both cores of a 2-core machine train (docs/training.md, Throughput).

Test hook: with ``HTR_TEST_CRASH_EPOCH=N`` and ``HTR_TEST_CRASH_MARKER=<path>`` in the workers'
environment, rank 1 (or 0 in a one-worker run) kills its own process once at the start of epoch N
(the marker file makes it happen only once).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Iterator

import torch

from htr_ray.io import storage
from htr_ray.training.loop import Context, TrainConfig, fit, kind_of, load_rows, mixing_plan, record_test, shards

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["id", "image", "text"]


# ------------------------------------------------------------------------------------------ driver


def read_dataset(uri: str, split: str):
    """A Ray dataset of (id, image, text) rows: Parquet shards by URI, or an IAM-style folder with
    labels.tsv (read here and handed over in memory; small)."""
    import ray

    if shards.list_shards(uri, split):
        fs, path = storage.pyarrow_filesystem(uri)
        return ray.data.read_parquet(path.rstrip("/") + "/" + split, filesystem=fs, columns=TRAIN_COLUMNS,
                                     file_extensions=["parquet"])
    rows = load_rows(uri, split)
    return ray.data.from_items(rows)


def mixed_dataset(datasets: list, sizes: list[int], weights: list[float], epoch_size: int):
    """One dataset drawing ``mixing_plan`` samples from each source per epoch (random_sample is
    re-drawn each time the dataset is iterated, i.e. every epoch). Returns (dataset, plan, lazy):
    ``lazy`` when the dataset still has operations (the samplers) that run as Ray Data tasks during
    training, which then need CPU of their own."""
    plan = mixing_plan(sizes, weights, epoch_size)
    parts = []
    for ds, size, n in zip(datasets, sizes, plan):
        if n <= 0 or size <= 0:
            continue
        frac = n / size
        whole = int(frac)
        parts.extend([ds] * whole)
        if frac - whole > 1e-6:
            parts.append(ds.random_sample(frac - whole))
    if not parts:
        raise ValueError("no training data")
    lazy = any(all(p is not d for d in datasets) for p in parts)
    out = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    return out, plan, lazy


DATA_CPUS = 1.0  # kept free for Ray Data's tasks while the workers train, when the epoch needs any
MIN_CPUS_PER_WORKER = 0.25  # below this a worker's reservation no longer means anything


class ClusterTooSmall(RuntimeError):
    """The cluster cannot host the training workers and the data side; the message says what to change."""


def cluster_capacity() -> tuple[dict, bool]:
    """(resources, autoscaling): the most an autoscaling cluster can grow to (its autoscaler's node
    groups, as Ray Train itself checks), else what the cluster's nodes have now (``ray start`` nodes)."""
    import ray

    try:
        from ray._private import state

        most = state.state.get_max_resources_from_cluster_config()
    except Exception:  # not exposed by this Ray, or no autoscaler: a fixed cluster
        most = None
    if most:
        return {k: float(v) for k, v in most.items()}, True
    return dict(ray.cluster_resources()), False


def plan_resources(workers: int, cpus_per_worker: float, use_gpu: bool, capacity: dict,
                   data_cpus: float = DATA_CPUS) -> tuple[float, str | None]:
    """CPUs to reserve per worker so that ``workers`` of them plus ``data_cpus`` fit in ``capacity``,
    and a note when that is less than asked for. Raises :class:`ClusterTooSmall` when they cannot fit."""
    cpus = float(capacity.get("CPU", 0.0))
    if workers < 1:
        raise ClusterTooSmall(f"--workers {workers}: at least one training worker is needed")
    if use_gpu:
        gpus = float(capacity.get("GPU", 0.0))
        if gpus < workers:
            raise ClusterTooSmall(f"--workers {workers} --use-gpu needs {workers} GPUs, and the cluster has "
                                  f"{gpus:g}: use --workers {int(gpus)} (or --no-use-gpu), or add GPU nodes")
    if workers * cpus_per_worker + data_cpus <= cpus + 1e-9:
        return cpus_per_worker, None
    what = (f"{workers} workers x {cpus_per_worker:g} CPU" + (f" + {data_cpus:g} CPU for the Ray Data tasks that "
            "sample each epoch" if data_cpus else "") + f" need {workers * cpus_per_worker + data_cpus:g} CPUs, "
            f"and the cluster has {cpus:g}")
    shrunk = (cpus - data_cpus) / workers
    if data_cpus and shrunk >= MIN_CPUS_PER_WORKER:
        shrunk = int(shrunk * 100) / 100
        return shrunk, (f"{what}: reserving {shrunk:g} CPU per worker so that {data_cpus:g} CPU stays free for "
                        f"the data side (--cpus-per-worker {shrunk:g} says so yourself; more CPUs: add nodes)")
    most = int((cpus - data_cpus) // max(cpus_per_worker, MIN_CPUS_PER_WORKER)) if cpus > data_cpus else 0
    fix = f"use --workers {most}" if most >= 1 else f"give the cluster at least {workers * MIN_CPUS_PER_WORKER + data_cpus:g} CPUs"
    raise ClusterTooSmall(f"{what}: {fix}, lower --cpus-per-worker, or add nodes")


def _storage(cfg: TrainConfig):
    """(storage_path, storage_filesystem) for RunConfig. S3 goes through our pyarrow filesystem, which
    carries the endpoint and region (a non-AWS endpoint without a region makes pyarrow ask AWS)."""
    if storage.is_s3(cfg.storage_path):
        fs, path = storage.pyarrow_filesystem(cfg.storage_path)
        return path, fs
    return storage.parse(cfg.storage_path).path, None


def _checkpoint_uri(cfg: TrainConfig, ckpt) -> str:
    return f"s3://{ckpt.path}" if storage.is_s3(cfg.storage_path) else ckpt.path


def run_ray(cfg: TrainConfig) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from htr_ray.distributed.runtime import ensure_ray

    ensure_ray()  # inside `ray job submit` this joins the job's cluster
    capacity, autoscaling = cluster_capacity()
    if cfg.use_gpu:  # refuse before reading any data
        plan_resources(cfg.workers, cfg.cpus_per_worker, True, capacity, data_cpus=0)
    model_kind = kind_of(cfg.model, cfg.params())
    labels: set = set()
    datasets: dict = {}
    if cfg.pack:  # every worker reads the pack itself; here only its texts (the charset) and epoch size
        from htr_ray.training.pack import pack_context

        cfg = dataclasses.replace(cfg, pack=os.path.abspath(cfg.pack))  # workers run in folders of their own
        packed = pack_context(cfg)
        for src in packed.sources:
            for r in src:
                labels.update(r["text"])
        plan, lazy = packed.epoch_plan(), False
        log.info("training pack %s: %s samples per epoch", cfg.pack, plan)
    else:
        parts, sizes = [], []
        for uri in cfg.data:
            ds = read_dataset(uri, cfg.train_split).materialize()
            parts.append(ds)
            sizes.append(ds.count())
            for batch in ds.select_columns(["text"]).iter_batches(batch_size=4096, batch_format="pyarrow"):
                for t in batch.column("text").to_pylist():
                    if model_kind == "line":
                        labels.update(t)
                    else:
                        labels.add(t)
        train_ds, plan, lazy = mixed_dataset(parts, sizes, cfg.weights, cfg.epoch_size)
        datasets = {"train": train_ds}
        log.info("training data: %s -> %s samples per epoch", dict(zip(cfg.data, sizes)), plan)
    cpus_per_worker, note = plan_resources(cfg.workers, cfg.cpus_per_worker, cfg.use_gpu, capacity,
                                           data_cpus=DATA_CPUS if lazy else 0.0)
    if note:
        log.warning("%s%s", "cluster (at most, autoscaling): " if autoscaling else "cluster: ", note)
    resources = {"CPU": cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    path, fs = _storage(cfg)
    run_config = RunConfig(
        name=cfg.name, storage_path=path, storage_filesystem=fs,
        checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep), checkpoint_score_attribute="score",
                                           checkpoint_score_order="min"),
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        # the workers see the driver's storage settings and test hooks (AWS_*, HTR_*), as a job would
        worker_runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "HTR_"))}},
    )
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": dataclasses.asdict(cfg), "texts": sorted(labels), "planned": int(sum(plan))},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=run_config,
        datasets=datasets,
    )
    result = trainer.fit()
    summary: dict = {"stopped": "done", "metrics": result.metrics}
    best = None
    if result.best_checkpoints:
        ckpt, metrics = min(result.best_checkpoints, key=lambda cm: cm[1].get("score", float("inf")))
        best = _checkpoint_uri(cfg, ckpt)
        summary["best_score"] = metrics.get("score")
    elif result.checkpoint is not None:
        best = _checkpoint_uri(cfg, result.checkpoint)
    summary["best_checkpoint"] = best
    if result.error:
        raise result.error
    if best:
        summary["test"] = record_test(best, cfg)
    return summary


# ------------------------------------------------------------------------------------------ worker


class RayContext(Context):
    def __init__(self, cfg: TrainConfig):
        import ray.train

        super().__init__(cfg)
        tc = ray.train.get_context()
        self.rank = tc.get_world_rank()
        self.world_size = tc.get_world_size()
        self._packed = None
        if cfg.pack:
            from htr_ray.training.pack import pack_context

            self._packed = pack_context(cfg)
            self.pack_info = self._packed.pack_info
            self._val = self._packed.val_rows()
        else:
            self._val = [r for u in (cfg.val_data or cfg.data[:1]) for r in load_rows(u, cfg.val_split)]
        self._tmp = tempfile.mkdtemp(prefix="htr-train-")

    def device(self) -> torch.device:
        if self.cfg.use_gpu:
            import ray.train.torch

            return ray.train.torch.get_device()
        return torch.device("cpu")

    def prepare_model(self, model):
        if self.world_size == 1:
            return model
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False)

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world_size == 1:
            return t
        import torch.distributed as dist

        dev = self.device()
        x = t.to(dev) if dev.type == "cuda" else t.clone()
        if dev.type == "cuda" and x.dtype == torch.float64:
            x = x.float()
        dist.all_reduce(x, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
        return x.to(t.dtype).cpu()

    def _maybe_crash(self, epoch: int) -> None:
        at = os.environ.get("HTR_TEST_CRASH_EPOCH")
        marker = os.environ.get("HTR_TEST_CRASH_MARKER")
        victim = 1 if self.world_size > 1 else 0
        if at and marker and int(at) == epoch and self.rank == victim and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(f"rank {self.rank} killed itself at epoch {epoch}\n")
            log.warning("test hook: rank %d exits at epoch %d", self.rank, epoch)
            os._exit(1)

    def train_rows(self, epoch: int) -> Iterator[dict]:
        import ray.train

        self._maybe_crash(epoch)
        if self._packed is not None:  # every rank draws the same epoch (same seed) and takes its share
            yield from self._packed.train_rows(epoch)[self.rank::self.world_size]
            return
        shard = ray.train.get_dataset_shard("train")
        for batch in shard.iter_batches(batch_size=256, batch_format="numpy",
                                        local_shuffle_buffer_size=1024,
                                        local_shuffle_seed=self.cfg.seed * 1000 + epoch * 10 + self.rank):
            ids, imgs, texts = batch["id"], batch["image"], batch["text"]
            for i in range(len(texts)):
                yield {"id": str(ids[i]), "image": bytes(imgs[i]), "text": str(texts[i])}

    def val_rows(self) -> list[dict]:
        return self._val

    def latest_checkpoint(self) -> str | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        target = tempfile.mkdtemp(prefix="resume-", dir=self._tmp)
        return ckpt.to_directory(target)

    def report(self, metrics: dict, save_fn) -> None:
        import ray.train
        from ray.train import Checkpoint

        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        with tempfile.TemporaryDirectory(dir=self._tmp) as d:
            ckpt = None
            if self.rank == 0:
                save_fn(d)
                ckpt = Checkpoint.from_directory(d)
            ray.train.report(clean, checkpoint=ckpt, checkpoint_dir_name=f"epoch-{metrics['epoch']:04d}")


def _train_worker(config: dict) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig(**config["cfg"])
    ctx = RayContext(cfg)
    fit(cfg, ctx, texts=config["texts"], planned_samples=config["planned"])
