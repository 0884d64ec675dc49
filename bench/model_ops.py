"""Where the line recogniser's CPU time goes, operator by operator, and whether it gains from batching.

    .venv/bin/python bench/model_ops.py [--model models/en_line_crnn_small] [--lines 64] [--cer-lines 200]

One thread (what each bulk actor and Serve replica runs). Held-out IAM-OnDB lines (test-split forms),
normalised as the recogniser does, sorted by width and cut into groups of ``--batch`` lines; every
line of a group is padded to the group's widest line, so that **batch 1** (each line alone) and
**batch N** (the group in one call) do exactly the same arithmetic: the difference is what batching
buys the network itself, with no padding waste on either side. CPU time of this thread
(``time.thread_time``), and ONNX Runtime's own per-node profile split by operator type.

Variants:

- ``onnx fp32``: the checkpoint exported as it is;
- ``onnx int8 (shipped)``: what the bulk job and Serve run (``spec.PAGE_READING_DEFAULT``): LSTM and
  linear layers dynamically quantised, convolutions fp32;
- ``onnx int8 + static int8 conv``: the same, with the convolutions statically quantised too
  (QOperator, per-channel int8 weights, uint8 activations calibrated on 64 train-form lines).

And **mixed widths**: what the recogniser does today (each line alone at its own 32 px bucket: a
batch holds one bucket, so that a line reads the same in any batch) against a *padding-free* graph
(prototyped here, not shipped): every conv layer's output masked beyond each line's own bucket width
and the BiLSTM given each line's frame count (``pack_padded_sequence`` -> ONNX ``LSTM`` with
``sequence_lens``), so that lines of different widths could share a batch and still read as alone,
timed alone and in width-sorted batches of 4, 8 and 16.

Also greedy CER of each variant on ``--cer-lines`` held-out lines (as a check that a faster variant
reads the same). Writes ``work/bench/model_ops.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from htr_ray import paths  # noqa: E402
from htr_ray.data import labels  # noqa: E402
from htr_ray.evaluation import metrics  # noqa: E402
from htr_ray.io import images, storage  # noqa: E402
from htr_ray.recognition import export  # noqa: E402
from htr_ray.recognition.decode import greedy  # noqa: E402
from htr_ray.recognition.recognizer import _log_softmax  # noqa: E402
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL  # noqa: E402


def normalized_lines(data: str, split: str, n: int, height: int) -> tuple[list[np.ndarray], list[str]]:
    rows = labels.read_rows(data, split=split)[:n]
    lines = [images.normalize_line(images.decode_gray(storage.read_bytes(r.image_uri())), height) for r in rows]
    return lines, [r.text for r in rows]


def groups_of(lines: list[np.ndarray], size: int, multiple: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Width-sorted groups of ``size`` lines, each as one (N, 1, H, W) array padded to its widest line."""
    order = sorted(range(len(lines)), key=lambda i: lines[i].shape[1])
    return [images.pad_batch([lines[i] for i in order[s:s + size]], width_multiple=multiple)
            for s in range(0, len(order) - size + 1, size)]


def static_conv_int8(dynamic_int8: bytes, calibration: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The shipped int8 model with its convolutions statically quantised as well."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"images": item[0], "widths": item[1]}

    with tempfile.TemporaryDirectory(prefix="htr-model-ops-") as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        Path(src).write_bytes(dynamic_int8)
        quantize_static(src, dst, Reader(), op_types_to_quantize=["Conv"], quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=True)
        return Path(dst).read_bytes()


def padding_free_onnx(model) -> bytes:
    """The line model as an ONNX graph (images, widths, extents) -> (logits, lengths) whose result for a
    line does not depend on the batch's padding: ``extents`` is each line's padded (bucket) width."""
    import io
    import warnings

    import torch
    from torch import nn

    class Graph(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, widths, extents):
            net, f, div = self.net, x, 1
            for layer in net.features:
                f = layer(f)
                if isinstance(layer, nn.MaxPool2d):
                    k = layer.kernel_size
                    div *= k[1] if isinstance(k, tuple) else k
                if isinstance(layer, nn.ReLU):  # beyond a line's extent: zeros, as at the image's border
                    keep = torch.arange(f.shape[3])[None, :] < torch.div(extents, div, rounding_mode="floor")[:, None]
                    f = f * keep.to(f.dtype)[:, None, None, :]
            f = f.flatten(1, 2).transpose(1, 2)
            frames = torch.div(extents, net.width_stride, rounding_mode="floor")
            packed = nn.utils.rnn.pack_padded_sequence(f, frames, batch_first=True, enforce_sorted=False)
            out, _ = nn.utils.rnn.pad_packed_sequence(net.rnn(packed)[0], batch_first=True, total_length=f.shape[1])
            lengths = torch.clamp(torch.div(widths, net.width_stride, rounding_mode="floor"), min=1)
            return net.classifier(out), lengths

    h = int(model.input_height)
    example = (torch.rand(2, 1, h, 8 * h), torch.tensor([8 * h, 5 * h]), torch.tensor([8 * h, 6 * h]))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph(model).eval(), example, buf, dynamo=False, opset_version=17,
                          input_names=["images", "widths", "extents"], output_names=["logits", "lengths"],
                          dynamic_axes={"images": {0: "n", 3: "w"}, "widths": {0: "n"}, "extents": {0: "n"},
                                        "logits": {0: "n", 1: "t"}, "lengths": {0: "n"}})
    return buf.getvalue()


def mixed_widths(shipped: bytes, padding_free: bytes, lines: list[np.ndarray], repeats: int) -> dict:
    """CPU ms per line: the shipped graph on each line alone; the padding-free one alone and in
    width-sorted batches (each line's extent its own 32 px bucket, the batch padded to its widest)."""
    def feeds(group, extents):
        arr, widths = images.pad_batch(group, width_multiple=32)
        feed = {"images": arr, "widths": widths}
        if extents:
            feed["extents"] = (-(-widths // 32) * 32).astype(np.int64)
        return feed

    def timed(sess, batches) -> float:
        for f in batches[:2]:
            sess.run(None, f)
        t0 = time.thread_time()
        for _ in range(repeats):
            for f in batches:
                sess.run(None, f)
        return round(1000 * (time.thread_time() - t0) / (repeats * len(lines)), 3)

    order = sorted(range(len(lines)), key=lambda i: lines[i].shape[1])
    old, new = session(shipped), session(padding_free)
    out = {"shipped graph, each line alone": timed(old, [feeds([x], False) for x in lines]),
           "padding-free graph, each line alone": timed(new, [feeds([x], True) for x in lines])}
    for b in (4, 8, 16):
        batches = [feeds([lines[i] for i in order[s:s + b]], True) for s in range(0, len(order), b)]
        out[f"padding-free graph, sorted batches of {b}"] = timed(new, batches)
    return out


def session(data: bytes, profile: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def measure(data: bytes, groups, batch: int, repeats: int, tmp: str) -> dict:
    """CPU ms per line and the per-operator split, calling the network on ``batch`` lines at a time."""
    sess = session(data, profile=os.path.join(tmp, f"prof-{batch}"))
    calls = [(x[s:s + batch], w[s:s + batch]) for x, w in groups for s in range(0, len(x), batch)]
    for x, w in calls[:2]:  # warm-up: first-call allocations
        sess.run(None, {"images": x, "widths": w})
    n_lines = sum(len(x) for x, _ in calls) * repeats
    t0 = time.thread_time()
    for _ in range(repeats):
        for x, w in calls:
            sess.run(None, {"images": x, "widths": w})
    ms = 1000 * (time.thread_time() - t0) / n_lines
    by_op: collections.Counter = collections.Counter()
    for event in json.loads(Path(sess.end_profiling()).read_text()):
        if event.get("cat") == "Node":
            by_op[event["args"].get("op_name", "?")] += event["dur"]
    total = sum(by_op.values()) or 1
    return {"ms_per_line": round(ms, 3),
            "ms_per_line_by_op": {op: round(ms * t / total, 3) for op, t in by_op.most_common(6)}}


def greedy_cer(data: bytes, lines: list[np.ndarray], truth: list[str], charset: list[str]) -> float:
    sess = session(data)
    texts = []
    for x in lines:
        arr, widths = images.pad_batch([x], width_multiple=32)
        logits, lengths = sess.run(None, {"images": arr, "widths": widths})
        texts.append(greedy(_log_softmax(logits)[0, : int(lengths[0])], charset).text)
    return metrics.cer(truth, texts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL, help="line checkpoint")
    ap.add_argument("--data", default=str(paths.shared_data() / "iam_ondb_lines"))
    ap.add_argument("--lines", type=int, default=64, help="held-out lines timed")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cer-lines", type=int, default=200, help="held-out lines read for the CER check (0: none)")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "model_ops.json"))
    args = ap.parse_args(argv)

    import onnxruntime

    from htr_ray.models import checkpoint

    model, meta = checkpoint.load(args.model)
    height, charset = int(meta["input"]["height"]), list(meta["charset"])
    fp32 = export.to_onnx_bytes(model)
    int8 = export.quantize_onnx_bytes(fp32)
    calibration, _ = normalized_lines(args.data, "train", 64, height)
    static = static_conv_int8(int8, groups_of(calibration, 4))
    timed, _ = normalized_lines(args.data, "test", args.lines, height)
    groups = groups_of(timed, args.batch)
    cer_lines, cer_truth = normalized_lines(args.data, "test", args.cer_lines, height) if args.cer_lines else ([], [])

    results = []
    with tempfile.TemporaryDirectory(prefix="htr-model-ops-") as tmp:
        for name, data in (("onnx fp32", fp32), ("onnx int8 (shipped)", int8), ("onnx int8 + static int8 conv", static)):
            row = {"variant": name, "mb": round(len(data) / 1e6, 2)}
            for b in (1, args.batch):
                row[f"batch_{b}"] = measure(data, groups, b, args.repeats, tmp)
            row["batch_gain"] = round(row["batch_1"]["ms_per_line"] / row[f"batch_{args.batch}"]["ms_per_line"], 2)
            if cer_lines:
                row["greedy_cer"] = round(greedy_cer(data, cer_lines, cer_truth, charset), 4)
            results.append(row)
            print(json.dumps(row), flush=True)
    mixed = mixed_widths(int8, export.quantize_onnx_bytes(padding_free_onnx(model)), timed, args.repeats)
    print(json.dumps(mixed), flush=True)

    widths = [int(x.shape[3]) for x, _ in groups]
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
           "onnxruntime": onnxruntime.__version__, "model": args.model, "threads": 1,
           "lines": sum(len(x) for x, _ in groups), "batch": args.batch, "group_widths_px": widths,
           "cer_lines": len(cer_lines), "results": results,
           "mixed_widths_int8_ms_per_line": mixed,
           "command": "python bench/model_ops.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"| variant | ms/line, batch 1 | ms/line, batch {args.batch} | gain | conv ms (1 / {args.batch}) | LSTM ms (1 / {args.batch}) | greedy CER |")
    for r in results:
        one, many = r["batch_1"], r[f"batch_{args.batch}"]

        def op(split, key):
            return sum(v for k, v in split["ms_per_line_by_op"].items() if key in k)
        print(f"| {r['variant']} | {one['ms_per_line']:.2f} | {many['ms_per_line']:.2f} | {r['batch_gain']:.2f} | "
              f"{op(one, 'Conv'):.2f} / {op(many, 'Conv'):.2f} | {op(one, 'LSTM'):.2f} / {op(many, 'LSTM'):.2f} | "
              f"{r.get('greedy_cer', '-')} |")
    print("\n| int8, lines of mixed widths | ms/line |\n|---|---|")
    for k, v in mixed.items():
        print(f"| {k} | {v:.2f} |")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
