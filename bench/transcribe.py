"""Bulk transcription throughput: the Ray Data job vs plain loops on the same cores, time per stage,
and the recogniser against its FLOP bound.

    .venv/bin/python bench/transcribe.py --pages 48 [--cores 2] [--backend onnx --quantize int8] [--json out.json]
    .venv/bin/python bench/transcribe.py --backend-check 300      # CER + lines/s: torch fp32 vs ONNX int8

Same pages (composed from held-out IAM-OnDB forms: plain, ruled, and printed cheque / prescription /
homework forms filled in with real handwriting, plus generated pages in unseen fonts,
:func:`htr_ray.data.synth.layout_pages.compose_page`), same page reader, same recogniser spec:

  1. one process, one thread: ``PageReader.read_many`` over chunks of 8 pages (lines batched across
     pages as in the job); per page the time of each stage (decode, find lines, recognise, assemble);
  2. a plain loop on all ``--cores``: a process pool of that many one-thread processes, each running (1)
     on its share of the pages: the best a program without Ray does on these cores;
  3. the Ray Data job (:func:`htr_ray.distributed.transcribe.run`) on a local Ray of ``--cores`` CPUs
     (started before the clock), one recogniser actor per core; its stage seconds come from the
     results, and "Ray overhead" is what is left of cores x wall time per page (scheduling, object
     store, serialisation, idle cores);
  4. the bound: FLOPs of the recogniser per line (on these pages' crops) against a large fp32 matmul's
     GFLOP/s on one thread.
Page CER is scored on the handwritten lines (printed lines out), as bench/page_quality.py does.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from htr_ray import paths
from htr_ray.data.synth.layout_pages import IAM_KINDS, compose_page
from htr_ray.evaluation.evaluate import score_page
from htr_ray.evaluation.metrics import cer
from htr_ray.io import images
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.pages.reader import PageReader
from htr_ray.pages.results import STAGES
from htr_ray.recognition.spec import RecognizerSpec

REPO = paths.REPO_ROOT
KINDS = IAM_KINDS + ("generated",)


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def model_flops_per_line(rec, crops: list[np.ndarray]) -> float:
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


def make_pages(n: int, seed: int) -> list[tuple[str, bytes, list[dict]]]:
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        page = compose_page(seed + i, "test", kind)
        out.append((f"{i:04d}-{kind}.png", images.encode_png(page.image),
                    [ln for ln in page.lines if ln["kind"] == "handwritten"]))
    return out


_RECOGNIZERS: dict[str, object] = {}


def _recognizer(spec: dict):
    key = json.dumps(spec, sort_keys=True)
    if key not in _RECOGNIZERS:
        _RECOGNIZERS[key] = RecognizerSpec(**spec).build()
    return _RECOGNIZERS[key]


def _loop(args) -> list[dict]:
    """One process, one thread: read pages in chunks of 8; rows of the results."""
    spec, finder, flt, items = args
    torch.set_num_threads(1)
    reader = PageReader(finder, printed_filter=flt, model=spec["model"])
    rec = _recognizer(spec)
    rows = []
    for k in range(0, len(items), 8):
        rows += [r.to_row() for r in reader.read_many(items[k:k + 8], rec)]
    return rows


def summarise(rows: list[dict], wall: float, cores: int, truth: dict) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    stage = {s: sum(r["timings"][s] for r in ok) for s in STAGES}
    n = max(len(ok), 1)
    errors = chars = 0
    for r in ok:
        sc = score_page(truth[Path(r["uri"]).name], r["lines"])
        errors, chars = errors + sc["errors"], chars + sc["chars"]
    lines = sum(len(r["lines"]) for r in ok)
    return {"pages": len(rows), "lines": lines, "seconds": round(wall, 2), "pages_per_s": round(len(rows) / wall, 2),
            "lines_per_s": round(lines / wall, 1), "page_cer": round(errors / max(chars, 1), 4),
            "ms_per_page": {s: round(1000 * v / n, 1) for s, v in stage.items()},
            "ray_overhead_ms_per_page": round(1000 * (cores * wall - sum(stage.values())) / n, 1)}


def backend_check(n: int, spec: RecognizerSpec) -> dict:
    """CER and lines/s (1 thread, batches of 32) of torch fp32 and ONNX Runtime int8 on ``n`` held-out
    IAM-OnDB lines (test forms): the measurement the bulk default is chosen on."""
    from htr_ray.training.loop import load_rows

    torch.set_num_threads(1)
    rows = []
    for row in load_rows(str(paths.shared_data() / "iam_ondb_lines"), "test"):
        rows.append((images.decode_gray(row["image"]), row["text"]))
        if len(rows) >= n:
            break
    imgs, truth = [g for g, _ in rows], [t for _, t in rows]
    out = {}
    ref = None
    for name, s in (("torch fp32", spec.replace(backend="torch", quantize=None, threads=1)),
                    ("onnx int8", spec.replace(backend="onnx", quantize="int8", threads=1))):
        rec = s.build()
        rec.recognize(imgs[:8])
        t = time.perf_counter()
        hyp = [r.text for r in rec.recognize(imgs)]
        dt = time.perf_counter() - t
        ref = ref or hyp
        out[name] = {"cer": round(cer(truth, hyp), 4), "lines_per_s": round(len(imgs) / dt, 1),
                     "same_text_as_torch": round(sum(a == b for a, b in zip(hyp, ref)) / len(ref), 3)}
    return {"lines": len(imgs), "decoder": spec.decoder or "model default", **out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=48)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--model", default=RecognizerSpec().model)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--line-finder", default="auto")
    ap.add_argument("--filter", default=DEFAULT_FILTER, help="printed-text filter URI (opencv finder), or none")
    ap.add_argument("--skip", nargs="*", default=[], choices=["single", "pool", "ray", "bound"])
    ap.add_argument("--backend-check", type=int, default=0, help="only compare torch fp32 and ONNX int8 on N IAM lines")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "transcribe.json"))
    args = ap.parse_args()
    spec = RecognizerSpec(model=args.model, backend=args.backend, quantize=args.quantize, threads=1)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, no GPU, load average {os.getloadavg()[0]:.1f} at start"
    if args.backend_check:
        res = {"date": time.strftime("%Y-%m-%d"), "machine": machine, **backend_check(args.backend_check, spec)}
        print(json.dumps(res, indent=1))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    flt = None if args.filter in ("", "none") else args.filter
    t = time.perf_counter()
    pages = make_pages(args.pages, args.seed)
    print(f"composed {len(pages)} pages in {time.perf_counter() - t:.0f}s ({', '.join(KINDS)} in turn, test split)")
    truth = {name: lines for name, _, lines in pages}
    items = [(name, data) for name, data, _ in pages]
    finder = PageReader(args.line_finder, printed_filter=flt).finder_name
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "pages": len(pages), "cores": args.cores,
              "recognizer": spec.as_dict(), "line_finder": finder, "filter": flt, "paths": {}}

    if "single" not in args.skip:
        t = time.perf_counter()
        rows = _loop((spec.as_dict(), args.line_finder, flt, items))
        result["paths"]["one process, 1 thread"] = summarise(rows, time.perf_counter() - t, 1, truth)
    if "pool" not in args.skip:
        shares = [items[i::args.cores] for i in range(args.cores)]
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.cores) as pool:
            pool.map(_warm, [(spec.as_dict(), args.line_finder, flt)] * args.cores)  # imports + model load off the clock
            t = time.perf_counter()
            rows = [r for part in pool.map(_loop, [(spec.as_dict(), args.line_finder, flt, s) for s in shares]) for r in part]
            wall = time.perf_counter() - t
        result["paths"][f"plain loop, {args.cores} processes"] = summarise(rows, wall, args.cores, truth)
    if "ray" not in args.skip:
        from htr_ray.distributed.runtime import ensure_ray
        from htr_ray.distributed.transcribe import TranscribeConfig, run
        from htr_ray.pages.output import committed_rows

        workdir = Path(tempfile.mkdtemp(prefix="htr-bench-"))
        (workdir / "in").mkdir()
        for name, data in items:
            (workdir / "in" / name).write_bytes(data)
        ray = ensure_ray(num_cpus=args.cores, log_to_driver=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        cfg = TranscribeConfig(input=str(workdir / "in"), output=str(workdir / "out"), recognizer=spec,
                               workers=args.cores, line_finder=args.line_finder, printed_filter=flt or "none")
        t = time.perf_counter()
        summary = run(cfg, on_progress=lambda m: None)
        wall = time.perf_counter() - t
        rows = committed_rows(str(workdir / "out"), columns=("uri", "status", "lines", "timings"))
        result["paths"][f"Ray Data job, {args.cores} actors"] = r = summarise(rows, wall, args.cores, truth)
        # start-up (Ray workers, imports, model load / ONNX export in each actor) is on the job's clock; the
        # plain loop's is not (its pool is warmed first): the job's rate after its first results, too
        rest = wall - summary.first_batch_seconds
        r["first_batch"] = {"seconds": summary.first_batch_seconds, "pages": summary.first_batch_pages}
        r["pages_per_s_after_first_batch"] = round((summary.pages - summary.first_batch_pages) / max(rest, 1e-9), 3)
        ray.shutdown()
    if "bound" not in args.skip:
        torch.set_num_threads(1)
        rec = spec.replace(backend="torch", quantize=None).build()
        reader = PageReader(args.line_finder, printed_filter=flt)
        crops = [c for name, data in items[:4] for p in reader.prepare(name, data) for c in getattr(p, "crops", [])]
        flops = model_flops_per_line(rec, crops)
        gflops = matmul_gflops()
        result["bound"] = {"model_mflops_per_line": round(flops / 1e6, 1), "matmul_gflops_1_thread": round(gflops, 1),
                           "lines_per_s_per_core": round(gflops * 1e9 / flops, 1)}

    print(f"\nbulk transcription, {len(pages)} composed pages, finder {finder}, {spec.backend}"
          f"{' ' + spec.quantize if spec.quantize else ''}, {args.cores} cores ({machine})")
    print(f"{'path':<30}{'s':>7}{'pages/s':>9}{'lines/s':>9}{'CER':>7}  ms/page: " + " ".join(f"{s:>10}" for s in STAGES)
          + f"{'Ray+idle':>10}")
    for name, r in result["paths"].items():
        ms = r["ms_per_page"]
        print(f"{name:<30}{r['seconds']:>7.1f}{r['pages_per_s']:>9.2f}{r['lines_per_s']:>9.1f}{r['page_cer']:>7.3f}           "
              + " ".join(f"{ms[s]:>10.1f}" for s in STAGES) + f"{r['ray_overhead_ms_per_page']:>10.1f}")
    p = result["paths"]
    ray_key = next((k for k in p if k.startswith("Ray")), None)
    pool_key = next((k for k in p if k.startswith("plain")), None)
    if ray_key:
        r = p[ray_key]
        print(f"Ray Data job: first results after {r['first_batch']['seconds']:.1f}s ({r['first_batch']['pages']} pages), "
              f"then {r['pages_per_s_after_first_batch']:.2f} pages/s")
    if ray_key and pool_key:
        result["ray_vs_plain_loop"] = round(p[ray_key]["pages_per_s"] / p[pool_key]["pages_per_s"], 3)
        result["ray_after_first_batch_vs_plain_loop"] = round(
            p[ray_key]["pages_per_s_after_first_batch"] / p[pool_key]["pages_per_s"], 3)
        print(f"Ray Data job / plain loop on the same cores: {result['ray_vs_plain_loop']:.2f} "
              f"(after the job's first results: {result['ray_after_first_batch_vs_plain_loop']:.2f})")
    if "bound" in result:
        b = result["bound"]
        print(f"recogniser: {b['model_mflops_per_line']} MFLOP/line; matmul {b['matmul_gflops_1_thread']} GFLOP/s on one "
              f"thread -> bound {b['lines_per_s_per_core']} lines/s per core")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


def _warm(args) -> None:
    spec, finder, flt = args
    torch.set_num_threads(1)
    PageReader(finder, printed_filter=flt).finder  # noqa: B018
    _recognizer(spec)
    time.sleep(0.5)  # so that every worker of the pool takes one


if __name__ == "__main__":
    sys.exit(main())
