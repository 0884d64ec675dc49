"""Line recognizer v2 (models.crnn.CRNN2: column max-pool, CTC shortcut head), its training path and
the augmentation set (grid distortion on the OpenCV path, the torch batch set for the GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htr_ray.data import augment
from htr_ray.data.augment_torch import augment_batch
from htr_ray.io import images, shards
from htr_ray.models import build_model, checkpoint, grow_output
from htr_ray.training.loop import LocalContext, TrainConfig, fit, load_rows


@pytest.mark.parametrize("name", ["crnn_small_v2", "crnn_medium_v2"])
def test_v2_maps_widths_to_frames_and_has_a_shortcut_head(name):
    model = build_model(name, num_classes=11).eval()
    h = model.input_height
    x, widths = images.pad_batch([np.random.rand(h, w).astype(np.float32) for w in (37, 120, 203)])
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        main, aux = model(torch.from_numpy(x), aux=True)
    assert out.shape == (3, x.shape[3] // 4, 11) and aux.shape == out.shape
    assert torch.equal(out, main)
    assert model.output_lengths(widths).tolist() == [37 // 4, 120 // 4, 203 // 4]


def test_medium_v2_checkpoint_fits_in_16_mib(tmp_path):
    model = build_model("crnn_medium_v2", num_classes=80)
    checkpoint.save(str(tmp_path / "m"), model, {"charset": [chr(32 + i) for i in range(79)]})
    assert (tmp_path / "m" / "weights.pt").stat().st_size <= 16 * 2**20


def test_growing_the_charset_grows_the_shortcut_head():
    model = build_model("crnn_small_v2", num_classes=5)
    before = model.shortcut.weight.detach().clone()
    grow_output(model, 8)
    model.grow_shortcut(8)
    assert model.classifier.out_features == 8 and model.shortcut.out_channels == 8
    assert torch.equal(model.shortcut.weight[:5], before)


def test_v2_trains_with_the_shortcut_loss_and_its_checkpoint_loads(tmp_path, shared_data):
    """Also the opt-in data path: decoding + augmentation in a worker process, channels-last convolutions."""
    rows = [r for r in load_rows(str(shared_data / "iam_ondb_lines"), "train") if len(r["text"]) <= 8][:16]
    root = str(tmp_path / "data")
    shards.write_samples(root, [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam", split=s)
                                for s in ("train", "val") for r in rows])
    cfg = TrainConfig(model="crnn_small_v2", data=[root], epochs=2, batch_size=8, threads=1, loader_processes=1, channels_last=True,
                      loader_threads=1, output=str(tmp_path / "run"), test_split="", distort=0.5, shortcut_weight=0.1)
    summary = fit(cfg, LocalContext(cfg))
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in summary["history"])
    model, meta = checkpoint.load(str(tmp_path / "run" / "epoch-0002"))
    assert meta["architecture"] == "crnn_small_v2" and meta["input"]["height"] == 48


def test_grid_distortion_moves_ink_and_keeps_the_shape():
    g = np.full((60, 300), 255, np.uint8)
    g[20:40, 10:290:7] = 0
    d = augment.grid_distort(g, np.random.default_rng(0), amplitude=4, cell=48)
    assert d.shape == g.shape and d.dtype == np.uint8
    assert 0 < (d != g).mean() < 0.5
    assert augment.grid_distort(g, np.random.default_rng(0), amplitude=0, cell=48) is g


def test_torch_batch_augmentation_keeps_paper_right_of_each_line_and_is_seeded():
    x = torch.zeros(4, 1, 48, 400)
    x[:, :, 15:30, 10:300:9] = 1
    widths = torch.tensor([310, 300, 200, 400])
    a = augment_batch(x, widths, torch.Generator().manual_seed(1))
    b = augment_batch(x, widths, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float(a[2, :, :, 200:].abs().sum()) == 0
    assert float((a - x).abs().mean()) > 0
    assert torch.equal(augment_batch(x, widths, strength=0.0), x)
