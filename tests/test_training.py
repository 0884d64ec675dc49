"""Training on real handwriting: a learning check, resume, fine-tuning with new characters, Ray Train
with S3 as both data source and storage, and a worker killed mid-run.

The data is a tiny slice of the real IAM-OnDB lines (the shortest ones, so steps are cheap), written
as sample shards like every other data set of the project.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import torch

from htr_ray.models import checkpoint
from htr_ray.io import shards, storage
from htr_ray.models.charset import Charset
from htr_ray.training.loop import LocalContext, TrainConfig, fit, load_rows, run_local

pytestmark = pytest.mark.timeout(1200)  # Ray start-up on a loaded 2-core machine is slow


def _short_lines(shared_data, split: str, n: int, max_chars: int = 12) -> list[shards.Sample]:
    rows = [r for r in load_rows(str(shared_data / "iam_ondb_lines"), split) if len(r["text"]) <= max_chars]
    rows.sort(key=lambda r: r["id"])
    return [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split=split)
            for r in rows[:n]]


@pytest.fixture(scope="module")
def tiny_iam(shared_data, tmp_path_factory) -> str:
    """48 short real lines as 'train' and the same lines again as 'val' (a memorisation check: a
    model that learns nothing stays at CER 1.0), 24 others as 'test'."""
    root = str(tmp_path_factory.mktemp("tiny_iam"))
    train = _short_lines(shared_data, "train", 48)
    val = [shards.Sample(**{**s.__dict__, "split": "val"}) for s in train]
    test = _short_lines(shared_data, "test", 24)
    shards.write_samples(root, train + val + test)
    return root


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(model="crnn_small", data=[data], epochs=3, batch_size=8, lr=3e-3, warmup=0.05, augment=0.0,
                threads=1, loader_threads=1, output=str(tmp_path / "run"), patience=50, test_split="")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_words(shared_data, tmp_path_factory) -> str:
    """32 of the shortest real lines (one or two words), train = val: cheap enough to get a CTC model
    past its all-blank plateau within a test's budget."""
    root = str(tmp_path_factory.mktemp("tiny_words"))
    train = _short_lines(shared_data, "train", 32, max_chars=7)
    val = [shards.Sample(**{**s.__dict__, "split": "val"}) for s in train]
    shards.write_samples(root, train + val)
    return root


def test_loss_falls_and_cer_improves_on_real_lines(tmp_path, tiny_words):
    cfg = _cfg(tmp_path, tiny_words, epochs=30, lr=3e-3, batch_size=4)
    summary = fit(cfg, LocalContext(cfg))
    h = summary["history"]
    assert len(h) == 30
    assert h[0]["val_cer"] >= 0.95  # an untrained CTC model emits (almost) nothing
    assert h[-1]["loss"] < 0.5 * h[0]["loss"], [e["loss"] for e in h]
    assert min(e["val_cer"] for e in h) < 0.9, [e["val_cer"] for e in h]
    assert summary["best_score"] == pytest.approx(min(e["val_cer"] for e in h), abs=1e-4)


def test_rerun_resumes_and_keeps_the_best_few(tmp_path, tiny_iam):
    cfg = _cfg(tmp_path, tiny_iam, epochs=2, keep=1, test_split="test")
    first = run_local(cfg)
    assert [e["epoch"] for e in first["history"]] == [1, 2]
    cfg.epochs = 4
    second = run_local(cfg)
    # the history continues from the checkpoint: epochs 1-2 were not trained again
    assert [e["epoch"] for e in second["history"]] == [1, 2, 3, 4]
    dirs = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("epoch-"))
    assert "epoch-0004" in dirs and len(dirs) <= 2  # best one + the latest
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    meta = checkpoint.read_meta(best["best"])
    assert meta["test_metrics"]["samples"] == shards.count_rows(tiny_iam, "test") > 0 and "cer" in meta["test_metrics"]
    assert meta["metrics"]["score"] == pytest.approx(second["best_score"])


def test_fine_tuning_grows_the_charset(tmp_path, tiny_iam):
    # a "pretrained" model that knows only some of the characters
    cs = Charset("abcdefghijklmnopqrstuvwxyz ")
    from htr_ray.models import build_model

    model = build_model("crnn_small", num_classes=cs.num_ctc_classes)
    init = str(tmp_path / "init")
    checkpoint.save(init, model, {"charset": cs.to_json(), "metrics": {"score": 1.0}, "epoch": 0})
    old_rows = model.classifier.weight.detach().clone()
    cfg = _cfg(tmp_path, tiny_iam, epochs=1, init=init, lr=1e-9, clip=0.0)
    fit(cfg, LocalContext(cfg))
    best = LocalContext(cfg).latest_checkpoint()
    tuned, meta = checkpoint.load(best)
    grown = Charset.from_json(meta["charset"])
    assert grown.as_string().startswith(cs.as_string()) and len(grown) > len(cs)
    assert {".", "T"} & set(grown.as_string())  # capitals / punctuation of the real lines were added
    assert tuned.classifier.out_features == grown.num_ctc_classes
    # old classes keep their rows (lr ~ 0: unchanged apart from rounding)
    assert torch.allclose(tuned.classifier.weight[: old_rows.shape[0]], old_rows, atol=1e-4)


@pytest.fixture
def s3_tiny(s3_bucket, tiny_iam) -> str:
    dst = f"{s3_bucket}/data/tiny_iam"
    storage.copy_tree(tiny_iam, dst)
    return dst


def test_ray_train_with_s3_data_and_storage(ray_local, s3_bucket, s3_tiny, tmp_path):
    from htr_ray.distributed.train import run_ray

    cfg = _cfg(tmp_path, s3_tiny, epochs=1, workers=2, cpus_per_worker=1, storage_path=f"{s3_bucket}/runs",
               name=f"s3run-{uuid.uuid4().hex[:6]}", keep=2, test_split="test", max_failures=0, max_val=16)
    summary = run_ray(cfg)
    best = summary["best_checkpoint"]
    assert best.startswith(f"{s3_bucket}/runs/{cfg.name}/"), best
    model, meta = checkpoint.load(best)
    assert meta["metrics"]["world_size"] == 2 and meta["data"]["train"] == [s3_tiny]
    assert meta["test_metrics"]["samples"] == shards.count_rows(s3_tiny, "test") > 0
    # the epoch's samples were split between the workers, all of them seen once
    assert meta["metrics"]["samples"] == 48
    # run again with more epochs: resumes from the latest checkpoint on S3 (epoch 2 follows 1)
    cfg.epochs = 2
    again = run_ray(cfg)
    assert again["metrics"]["epoch"] == 2
    ts = checkpoint.load_train_state(f"{s3_bucket}/runs/{cfg.name}/epoch-0002")
    assert [e["epoch"] for e in ts["history"]] == [1, 2]


def test_ray_train_workers_share_a_training_pack(ray_local, shared_data, tmp_path, monkeypatch):
    """--pack with Ray Train: no Ray Data; every worker reads the pack (given as a relative path, as a
    user types it) and trains on its share of the same epoch, all of it seen once."""
    from htr_ray.distributed.train import run_ray
    from htr_ray.training import pack

    pack.build(str(shared_data / "iam_ondb_lines"), str(tmp_path / "pack"), height=32, synth=0, limit=24, max_mib=1.0)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(model="crnn_small", pack="pack", epochs=1, batch_size=8, threads=1, workers=2, cpus_per_worker=1,
                      storage_path=str(tmp_path / "ray"), name="packrun", max_failures=0, max_val=8, test_split="")
    summary = run_ray(cfg)
    meta = checkpoint.read_meta(summary["best_checkpoint"])
    assert meta["metrics"]["world_size"] == 2
    assert meta["metrics"]["samples"] == len(pack.load(str(tmp_path / "pack")).rows("iam", "train")) == 24
    assert meta["data"]["pack"] == str(tmp_path / "pack") and meta["data"]["pack_height"] == 32
    model, _ = checkpoint.load(summary["best_checkpoint"])
    assert model.kind == "line"


def test_killed_worker_is_replaced_and_training_finishes(ray_local, tiny_iam, tmp_path, monkeypatch):
    from htr_ray.distributed.train import run_ray

    marker = tmp_path / "crashed"
    monkeypatch.setenv("HTR_TEST_CRASH_EPOCH", "2")
    monkeypatch.setenv("HTR_TEST_CRASH_MARKER", str(marker))
    cfg = _cfg(tmp_path, tiny_iam, epochs=2, workers=2, cpus_per_worker=1, storage_path=str(tmp_path / "ray"),
               name="crash", max_failures=2, max_val=16)
    summary = run_ray(cfg)
    assert marker.exists(), "the test hook did not fire"
    assert summary["metrics"]["epoch"] == 2
    # epoch 1 was not trained again after the restart: its checkpoint was restored
    meta = checkpoint.read_meta(summary["best_checkpoint"])
    ts = checkpoint.load_train_state(summary["best_checkpoint"]) or {}
    epochs = [e["epoch"] for e in ts.get("history", [])]
    assert epochs == sorted(set(epochs)) and epochs[0] == 1, epochs
    assert meta["epoch"] in (1, 2, 3)


# ---------------------------------------------------------------------------- what the cluster can host


def test_plan_resources_keeps_a_cpu_for_the_data_side_or_refuses_with_what_to_change():
    from htr_ray.distributed.train import ClusterTooSmall, plan_resources

    # room for both: unchanged
    assert plan_resources(2, 1.0, False, {"CPU": 3.0}) == (1.0, None)
    # data already in memory (no sampling tasks during training): the workers may take every CPU
    assert plan_resources(2, 1.0, False, {"CPU": 2.0}, data_cpus=0) == (1.0, None)
    # `ray start --head --num-cpus 2` + --workers 2 with a sampled epoch: half a CPU each, one left for Ray Data
    cpus, note = plan_resources(2, 1.0, False, {"CPU": 2.0})
    assert cpus == 0.5 and "1 CPU stays free for the data side" in note and "--cpus-per-worker 0.5" in note
    # too small even for that: refused, saying what to change
    with pytest.raises(ClusterTooSmall, match=r"need 9 CPUs, and the cluster has 2.5: use --workers 1"):
        plan_resources(8, 1.0, False, {"CPU": 2.5})
    with pytest.raises(ClusterTooSmall, match=r"2 workers x 1 CPU need 2 CPUs, and the cluster has 1: use --workers 1"):
        plan_resources(2, 1.0, False, {"CPU": 1.0}, data_cpus=0)
    with pytest.raises(ClusterTooSmall, match=r"needs 2 GPUs, and the cluster has 1: use --workers 1"):
        plan_resources(2, 1.0, True, {"CPU": 16.0, "GPU": 1.0})
