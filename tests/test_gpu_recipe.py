"""The GPU recipe end to end on CPU, tiny: a training pack of a few dozen lines, ``scripts/train-gpu``
run as a subprocess where Ray, boto3, editdistance, OpenCV, pyarrow and Pillow cannot be imported (as on
a bare Python + torch machine), and the model folder it writes read back by the recognizer.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from htr_ray.data import labels
from htr_ray.data.synth.samples import split_of
from htr_ray.evaluation import metrics
from htr_ray.io import images, storage
from htr_ray.training import pack as packmod

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("ray", "boto3", "botocore", "editdistance", "cv2", "pyarrow", "PIL")
TINY = {"height": 32, "channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1], "lstm_hidden": 32, "lstm_layers": 1}


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory, shared_data) -> Path:
    from htr_ray.training import page_crops

    crops = tmp_path_factory.mktemp("page_crops") / "crops"
    page_crops.build(str(crops), pages=1, seed=3, kinds=("iam_ruled",))  # ~20 lines cut by the page reader
    out = tmp_path_factory.mktemp("pack") / "pack"
    packmod.build(str(shared_data / "iam_ondb_lines"), str(out), height=32, synth=6, limit=24, max_mib=1.0,
                  page_crops=[str(crops)], pages_n=8)
    return out


@pytest.fixture(scope="module")
def bare_python_env(tmp_path_factory) -> dict:
    """Environment of a subprocess in which importing any of BLOCKED fails."""
    shim = tmp_path_factory.mktemp("shim")
    (shim / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        BLOCKED = {set(BLOCKED)!r}
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked (not on the GPU machine)")
                return None
        sys.meta_path.insert(0, _Block())
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(shim), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return env


def test_shim_blocks_the_modules(bare_python_env):
    code = "import importlib\nfor m in %r:\n    try:\n        importlib.import_module(m)\n    except ImportError:\n        continue\n    raise SystemExit(m)" % (BLOCKED,)
    r = subprocess.run([sys.executable, "-c", code], env=bare_python_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pack_holds_train_and_val_forms_only(tiny_pack, shared_data):
    root = str(shared_data / "iam_ondb_lines")
    meta = json.loads((tiny_pack / packmod.META_FILE).read_text())
    assert packmod.pack_bytes(str(tiny_pack)) <= 1.0 * 2**20
    assert meta["counts"] == {"iam_train": 24, "iam_val": 24, "synth_train": 6, "synth_val": 0,
                              "pages_train": 8, "pages_val": 0}
    test_ids = {r.line_id for r in labels.read_rows(root, "test")}
    assert test_ids
    for e in meta["entries"]:
        if e["source"] == "iam":
            assert e["id"] not in test_ids
            assert labels.split_by_group(labels.form_of(e["id"])) == e["split"] != "test"
        elif e["source"] == "pages":  # cut from composed pages of train forms
            assert e["split"] == "train" and e["id"].startswith("pc-iam_ruled-")
        else:
            assert e["split"] == "train"
            assert split_of(meta["synth"]["seed"], int(e["id"].rsplit("-", 1)[1])) == "train"
    # the lines are the ones the training job reads for those splits, in the inference normalisation
    p = packmod.load(str(tiny_pack))
    val = p.rows("iam", "val")
    want = labels.read_rows(root, "val")[:24]
    assert [r["id"] for r in val] == [r.line_id for r in want]
    assert [r["text"] for r in val] == [r.text for r in want]
    gray = images.decode_gray(storage.read_bytes(want[3].image_uri()))
    np.testing.assert_array_equal(val[3]["pixels"], packmod.quantize(images.normalize_line(gray, 32), 16, meta["floor"]))


def test_pack_over_the_size_limit_is_refused(tmp_path, shared_data):
    with pytest.raises(packmod.PackError, match="over --max-mib"):
        packmod.build(str(shared_data / "iam_ondb_lines"), str(tmp_path / "p"), height=32, synth=0, limit=8, max_mib=0.001)
    assert list((tmp_path / "p").iterdir()) == []  # nothing half-written is left to be mistaken for a pack
    with pytest.raises(packmod.PackError, match="no training pack here"):
        packmod.load(str(tmp_path / "p"))


def test_train_gpu_end_to_end_without_ray_opencv_or_editdistance(tiny_pack, bare_python_env, tmp_path, shared_data):
    out, run = tmp_path / "model", tmp_path / "run"
    r = subprocess.run(
        [str(REPO / "scripts" / "train-gpu"), str(out), "--arch", "crnn_small_v2", "--pack", str(tiny_pack),
         "--run", str(run), "--minutes", "2", "--", "--epochs", "1", "--epoch-size", "0", "--batch-size", "8", "--max-val", "16",
         "--model-params", json.dumps(TINY)],
        env=bare_python_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "epoch 1/1" in r.stdout and "model in" in r.stdout
    assert {p.name for p in out.iterdir()} == {"model.json", "weights.pt", "lm.npz", "train.log"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"] == "crnn_small_v2" and meta["params"]["height"] == 32
    assert meta["data"]["pack"] == str(tiny_pack) and meta["data"]["pack_counts"]["iam_train"] == 24
    assert 0.0 <= meta["metrics"]["val_cer"] and meta["decoding"]["lm"] == "lm.npz"
    assert sum(p.stat().st_size for p in out.iterdir() if p.name != "lm.npz") < 16 * 2**20

    from htr_ray.recognition.spec import RecognizerSpec

    rec = RecognizerSpec(model=str(out)).build()
    row = labels.read_rows(str(shared_data / "iam_ondb_lines"), "test")[0]
    res = rec.recognize([images.decode_gray(storage.read_bytes(row.image_uri()))])
    assert len(res) == 1 and res[0].error is None and isinstance(res[0].text, str)
    beam = RecognizerSpec(model=str(out), decoder="beam").build()  # the LM copied beside it loads
    assert beam.recognize([images.decode_gray(storage.read_bytes(row.image_uri()))])[0].error is None


def test_train_gpu_without_a_pack_says_how_to_build_one(tmp_path, bare_python_env):
    r = subprocess.run([str(REPO / "scripts" / "train-gpu"), str(tmp_path / "m"), "--pack", str(tmp_path / "nope")],
                       env=bare_python_env, capture_output=True, text=True, timeout=300)  # a cold start on a loaded machine: the check itself is instant
    assert r.returncode == 2
    assert "no training pack" in r.stderr and "python -m htr_ray.training.pack" in r.stderr
    assert not (tmp_path / "m").exists()


def test_pack_height_must_match_the_model(tiny_pack, tmp_path):
    from htr_ray.training.config import TrainConfig

    cfg = TrainConfig(model="crnn_small_v2", pack=str(tiny_pack), local=True, output=str(tmp_path / "run"))
    with pytest.raises(packmod.PackError, match="rebuild the pack with --height 48"):
        packmod.pack_context(cfg)


def test_pure_python_edit_distance_equals_editdistance(monkeypatch):
    import editdistance

    rng = random.Random(0)
    for _ in range(3000):
        a = "".join(rng.choice("ab c\u00e9") for _ in range(rng.randint(0, 14)))
        b = "".join(rng.choice("abc d") for _ in range(rng.randint(0, 14)))
        assert metrics.levenshtein(a, b) == editdistance.eval(a, b)
        assert metrics.levenshtein(a.split(), b.split()) == editdistance.eval(a.split(), b.split())
    assert metrics.levenshtein("kitten", "sitting") == 3 == metrics.edit_distance("kitten", "sitting")
    refs = ["A MOVE to stop Mr . Gaitskell", "from nominating", ""]
    hyps = ["A MOVE to stcp Mr Gaitskell", "fron nomnating any", "x"]
    with_c = (metrics.cer(refs, hyps), metrics.wer(refs, hyps), metrics.line_report(refs, hyps))
    monkeypatch.setattr(metrics, "_editdistance", None)  # as where editdistance is not installed
    assert (metrics.cer(refs, hyps), metrics.wer(refs, hyps), metrics.line_report(refs, hyps)) == with_c


def test_the_clock_stops_training_inside_an_epoch(tiny_pack, tmp_path):
    """With --time-limit used up after the first step, the epoch ends there, is validated and saved,
    and no further epoch starts (so one slow epoch cannot run past the GPU's time)."""
    from htr_ray.training.config import TrainConfig
    from htr_ray.training.loop import fit

    cfg = TrainConfig(model="crnn_small_v2", model_params=json.dumps(TINY), pack=str(tiny_pack), local=True,
                      output=str(tmp_path / "run"), epochs=3, epoch_size=64, batch_size=8, time_limit=1e-6,
                      loader_threads=0, max_val=8, threads=1)
    ctx = packmod.pack_context(cfg)
    summary = fit(cfg, ctx)
    assert summary["stopped"] == "time_limit"
    assert [h["samples"] for h in summary["history"]] == [8]
    assert ctx.best_checkpoint() is not None


def test_autocast_dtype_is_float16_for_models_with_an_lstm():
    """cuDNN runs LSTMs in float16 under any CUDA autocast, so the recipe's CRNN2 (and every CRNN)
    must train in float16 with the gradient scaler; a model without a recurrent layer keeps bfloat16
    where the GPU has it."""
    import torch

    from htr_ray.models import build_model
    from htr_ray.training.loop import autocast_dtype

    for name in ("crnn_medium_v2", "crnn_small_v2", "crnn_small"):
        model = build_model(name, num_classes=10)
        assert autocast_dtype(model, bf16_supported=True) == torch.float16
        assert autocast_dtype(model, bf16_supported=False) == torch.float16
    conv_only = build_model("char_cnn", num_classes=10)
    assert autocast_dtype(conv_only, bf16_supported=True) == torch.bfloat16
    assert autocast_dtype(conv_only, bf16_supported=False) == torch.float16
