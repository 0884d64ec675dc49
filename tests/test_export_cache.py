"""The export cache and the torch-free ONNX path: a process that reads lines with ONNX Runtime (a Serve
replica, a bulk actor) never imports torch once the model is exported, and exports a checkpoint at most
once per content and settings (htr_ray/recognition/export.py, cached_export)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from htr_ray.data.synth.render import LineGenerator
from htr_ray.io import images
from htr_ray.recognition import export

from conftest import REPO

CHILD = """
import json, sys
from htr_ray.io import images
from htr_ray.recognition.spec import RecognizerSpec
model, png_paths = sys.argv[1], sys.argv[2:]
spec = RecognizerSpec(model=model, backend="onnx", quantize="int8", threads=1)
rec = spec.build()
grays = [images.decode_gray(open(p, "rb").read()) for p in png_paths]
out = [r.to_dict() for r in rec.recognize(grays)]
print(json.dumps({"torch": "torch" in sys.modules, "backend": rec.describe()["backend"],
                  "quantize": rec.describe()["quantize"], "results": out}))
"""


@pytest.fixture(scope="module")
def line_pngs(tmp_path_factory) -> list[str]:
    gen = LineGenerator(seed=7, split="test")
    base = tmp_path_factory.mktemp("lines")
    paths = []
    for i in range(4):
        path = base / f"line{i}.png"
        path.write_bytes(images.encode_png(gen.sample(i)[0]))
        paths.append(str(path))
    return paths


def run_child(model: str, pngs: list[str], cache) -> dict:
    env = {**os.environ, "HTR_EXPORT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, model, *pngs], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_checkpoint_file_names_agree():
    from htr_ray.models import checkpoint

    assert (export.META_FILE, export.WEIGHTS_FILE) == (checkpoint.META_FILE, checkpoint.WEIGHTS_FILE)


def test_onnx_recogniser_never_imports_torch(line_model, line_pngs, tmp_path):
    """In a fresh process: a checkpoint with backend onnx int8 and an empty cache (the export runs in a
    grandchild), then again from the filled cache, then an exported directory: torch is never imported,
    and every one reads like the same spec built in this process."""
    from htr_ray.recognition.spec import RecognizerSpec

    cache = tmp_path / "cache"
    first = run_child(line_model, line_pngs, cache)
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert entry.name.startswith("onnx-int8-") and export.is_exported(str(entry))
    stamp = (entry / export.META_FILE).stat().st_mtime_ns
    again = run_child(line_model, line_pngs, cache)
    assert (entry / export.META_FILE).stat().st_mtime_ns == stamp  # read from the cache, not exported again
    exported_dir = tmp_path / "exported"
    shutil.copytree(entry, exported_dir)
    from_dir = run_child(str(exported_dir), line_pngs, tmp_path / "unused-cache")
    assert not (tmp_path / "unused-cache").exists()
    for got in (first, again, from_dir):
        assert got["torch"] is False
        assert (got["backend"], got["quantize"]) == ("onnx", "int8")
    grays = [images.decode_gray(open(p, "rb").read()) for p in line_pngs]
    os.environ["HTR_EXPORT_CACHE"] = str(cache)
    try:
        here = RecognizerSpec(model=line_model, backend="onnx", quantize="int8", threads=1).build().recognize(grays)
    finally:
        del os.environ["HTR_EXPORT_CACHE"]
    assert any(r.text for r in here)
    for got in (first, again, from_dir):
        assert [r["text"] for r in got["results"]] == [r.text for r in here]
        assert np.allclose([r["confidence"] for r in got["results"]], [r.confidence for r in here], atol=1e-6)


def test_cache_key_follows_content_and_settings(line_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HTR_EXPORT_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "ckpt"
    shutil.copytree(line_model, copy)
    key = export.cache_key(str(copy), "onnx", "int8")
    assert key == export.cache_key(line_model, "onnx", "int8")  # content, not the path
    assert key != export.cache_key(str(copy), "onnx", None) != export.cache_key(str(copy), "torchscript", None)
    meta = json.loads((copy / "model.json").read_text())
    meta["epoch"] = -1
    (copy / "model.json").write_text(json.dumps(meta))
    assert export.cache_key(str(copy), "onnx", "int8") != key  # a changed checkpoint is a new entry
    with pytest.raises(export.ExportError, match="not a readable checkpoint"):
        export.cached_export(str(tmp_path / "missing"), "onnx", "int8")
    with pytest.raises(export.ExportError, match="unknown quantisation"):
        export.cached_export(str(copy), "onnx", "int4")
