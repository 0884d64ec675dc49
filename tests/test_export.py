"""Export parity: the shipped line model through torch, ONNX Runtime and TorchScript (fp32 and int8)
gives the same text for the same real IAM line images, pre-processing and batching included.

Tolerances (fp32): log-probabilities per valid frame within 1e-3 (max absolute difference) and the
decoded text identical, line for line. int8 (dynamic, LSTM + linear): most lines identical and the
CER against the ground truth within 0.02 of fp32's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from htr_ray.models import checkpoint
from htr_ray.recognition import export
from htr_ray.data import labels
from htr_ray.io import images, storage
from htr_ray.evaluation import metrics
from htr_ray.models.charset import Charset
from htr_ray.models import build_model
from htr_ray.recognition.recognizer import Recognizer

torch.set_num_threads(1)

FP32_TOL = 1e-3
N_LINES = 24


@pytest.fixture(scope="module")
def iam_lines(shared_data) -> tuple[list[np.ndarray], list[str]]:
    """Real IAM-OnDB line images, spread over the set (widths from short words to long lines)."""
    root = shared_data / "iam_ondb_lines"
    rows = labels.read_rows(str(root))
    step = max(1, len(rows) // N_LINES)
    picked = rows[::step][:N_LINES]
    imgs = [images.decode_gray(storage.read_bytes(r.image_uri())) for r in picked]
    return imgs, [r.text for r in picked]


@pytest.fixture(scope="module")
def exported(line_model, tmp_path_factory) -> dict[str, str]:
    out = {}
    base = tmp_path_factory.mktemp("export")
    for backend in export.BACKENDS:
        for q in (None, "int8"):
            uri = str(base / f"{backend}-{q or 'fp32'}")
            export.export(line_model, uri, backend, quantize=q)
            out[f"{backend}-{q or 'fp32'}"] = uri
    return out


def _log_probs(rec: Recognizer, imgs) -> list[np.ndarray]:
    lps, errors = rec.log_probs(imgs)
    assert errors == [None] * len(imgs)
    return lps


@pytest.mark.parametrize("batch_size,exact", [(1, True), (32, False)])
def test_fp32_onnx_and_torchscript_match_torch(line_model, exported, iam_lines, batch_size, exact):
    """Batch 1, and batch 32 mixing widths (zero padding inside the batch, dynamic batch and width)."""
    imgs, _ = iam_lines
    ref = Recognizer.from_uri(line_model, batch_size=batch_size, exact_batches=exact)
    widths = {images.normalize_line(g, ref.height).shape[1] for g in imgs}
    assert len(widths) > 10  # really varied widths
    ref_lp, ref_txt = _log_probs(ref, imgs), [r.text for r in ref.recognize(imgs)]
    for name in ("onnx-fp32", "torchscript-fp32"):
        rec = Recognizer.from_uri(exported[name], batch_size=batch_size, exact_batches=exact, threads=1)
        assert rec.describe()["backend"] == name.split("-")[0]
        lp = _log_probs(rec, imgs)
        assert [a.shape for a in lp] == [a.shape for a in ref_lp]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(lp, ref_lp))
        assert diff < FP32_TOL, f"{name}: max |log p| diff {diff}"
        assert [r.text for r in rec.recognize(imgs)] == ref_txt, name


def test_graph_outputs_and_lengths_match_model(line_model, exported, iam_lines):
    """The exported graph's own outputs on one padded batch: logits and frame counts equal the
    checkpoint's ``forward`` and ``output_lengths``; ONNX input axes are symbolic, opset >= 17."""
    import onnx

    model, meta = checkpoint.load(line_model)
    xs = [images.normalize_line(g, meta["input"]["height"]) for g in iam_lines[0][:9]]
    x, widths = images.pad_batch(xs)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    ref_len = model.output_lengths(widths).numpy()
    for name in ("onnx-fp32", "torchscript-fp32"):
        runner, m = export.load(exported[name], threads=1)
        logits, lengths = runner.run(x, widths)
        assert logits.shape == ref.shape and np.array_equal(lengths, ref_len), name
        assert float(np.abs(logits - ref).max()) < FP32_TOL, name
        assert m["output_lengths"]["width_stride"] == model.width_stride and m["source"]["uri"] == line_model
        assert m["charset"] == meta["charset"] and m["input"] == meta["input"]
    g = onnx.load(str(storage.join(exported["onnx-fp32"], "model.onnx")))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.graph.input}
    assert isinstance(dims["images"][0], str) and isinstance(dims["images"][3], str) and isinstance(dims["widths"][0], str)
    assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_int8_mostly_same_text_and_small_cer_change(line_model, exported, iam_lines):
    imgs, truth = iam_lines
    ref = [r.text for r in Recognizer.from_uri(line_model).recognize(imgs)]
    cer_fp32 = metrics.cer(truth, ref)
    report = {"fp32": cer_fp32}
    for name, rec in [("torch-int8", Recognizer.from_uri(line_model, quantize="int8")),
                      ("torchscript-int8", Recognizer.from_uri(exported["torchscript-int8"])),
                      ("onnx-int8", Recognizer.from_uri(exported["onnx-int8"], threads=1))]:
        assert rec.describe()["quantize"] == "int8"
        hyp = [r.text for r in rec.recognize(imgs)]
        same = sum(a == b for a, b in zip(hyp, ref)) / len(ref)
        report[name] = {"cer": metrics.cer(truth, hyp), "same_text": same,
                        "cer_vs_fp32_text": metrics.cer(ref, hyp)}
        assert same >= 0.6, (name, report)
        assert abs(report[name]["cer"] - cer_fp32) <= 0.02, (name, report)
    print("int8 parity:", json.dumps(report))


def test_checkpoint_with_backend_onnx_equals_exported_dir(line_model, exported, iam_lines):
    """``backend="onnx"`` on a checkpoint (exported in memory) reads like the exported directory."""
    imgs = iam_lines[0][:6]
    a = Recognizer.from_uri(line_model, backend="onnx", threads=1).recognize(imgs)
    b = Recognizer.from_uri(exported["onnx-fp32"], threads=1).recognize(imgs)
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.confidence for r in a] == pytest.approx([r.confidence for r in b], abs=1e-6)
    with pytest.raises(export.ExportError):
        export.load(exported["onnx-fp32"], backend="torchscript")
    with pytest.raises(export.ExportError):
        export.load(exported["onnx-fp32"], quantize="int8")


def test_bad_input_is_an_error_row_not_an_exception(exported, iam_lines):
    rec = Recognizer.from_uri(exported["onnx-fp32"], threads=1)
    res = rec.recognize([iam_lines[0][0], np.zeros((0, 40), np.uint8), None])
    assert res[0].error is None and res[1].error and res[2].error and res[1].text == res[2].text == ""


def test_export_job_to_s3_and_read_back(line_model, s3_bucket, iam_lines):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("export_job", Path(__file__).resolve().parents[1] / "jobs" / "export.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = job  # dataclasses look their module up
    spec.loader.exec_module(job)
    dst = f"{s3_bucket}/models/line.int8.onnx"
    assert job.main(["--model", line_model, "--format", "onnx", "--quantize", "int8", "--output", dst]) == 0
    meta = export.read_meta(dst)
    assert meta["backend"] == "onnx" and meta["quantize"] == "int8" and meta["format"] == export.FORMAT
    assert export.is_exported(dst) and not export.is_exported(line_model)
    res = Recognizer.from_uri(dst, threads=1).recognize(iam_lines[0][:3])
    assert all(r.error is None for r in res)
    with pytest.raises(export.ExportError):
        export.export(line_model, f"{s3_bucket}/x", "tflite")


def test_char_classifier_exports(tmp_path):
    torch.manual_seed(0)
    cs = Charset("0123456789")
    ckpt = str(tmp_path / "char")
    checkpoint.save(ckpt, build_model("char_cnn", num_classes=len(cs)), {"charset": cs.to_json()})
    rng = np.random.default_rng(0)
    digits = []
    for _ in range(5):
        g = np.full((40, 30), 240, np.uint8)
        g[8:32, int(rng.integers(5, 12)):int(rng.integers(15, 25))] = 20
        digits.append(g)
    ref = Recognizer.from_uri(ckpt).classify(digits)
    for backend in export.BACKENDS:
        dst = str(tmp_path / backend)
        export.export(ckpt, dst, backend)
        assert export.verify(ckpt, dst)["max_abs_diff"] < FP32_TOL
        got = Recognizer.from_uri(dst, threads=1).classify(digits)
        assert [r.label for r in got] == [r.label for r in ref]
        assert [r.confidence for r in got] == pytest.approx([r.confidence for r in ref], abs=1e-4)


def test_bulk_stage_reads_pages_with_an_exported_model(line_model, exported, iam_lines):
    """The bulk job's recogniser stage (and Serve, which loads the same way) takes an exported
    directory as its model URI unchanged: same line texts on a page as the checkpoint."""
    from htr_ray.distributed.actors import RecognizerActor
    from htr_ray.distributed.transcribe import TranscribeConfig, actor_spec
    from htr_ray.pages.reader import PageReader

    lines = iam_lines[0][:3]
    width = max(g.shape[1] for g in lines) + 40
    page = np.full((sum(g.shape[0] + 40 for g in lines) + 40, width), 255, np.uint8)
    y = 40
    for g in lines:
        page[y:y + g.shape[0], 20:20 + g.shape[1]] = g
        y += g.shape[0] + 40
    data = images.encode_png(page)
    cfg = TranscribeConfig(input="unused", output="unused")
    cfg.recognizer = cfg.recognizer.replace(model=exported["onnx-fp32"])
    actor = RecognizerActor(actor_spec(cfg).as_dict())  # the job's onnx/int8 default yields to the export's own
    assert actor.recognizer.describe()["backend"] == "onnx" and actor.recognizer.describe()["quantize"] is None
    reader = PageReader("opencv")
    got = reader.read("page.png", data, actor.recognizer)
    from htr_ray.recognition.spec import RecognizerSpec

    # the model's own decoder on both sides (model.json names beam + the LM shipped beside it, and the
    # export carries the LM along)
    ref = reader.read("page.png", data, RecognizerSpec(model=line_model).build())
    assert [r.status for r in got] == [r.status for r in ref]
    assert [[ln.text for ln in r.lines] for r in got] == [[ln.text for ln in r.lines] for r in ref]
    assert len(got[0].lines) >= 2


def test_evaluate_takes_an_exported_directory(line_model, exported, iam_lines, tmp_path):
    """jobs/evaluate.py reads the model's metadata from an exported directory as from a checkpoint:
    same texts and the same CER as the checkpoint on the same shard."""
    from htr_ray.io import shards
    from htr_ray.evaluation.evaluate import evaluate

    imgs, texts = iam_lines
    root = str(tmp_path / "shards")
    shards.write_samples(root, [shards.Sample(id=f"l{i:02d}", image=images.encode_png(g), text=t, source="iam_ondb",
                                              split="test") for i, (g, t) in enumerate(zip(imgs[:8], texts[:8]))])
    ref = evaluate(line_model, root, split="test", use_ray=False)
    got = evaluate(exported["onnx-fp32"], root, split="test", use_ray=False)
    assert got.metrics["samples"] == ref.metrics["samples"] == 8
    assert [p["pred"] for p in got.predictions] == [p["pred"] for p in ref.predictions]
    assert got.metrics["overall"]["cer"] == pytest.approx(ref.metrics["overall"]["cer"])
