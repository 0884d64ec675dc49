"""bench/model_ops.py: the bench runs end to end on a few held-out lines, and its padding-free graph
keeps the property its figures rest on (a line reads the same alone and in a wider batch)."""

from __future__ import annotations

import json

import numpy as np


def test_padding_free_graph_reads_a_line_as_alone(bench, shared_data):
    import onnxruntime as ort

    from htr_ray.io import images
    from htr_ray.models import checkpoint
    from htr_ray.recognition.spec import DEFAULT_LINE_MODEL

    model_ops = bench("model_ops")
    model, meta = checkpoint.load(DEFAULT_LINE_MODEL)
    lines, _ = model_ops.normalized_lines(str(shared_data / "iam_ondb_lines"), "test", 3, int(meta["input"]["height"]))
    sess = ort.InferenceSession(model_ops.padding_free_onnx(model), providers=["CPUExecutionProvider"])
    arr, widths = images.pad_batch(lines, width_multiple=32)
    extents = (-(-widths // 32) * 32).astype(np.int64)
    together, lengths = sess.run(None, {"images": arr, "widths": widths, "extents": extents})
    assert len(set(int(e) for e in extents)) > 1  # the lines really differ in width
    for i, line in enumerate(lines):
        a, w = images.pad_batch([line], width_multiple=32)
        alone, n = sess.run(None, {"images": a, "widths": w, "extents": extents[i:i + 1]})
        assert int(n[0]) == int(lengths[i])
        np.testing.assert_allclose(together[i, : int(n[0])], alone[0, : int(n[0])], atol=1e-4)


def test_bench_runs_and_writes_its_table(bench, shared_data, tmp_path):
    out = tmp_path / "model_ops.json"
    rc = bench("model_ops").main(["--data", str(shared_data / "iam_ondb_lines"), "--lines", "8", "--batch", "4",
                            "--repeats", "1", "--cer-lines", "4", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["results"]] == ["onnx fp32", "onnx int8 (shipped)", "onnx int8 + static int8 conv"]
    for r in result["results"]:
        assert r["batch_1"]["ms_per_line"] > 0 and r["batch_4"]["ms_per_line"] > 0
        assert 0.0 <= r["greedy_cer"] < 0.5  # a working model on held-out lines, not noise
    assert len(result["mixed_widths_int8_ms_per_line"]) == 5
