"""Models, charset and checkpoints: shapes and contracts, growth on new characters, and checkpoints
that load in a fresh process (local and on the S3 test server) with nothing but their directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from htr_ray.models import checkpoint
from htr_ray.io import images, storage
from htr_ray.models.charset import Charset, UnknownCharacter
from htr_ray.models import available, build_model, grow_output

REPO = Path(__file__).resolve().parents[1]


def test_charset_indices_follow_the_ctc_convention():
    cs = Charset.from_texts(["hello", "world"])
    assert cs.as_string() == "dehlorw"
    assert cs.num_ctc_classes == 8
    assert cs.encode("old") == [5, 4, 1]  # class k >= 1 is chars[k - 1]
    assert cs.decode([0, 5, 0, 4, 1]) == "old"
    with pytest.raises(UnknownCharacter):
        cs.encode("x")
    assert cs.encode("ox", unknown="skip") == [5]
    assert Charset.from_json(cs.to_json()) == cs


def test_charset_growth_keeps_old_indices():
    cs = Charset("abc")
    grown, added = cs.extended(["cab", "dace", "e"])
    assert added == ["d", "e"]
    assert grown.as_string() == "abcde"
    assert [grown.encode(c) for c in "abc"] == [cs.encode(c) for c in "abc"]
    same, none = grown.extended(["abc"])
    assert same is grown and none == []


def test_classifier_labels_are_whole_strings():
    cs = Charset.from_texts(["7", "1", "7", "宪"], whole_labels=True)
    assert list(cs) == ["1", "7", "宪"]
    assert cs.index("宪") == 2


@pytest.mark.parametrize("name", ["crnn_small", "crnn_medium", "crnn_large"])
def test_line_models_map_widths_to_frames(name):
    model = build_model(name, num_classes=11).eval()
    h = model.input_height
    lines = [np.random.rand(h, w).astype(np.float32) for w in (37, 120, 203)]
    x, widths = images.pad_batch(lines)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert out.shape == (3, x.shape[3] // model.width_stride, 11)
    lengths = model.output_lengths(widths)
    assert lengths.tolist() == [37 // 4, 120 // 4, 203 // 4]
    assert model.architecture == name and model.params["num_classes"] == 11


def test_char_models_classify_normalized_characters():
    for name in ("char_cnn", "char_cnn_hanzi"):
        model = build_model(name, num_classes=21).eval()
        s = model.input_size
        x = images.normalize_char(np.full((50, 40), 255, np.uint8), s)
        with torch.no_grad():
            assert model(torch.from_numpy(x)[None, None]).shape == (1, 21)
    assert {"crnn_small", "crnn_large", "char_cnn"} <= set(available())
    with pytest.raises(KeyError):
        build_model("no_such_model", num_classes=3)


def test_grow_output_keeps_trained_rows():
    model = build_model("crnn_small", num_classes=5).eval()
    x = torch.rand(2, 1, model.input_height, 64)
    with torch.no_grad():
        before = model(x)
        grow_output(model, 8)
        after = model(x)
    assert after.shape[-1] == 8 and model.params["num_classes"] == 8
    assert torch.allclose(before, after[..., :5], atol=1e-6)
    with pytest.raises(ValueError):
        grow_output(model, 4)


def test_line_model_exports_to_onnx_with_dynamic_width(tmp_path):
    onnx = pytest.importorskip("onnxruntime")
    model = build_model("crnn_small", num_classes=20).eval()
    h = model.input_height
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.rand(1, 1, h, 96), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n", 3: "w"}, "logits": {0: "n", 1: "t"}}, dynamo=False)
    sess = onnx.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 1, h, 160)
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3


def _save_trained_like(uri: str) -> tuple[torch.nn.Module, Charset]:
    cs = Charset("abc xyz")
    model = build_model("crnn_small", num_classes=cs.num_ctc_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    checkpoint.save(uri, model, {"charset": cs.to_json(), "metrics": {"score": 0.5, "cer": 0.5}, "epoch": 3,
                                 "data": {"train": ["s3://x/y"]}, "command": "python jobs/train.py --demo"})
    return model, cs


LOAD_IN_FRESH_PROCESS = r"""
import json, sys
import numpy as np, torch
from htr_ray.models import checkpoint
from htr_ray.io import images
model, meta = checkpoint.load(sys.argv[1])
h = meta["input"]["height"]
x, widths = images.pad_batch([np.linspace(0, 1, h * 80, dtype=np.float32).reshape(h, 80)])
with torch.no_grad():
    out = model(torch.from_numpy(x))
print(json.dumps({"arch": meta["architecture"], "charset": "".join(meta["charset"]), "sum": float(out.sum()),
                  "epoch": meta["epoch"], "fn": meta["input"]["function"]}))
"""


def _expected_sum(model, h):
    x, _ = images.pad_batch([np.linspace(0, 1, h * 80, dtype=np.float32).reshape(h, 80)])
    with torch.no_grad():
        return float(model(torch.from_numpy(x)).sum())


def test_checkpoint_loads_in_a_fresh_process_from_its_directory_alone(tmp_path):
    uri = str(tmp_path / "ckpt")
    model, cs = _save_trained_like(uri)
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["format"] == checkpoint.FORMAT and meta["params"]["num_classes"] == cs.num_ctc_classes
    assert meta["input"]["height"] == model.input_height and meta["command"].startswith("python jobs/train.py")
    # weights load with weights_only=True (no pickled code)
    torch.load(tmp_path / "ckpt" / "weights.pt", weights_only=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, uri], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["arch"] == "crnn_small" and got["charset"] == cs.as_string() and got["epoch"] == 3
    assert got["fn"] == "htr_ray.io.images.normalize_line"
    assert got["sum"] == pytest.approx(_expected_sum(model, model.input_height), rel=1e-5)


def test_checkpoint_on_s3_round_trips(s3_bucket):
    uri = f"{s3_bucket}/models/line"
    model, cs = _save_trained_like(uri)
    assert checkpoint.is_checkpoint(uri)
    loaded, meta = checkpoint.load(uri)
    assert "".join(meta["charset"]) == cs.as_string()
    assert _expected_sum(loaded, loaded.input_height) == pytest.approx(_expected_sum(model, model.input_height), rel=1e-6)
    local = storage.parse(checkpoint.to_local_dir(uri)).path
    assert os.path.exists(os.path.join(local, "model.json"))


def test_shipped_models_load_and_describe_themselves():
    shipped = sorted(p.parent for p in (REPO / "models").glob("*/model.json"))
    if not shipped:
        pytest.skip("no shipped models yet")
    for d in shipped:
        model, meta = checkpoint.load(str(d))
        trainer = {"word_kind": "python -m htr_ray.training.printed_filter",
                   "line_finder": "python -m htr_ray.training.line_finder"}.get(meta["kind"], "python jobs/train.py")
        assert meta["metrics"] and meta["command"].startswith(trainer), d
        assert (d / "weights.pt").stat().st_size < 8 * 2**20, d
        n = len(meta["charset"]) + (1 if meta["kind"] == "line" else 0)
        out = model.head.out_channels if meta["kind"] == "line_finder" else model.classifier.out_features
        assert out == n
