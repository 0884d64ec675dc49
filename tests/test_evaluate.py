"""jobs/evaluate.py end to end: shards in, report files out; Ray Data gives the same predictions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from htr_ray.models import checkpoint
from htr_ray.io import images, shards, storage
from htr_ray.models.charset import Charset
from htr_ray.models import build_model
from htr_ray.io.shards import Sample

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _line(seed: int, w: int = 240) -> bytes:
    rng = np.random.default_rng(seed)
    g = np.full((48, w), 240, np.uint8)
    for _ in range(8):
        y, x = int(rng.integers(5, 40)), int(rng.integers(0, w - 20))
        g[y:y + 3, x:x + 15] = 20
    return images.encode_png(g)


def line_samples() -> list[Sample]:
    out = [Sample(f"l{k:02d}", _line(k, 160 + 20 * k), text, "synth", domain, "test")
           for k, (text, domain) in enumerate([("take aspirin", "prescription"), ("12 + 5 = 17", "homework"),
                                               ("one hundred", "cheque"), ("hello world", "generic"),
                                               ("abc", "generic")])]
    out.append(Sample("bad", b"not an image at all", "lost", "synth", "generic", "test"))
    page = np.full((120, 300), 245, np.uint8)
    page[20:30, 20:200] = 10
    page[70:80, 20:250] = 10
    out.append(Sample("page1", images.encode_png(page), "first\n2 + 2 = 5", "synth-pages", "homework", "test",
                      lines=[{"text": "first", "bbox": [10, 10, 210, 40]}, {"text": "2 + 2 = 5", "bbox": [10, 60, 260, 90]}]))
    return out


@pytest.fixture(scope="module")
def line_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    cs = Charset("abcdefghijklmnopqrstuvwxyz0123456789 +=")
    ck = str(root / "line_model")
    checkpoint.save(ck, build_model("crnn_small", num_classes=cs.num_ctc_classes), {"charset": cs.to_json()})
    data = str(root / "shards")
    shards.write_samples(data, line_samples())
    return ck, data, root


def test_evaluate_line_model_writes_the_report(line_setup):
    from htr_ray.evaluation.evaluate import evaluate

    ck, data, root = line_setup
    res = evaluate(ck, data, split="test", report=str(root / "report"), gallery=4)
    m = res.metrics
    # 5 lines + 1 unreadable + a page of 2 lines: every sample is a prediction
    assert m["samples"] == 8 and len(res.predictions) == 8 and m["unreadable"] == 1
    assert {p["id"] for p in res.predictions} >= {"bad", "page1#L0", "page1#L1"}
    assert set(m["by_domain"]) == {"cheque", "generic", "homework", "prescription"}
    assert set(m["by_source"]) == {"synth", "synth-pages"}
    assert m["by_domain"]["homework"]["lines"] == 3
    assert 0 <= m["overall"]["cer"] and m["overall"]["chars"] == sum(len(p["truth"]) for p in res.predictions)
    assert len(m["calibration"]["bins"]) == 8 or m["calibration"]["lines"] == 8
    # the homework page's truth has a wrong sum planted; its reading either agrees or misses it
    dc = m["domain_checks"]["homework"]
    assert dc["pages"] == 1 and dc["false_alarms"] == 0 and dc["agree"] + dc["missed"] == 1
    saved = json.loads(open(root / "report" / "metrics.json").read())
    assert saved["overall"] == m["overall"] and saved["kind"] == "line"
    gallery = open(root / "report" / "error_gallery.png", "rb").read()
    g = images.decode_gray(gallery)
    assert g.shape[1] == 900 and g.shape[0] == 34 + min(4, 8) * (48 + 3 * 21 + 12)
    preds = [json.loads(x) for x in open(root / "report" / "predictions.jsonl").read().splitlines()]
    assert len(preds) == 8


def test_evaluate_job_cli(line_setup, capsys):
    import importlib.util

    ck, data, root = line_setup
    spec = importlib.util.spec_from_file_location("evaluate_job", REPO / "jobs" / "evaluate.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_job"] = job  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(job)
    assert job.main(["--model", ck, "--data", data, "--decoder", "beam", "--beam-width", "4", "--limit", "3",
                     "--report", str(root / "cli")]) == 0
    out = capsys.readouterr().out
    assert "CER" in out and "decoder beam" in out and "3 samples" in out
    assert (root / "cli" / "metrics.json").exists()


def test_classifier_report_on_real_casia_samples(shared_data, tmp_path):
    from htr_ray.evaluation.evaluate import evaluate

    folders = sorted((shared_data / "casia_hwdb_21" / "test").iterdir())[:4]
    samples, labels = [], []
    for d in folders:
        label = d.name.split("_", 1)[1]
        labels.append(label)
        for png in sorted(d.glob("*.png"))[:3]:
            samples.append(Sample(f"{d.name}/{png.stem}", png.read_bytes(), label, "casia", "hanzi", "test"))
    data = str(tmp_path / "casia")
    shards.write_samples(data, samples)
    torch.manual_seed(0)
    ck = str(tmp_path / "char_model")
    checkpoint.save(ck, build_model("char_cnn_hanzi", num_classes=len(labels)), {"charset": labels})
    res = evaluate(ck, data, split="test", report=str(tmp_path / "rep"))
    m = res.metrics
    assert m["kind"] == "char" and m["samples"] == 12
    assert 0.0 <= m["accuracy"] <= 1.0
    assert m["classes"] == labels and sum(map(sum, m["confusion_matrix"])) == 12
    assert set(m["report"]["classes"]) == set(labels)
    cm = images.decode_gray(open(tmp_path / "rep" / "confusion_matrix.png", "rb").read())
    assert cm.shape[1] >= 4 * 36 and cm.shape[0] == cm.shape[1] + 30
    assert (tmp_path / "rep" / "error_gallery.png").exists()


def test_ray_data_path_gives_the_same_predictions(line_setup, ray_local, s3_bucket):
    from htr_ray.evaluation.evaluate import evaluate

    ck, data, root = line_setup
    # model, data and report all on the S3 test server, as on a cluster
    s3_model, s3_data = f"{s3_bucket}/models/line", f"{s3_bucket}/shards"
    checkpoint.copy(ck, s3_model)
    for uri in shards.list_shards(data):
        rel = uri[len(data):].lstrip("/")
        storage.write_bytes(f"{s3_data}/{rel}", storage.read_bytes(uri))
    local = evaluate(ck, data, split="test")
    distributed = evaluate(s3_model, s3_data, split="test", use_ray=True, actors=1, batch_size=3,
                           report=f"{s3_bucket}/report")
    assert distributed.metrics["ray"] is True
    key = lambda p: (p["id"], p["pred"], round(p["confidence"], 5), bool(p["error"]))  # noqa: E731
    assert [key(p) for p in distributed.predictions] == [key(p) for p in local.predictions]
    assert distributed.metrics["overall"] == local.metrics["overall"]
    assert json.loads(storage.read_bytes(f"{s3_bucket}/report/metrics.json"))["samples"] == 8


def test_the_models_decoding_defaults_decide_how_evaluation_reads(line_setup, tmp_path, capsys):
    """Evaluation reads lines as every other job does: a spec field left unset takes the model's own
    ``model.json`` "decoding" default (decoder, the LM beside the model, beam options); a flag overrides it."""
    import importlib.util
    import shutil

    from htr_ray.evaluation.evaluate import evaluate
    from htr_ray.recognition.lm import CharNgramLM
    from htr_ray.recognition.spec import RecognizerSpec

    ck, data, _ = line_setup
    tuned = tmp_path / "tuned_model"
    shutil.copytree(ck, tuned)
    CharNgramLM.train(["take aspirin", "one hundred", "hello world"] * 20, order=3).save(str(tuned / "lm.json"))
    meta = json.loads((tuned / "model.json").read_text())
    meta["decoding"] = {"decoder": "beam", "lm": "lm.json", "beam_options": {"beam_width": 4, "lm_weight": 3.0}}
    (tuned / "model.json").write_text(json.dumps(meta))
    lm = storage.join(str(tuned), "lm.json")

    by_default = evaluate(str(tuned), data, split="test")
    m = by_default.metrics
    assert (m["decoder"], m["lm"], m["beam_options"]) == ("beam", lm, {"beam_width": 4, "lm_weight": 3.0})
    # the same lines as the untuned checkpoint read with those settings spelled out
    explicit = evaluate(RecognizerSpec(model=ck, decoder="beam", lm=lm, beam_width=4, lm_weight=3.0), data, split="test")
    texts = lambda res: [(p["id"], p["pred"]) for p in res.predictions]  # noqa: E731
    assert texts(by_default) == texts(explicit)
    greedy = evaluate(ck, data, split="test")  # no "decoding" in its model.json: greedy
    assert greedy.metrics["decoder"] == "greedy" and greedy.metrics["lm"] is None
    assert texts(by_default) != texts(greedy), "the LM at weight 3 should change this random model's readings"
    # a spec field overrides the model's default
    overridden = evaluate(RecognizerSpec(model=str(tuned), decoder="greedy"), data, split="test")
    assert overridden.metrics["decoder"] == "greedy" and texts(overridden) == texts(greedy)

    spec = importlib.util.spec_from_file_location("evaluate_job", REPO / "jobs" / "evaluate.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_job"] = job
    spec.loader.exec_module(job)
    capsys.readouterr()
    for flags, decoder in (([], "beam"), (["--decoder", "greedy"], "greedy"), (["--lm", "none", "--beam-width", "2"], "beam")):
        assert job.main(["--model", str(tuned), "--data", data, "--limit", "2", *flags,
                         "--report", str(tmp_path / "r")]) == 0
        assert f"decoder {decoder}" in capsys.readouterr().out, flags
        saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
        assert saved["decoder"] == decoder
        assert saved["lm"] == (lm if not flags else None)
