"""Bulk transcription throughput: the Ray Data job vs a plain single-process loop vs the model's bound.

    .venv/bin/python bench/transcribe.py --pages 24 --workers 2 [--model URI] [--json out.json]

Same generated pages, same model, same cores:
  1. single process: decode -> segment -> printed filter -> recognise, page after page
     (htr_ray.pages.reader.transcribe_bytes), as the job runs by default (--filter none: lines whole);
  2. the Ray Data job (htr_ray.distributed.transcribe.run) on a local Ray with --workers recognizer actors;
  3. the bound: FLOPs of the recognizer per line (counted on the real line crops of these pages)
     against the GFLOP/s of a large fp32 matmul measured in this run on all cores.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from htr_ray.io import images
from htr_ray.pages import reader as pages
from htr_ray.layout import segment  # noqa: E402
from htr_ray.layout.printed import DEFAULT_FILTER, PrintedFilter  # noqa: E402
from htr_ray.recognition.recognizer import Recognizer  # noqa: E402
from htr_ray.data.synth.pages import PageGenerator  # noqa: E402
from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL, TranscribeConfigCore, run  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def model_flops_per_line(rec: Recognizer, crops: list[np.ndarray]) -> float:
    """Forward FLOPs per line, counted by torch's FlopCounterMode on the normalised crops (conv and
    linear), plus the LSTM's matrix products counted analytically (the counter does not see them)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = rec.model
    arrays = [images.normalize_line(c, rec.height, rec.max_width) for c in crops]
    total = 0.0
    for a in arrays:
        x = torch.from_numpy(images.pad_batch([a])[0])
        with FlopCounterMode(display=False) as counter:
            with torch.inference_mode():
                logits = model(x)
        total += counter.get_total_flops()
        frames = logits.shape[1]
        for lstm in [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]:
            directions = 2 if lstm.bidirectional else 1
            for layer in range(lstm.num_layers):
                w_ih = getattr(lstm, f"weight_ih_l{layer}")
                w_hh = getattr(lstm, f"weight_hh_l{layer}")
                total += directions * frames * 2 * (w_ih.numel() + w_hh.numel())
    return total / max(len(arrays), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL)
    ap.add_argument("--filter", default=DEFAULT_FILTER, help="printed-text filter URI, or none")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "transcribe.json"))
    args = ap.parse_args()

    gen = PageGenerator(seed=99, split="test")
    scans = [images.encode_png(gen.sample(i).image) for i in range(args.pages)]
    workdir = Path(tempfile.mkdtemp(prefix="htr-bench-"))
    for i, data in enumerate(scans):
        (workdir / "in").mkdir(exist_ok=True)
        (workdir / "in" / f"{i:04d}.png").write_bytes(data)

    torch.set_num_threads(os.cpu_count() or 1)
    rec = Recognizer.from_uri(args.model)
    filter_uri = None if args.filter in ("", "none") else args.filter
    flt = PrintedFilter.from_uri(filter_uri) if filter_uri else None
    t = time.perf_counter()
    rows = [r for data in scans for r in pages.transcribe_bytes(data, rec, printed_filter=flt)]
    single_s = time.perf_counter() - t
    n_lines = sum(len(r["lines"]) for r in rows)
    boxes = sum(len(segment.segment_page(images.decode_gray(d)).boxes) for d in scans[:4])

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = TranscribeConfigCore(input=str(workdir / "in"), output=str(workdir / "out"), model=args.model,
                               workers=args.workers, batch_size=4, printed_filter=filter_uri)
    t = time.perf_counter()
    summary = run(cfg, on_progress=lambda m: None)
    ray_s = time.perf_counter() - t
    ray.shutdown()

    crops = []
    for data in scans[:4]:
        seg = segment.segment_page(images.decode_gray(data))
        crops += [segment.crop(seg.page, b) for b in seg.boxes]
    flops = model_flops_per_line(rec, crops)
    gflops = matmul_gflops()
    bound_lps = gflops * 1e9 / flops
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "pages": args.pages, "lines": n_lines, "workers": args.workers, "model": args.model, "filter": filter_uri,
        "single_process": {"seconds": round(single_s, 2), "pages_per_s": round(args.pages / single_s, 2),
                           "lines_per_s": round(n_lines / single_s, 1)},
        "ray_data_job": {"seconds": round(ray_s, 2), "pages_per_s": round(summary.pages / ray_s, 2),
                         "lines_per_s": round(summary.lines / ray_s, 1), "lines": summary.lines},
        "model_mflops_per_line": round(flops / 1e6, 1), "matmul_gflops": round(gflops, 1),
        "model_bound_lines_per_s": round(bound_lps, 1),
        "segment_boxes_first_4_pages": boxes,
    }
    print(f"\nbulk transcription, {args.pages} generated pages ({n_lines} lines), model {args.model}")
    print(f"{'path':<34}{'seconds':>9}{'pages/s':>9}{'lines/s':>9}")
    print(f"{'single process loop':<34}{single_s:>9.1f}{args.pages / single_s:>9.2f}{n_lines / single_s:>9.1f}")
    print(f"{'Ray Data job (incl. Ray start-up)':<34}{ray_s:>9.1f}{summary.pages / ray_s:>9.2f}{summary.lines / ray_s:>9.1f}")
    print(f"{'model bound (FLOPs / matmul rate)':<34}{'':>9}{'':>9}{bound_lps:>9.1f}")
    print(f"model: {flops / 1e6:.1f} MFLOP per line; matmul {gflops:.1f} GFLOP/s on {os.cpu_count()} cores")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
