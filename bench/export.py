"""Inference backends on CPU: torch fp32 / TorchScript / ONNX Runtime fp32, and dynamic int8 (torch,
TorchScript, ONNX Runtime): lines/s, latency and CER on held-out IAM-OnDB lines.

    python bench/export.py --model models/line_en --data work/shards/iam --lines 300 --threads 2

Every variant runs through :class:`htr_ray.recognition.recognizer.Recognizer` end to end (pre-processing, model,
greedy CTC decoding), on the same lines, after one warm-up pass:

- batch 1: one ``recognize([line])`` call per line (latency = per call);
- batch 32: lines sorted by width and cut into groups of 32, one ``recognize(group)`` call per group
  with ``batch_size=32, exact_batches=False`` (one padded batch per call; latency = per batch).

Exports are written to a temp folder first (``jobs/export.py`` does the same). Prints a table and
writes JSON (``--out``, default work/bench/export.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from htr_ray.recognition import export
from htr_ray.io import images, shards, storage
from htr_ray.evaluation import metrics  # noqa: E402
from htr_ray.recognition.recognizer import Recognizer  # noqa: E402

VARIANTS = [  # name, backend, quantize, onnx ops quantised
    ("torch fp32", "torch", None, None),
    ("TorchScript fp32", "torchscript", None, None),
    ("ONNX Runtime fp32", "onnx", None, None),
    ("torch int8", "torch", "int8", None),
    ("TorchScript int8", "torchscript", "int8", None),
    ("ONNX Runtime int8", "onnx", "int8", export.ONNX_QUANT_OPS),
    ("ONNX Runtime int8 (linear only)", "onnx", "int8", ("MatMul", "Gemm")),
]


def load_lines(root: str, split: str, n: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    imgs, texts, ids = [], [], []
    for row in shards.iter_rows(root, split, columns=["id", "image", "text"]):
        imgs.append(images.decode_gray(row["image"]))
        texts.append(row["text"])
        ids.append(row["id"])
        if len(imgs) >= n:
            break
    return imgs, texts, ids


def run_variant(rec: Recognizer, imgs: list[np.ndarray], batch: int) -> tuple[list[str], dict]:
    order = sorted(range(len(imgs)), key=lambda i: imgs[i].shape[1] / max(imgs[i].shape[0], 1))
    groups = [order[s:s + batch] for s in range(0, len(order), batch)]
    rec([imgs[i] for i in groups[len(groups) // 2]])  # warm-up (allocations, TorchScript profiling)
    texts: list[str | None] = [None] * len(imgs)
    calls = []
    t0 = time.perf_counter()
    for g in groups:
        c0 = time.perf_counter()
        res = rec.recognize([imgs[i] for i in g])
        calls.append(time.perf_counter() - c0)
        for i, r in zip(g, res):
            texts[i] = r.text
    total = time.perf_counter() - t0
    calls_ms = np.array(calls) * 1000
    return texts, {"seconds": total, "lines_per_s": len(imgs) / total, "ms_per_line": 1000 * total / len(imgs),
                   "call_ms_p50": float(np.percentile(calls_ms, 50)), "call_ms_p95": float(np.percentile(calls_ms, 95)),
                   "calls": len(calls)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/line_en", help="line checkpoint URI")
    ap.add_argument("--data", default="work/shards/iam", help="sample shards (held-out split read)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--variants", nargs="+", default=None,
                    help="subset of variant names (default: all): " + "; ".join(v[0] for v in VARIANTS))
    ap.add_argument("--out", default="work/bench/export.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    imgs, truth, ids = load_lines(args.data, args.split, args.lines)
    print(f"{len(imgs)} {args.split} lines from {args.data}; model {args.model}; threads {args.threads}")
    tmp = tempfile.mkdtemp(prefix="htr-bench-export-")
    results = []
    ref_texts: dict[int, list[str]] = {}  # torch fp32's texts per batch size
    for name, backend, quantize, ops in VARIANTS:
        if args.variants and name not in args.variants:
            continue
        t0 = time.perf_counter()
        if backend == "torch":
            uri = args.model
        else:
            uri = os.path.join(tmp, f"{backend}-{quantize or 'fp32'}")
            export.export(args.model, uri, backend, quantize=quantize, onnx_quant_ops=ops or export.ONNX_QUANT_OPS)
        export_s = time.perf_counter() - t0
        file = export.read_meta(uri)["file"] if backend != "torch" else "weights.pt"
        size_mb = storage.size(storage.join(uri, file)) / 1e6 if not (backend == "torch" and quantize) else None
        for bs in args.batch_sizes:
            rec = Recognizer.from_uri(uri, quantize=quantize if backend == "torch" else None, threads=args.threads,
                                      batch_size=bs, exact_batches=(bs == 1))
            torch.set_num_threads(args.threads)
            texts, timing = run_variant(rec, imgs, bs)
            if name == "torch fp32":
                ref_texts[bs] = texts
            ref = ref_texts.get(bs)
            row = {"variant": name, "backend": backend, "quantize": quantize, "batch": bs, **timing,
                   "cer": metrics.cer(truth, texts), "wer": metrics.wer(truth, texts),
                   "same_text_as_torch_fp32": sum(a == b for a, b in zip(texts, ref)) / len(texts) if ref else None,
                   "file_mb": size_mb, "export_s": export_s}
            results.append(row)
            print(f"  {name:<31} batch {bs:>2}: {timing['lines_per_s']:7.1f} lines/s  CER {row['cer']:.4f}", flush=True)

    base = {r["batch"]: r["lines_per_s"] for r in results if r["variant"] == "torch fp32"}
    header = (f"| variant | batch | lines/s | ms/line | call p50 ms | call p95 ms | speed-up vs torch fp32 | CER | "
              f"same text as torch fp32 | file MB |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        speed = r["lines_per_s"] / base[r["batch"]] if r["batch"] in base else None
        r["speedup_vs_torch_fp32"] = speed
        lines.append(f"| {r['variant']} | {r['batch']} | {r['lines_per_s']:.1f} | {r['ms_per_line']:.2f} | "
                     f"{r['call_ms_p50']:.1f} | {r['call_ms_p95']:.1f} | {'-' if speed is None else format(speed, '.2f') + 'x'} | {r['cer']:.4f} | "
                     f"{'-' if r['same_text_as_torch_fp32'] is None else format(100 * r['same_text_as_torch_fp32'], '.1f') + ' %'} | {'-' if r['file_mb'] is None else format(r['file_mb'], '.2f')} |")
    table = "\n".join(lines)
    print()
    print(table)
    import onnxruntime

    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "threads": args.threads},
        "command": "python bench/export.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "data": args.data, "split": args.split, "lines": len(imgs),
        "results": results, "table": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
