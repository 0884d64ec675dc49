"""CPU cost of each stage of the bulk job per page, on one core: the inputs of docs/scaling.md.

    .venv/bin/python bench/stage_costs.py --pages 12 [--json out.json]

One process, one thread (torch, OpenCV and BLAS pinned to 1), the bulk job's own defaults (its
config's line finder, printed filter and recogniser spec), on pages of bench/peers.py's page set.
Per page it measures *CPU* seconds of this thread (``time.thread_time``, so that other work on a shared
machine does not inflate the figures, as wall time would):

- decode: the scan's bytes -> gray page (``images.decode_pages``);
- find_lines: ``PageReader.prepare_gray`` (line finder, deskew, crops, input coordinates);
- recognize: the recogniser on the crops of ``--pages-per-call`` pages at once (batched as the actor does);
- assemble: ``PageReader.assemble`` -> PageResult; serialise: ``PageResult.to_row`` into Arrow.

And the result path (:func:`driver_write_cost`): in the actors, pages to rows and page files
(``--formats alto,page,hocr``, to a local folder here); on the driver, which one Python thread runs for
the whole cluster, the counts and the part files (JSONL + Parquet).

Also the bytes each page moves: the scan (an S3 GET), the crops (what crosses Ray's object store
between the prepare tasks and the recogniser actors) against the whole decoded page; and the
recogniser's forward FLOPs per line (torch backend, FlopCounterMode + the LSTM's products), the
figure a GPU estimate starts from.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from htr_ray import config  # noqa: E402
from htr_ray.io import images  # noqa: E402


def lstm_flops(model: torch.nn.Module, frames: int) -> float:
    total = 0.0
    for lstm in [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]:
        directions = 2 if lstm.bidirectional else 1
        for layer in range(lstm.num_layers):
            total += directions * frames * 2 * (getattr(lstm, f"weight_ih_l{layer}").numel()
                                                 + getattr(lstm, f"weight_hh_l{layer}").numel())
    return total


def flops_per_line(spec, crops: list[np.ndarray]) -> float | None:
    """Forward FLOPs per line of the spec's model run as torch (conv + linear counted by torch's
    FlopCounterMode, the LSTM's matrix products added: the counter does not see them)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        rec = spec.replace(backend="torch", quantize=None).build()
        model = rec.model
        if not isinstance(model, torch.nn.Module):
            return None
    except Exception as exc:  # an exported-only model: no torch graph to count
        print(f"FLOPs not counted: {exc}", file=sys.stderr)
        return None
    total = 0.0
    for c in crops:
        x = torch.from_numpy(images.pad_batch([images.normalize_line(c, rec.height, rec.max_width)])[0])
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            logits = model(x)
        total += counter.get_total_flops() + lstm_flops(model, logits.shape[1])
    return total / max(len(crops), 1)


def driver_write_cost(rows: list[dict], repeats: int = 3, pages_per_batch: int = 4) -> dict:
    """CPU ms per page of the result path, split where it runs now: in the CPU stage (the actors),
    ``result_table`` turns pages into rows (Arrow + JSONL line) and writes the page files; the driver
    only counts (``page_counts``) and commits (``PartWriter``: JSONL + Parquet) batches of
    ``pages_per_batch`` pages. Page files go to a local folder here (CPU only: on S3 each is also a PUT,
    made by the actor)."""
    from htr_ray.pages.output import PartWriter, page_counts, parse_formats, result_table
    from htr_ray.pages.results import PageResult

    results = [PageResult.from_row(r) for r in rows]
    out = {}
    for label, formats in (("actor: rows", None), ("actor: rows + alto,page,hocr files", "alto,page,hocr")):
        try:
            fmts = parse_formats(formats)
        except ValueError as exc:
            out[label] = f"n/a ({exc})"
            continue
        folder = tempfile.mkdtemp(prefix="htr-driver-write-")
        t = time.thread_time()
        for _ in range(repeats):
            tables = [result_table(results[i:i + pages_per_batch], folder, fmts)
                      for i in range(0, len(results), pages_per_batch)]
        out[label] = round(1000 * (time.thread_time() - t) / (repeats * max(len(rows), 1)), 2)
    folder = tempfile.mkdtemp(prefix="htr-driver-write-")
    t = time.thread_time()
    for r in range(repeats):
        writer = PartWriter(folder, f"bench{r}")
        for table in tables:
            page_counts(table)
            writer.add(table)
        writer.flush()
    out["driver: counts + parts"] = round(1000 * (time.thread_time() - t) / (repeats * max(len(rows), 1)), 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--pages-per-call", type=int, default=6, help="pages whose lines go to the recogniser at once")
    ap.add_argument("--workdir", default=None, help="a bench/peers.py page set to reuse (its pages/ and manifest.json)")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "stage_costs.json"))
    args = ap.parse_args()

    import peers
    import pyarrow as pa

    from htr_ray.pages.results import RESULT_SCHEMA
    from htr_ray.distributed.transcribe import TranscribeConfig, _filter_uri
    from htr_ray.pages.reader import PageReader

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="htr-stages-"))
    if (work / "manifest.json").exists():
        manifest = json.loads((work / "manifest.json").read_text())[: args.pages]
    else:
        manifest = peers.build_page_set(work / "pages", args.pages, args.seed)
    cfg = config.from_args(TranscribeConfig, ["--input", "-", "--output", "-"])
    spec = cfg.recognizer
    reader = PageReader(cfg.line_finder, _filter_uri(cfg.printed_filter))
    recognizer = spec.build()
    # one page through every stage outside the clock: lazy initialisation (the finder's model, the first
    # model call, pyarrow's first conversion with this schema: about half a second) is not per-page cost
    (warm,) = images.decode_pages((work / "pages" / manifest[0]["file"]).read_bytes())
    warm_page = reader.prepare_gray(warm, "warm-up")
    warm_row = reader.assemble(warm_page, recognizer.recognize(warm_page.crops)).to_row()
    pa.Table.from_pylist([warm_row], schema=RESULT_SCHEMA)

    cost = {k: 0.0 for k in ("decode", "find_lines", "recognize", "assemble", "serialise")}
    scan_bytes = page_bytes = crop_bytes = lines = 0
    all_crops: list[np.ndarray] = []
    all_rows: list[dict] = []
    for start in range(0, len(manifest), args.pages_per_call):
        group = manifest[start:start + args.pages_per_call]
        prepared = []
        for m in group:
            data = (work / "pages" / m["file"]).read_bytes()
            scan_bytes += len(data)
            t = time.thread_time()
            (gray,) = images.decode_pages(data)
            cost["decode"] += time.thread_time() - t
            page_bytes += gray.nbytes
            t = time.thread_time()
            p = reader.prepare_gray(gray, m["file"])
            cost["find_lines"] += time.thread_time() - t
            prepared.append(p)
        crops = [c for p in prepared for c in p.crops]
        crop_bytes += sum(c.nbytes for c in crops)
        lines += len(crops)
        all_crops += crops[:: max(1, len(crops) // 8)]
        t = time.thread_time()
        results = recognizer.recognize(crops) if crops else []
        cost["recognize"] += time.thread_time() - t
        k = 0
        rows = []
        for p in prepared:
            n = len(p.crops)
            t = time.thread_time()
            r = reader.assemble(p, results[k:k + n])
            cost["assemble"] += time.thread_time() - t
            t = time.thread_time()
            rows.append(r.to_row())
            cost["serialise"] += time.thread_time() - t
            k += n
        all_rows.extend(rows)
        t = time.thread_time()
        pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
        cost["serialise"] += time.thread_time() - t

    n = len(manifest)
    driver = driver_write_cost(all_rows)
    flops = flops_per_line(spec, all_crops[:24])
    per_page = {k: round(1000 * v / n, 1) for k, v in cost.items()}
    total_ms = sum(cost.values()) * 1000 / n
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
           "pages": n, "lines": lines, "lines_per_page": round(lines / n, 2),
           "kinds": sorted({m["kind"] for m in manifest}), "recognizer": spec.as_dict(),
           "line_finder": reader.finder_name, "printed_filter": _filter_uri(cfg.printed_filter),
           "cpu_ms_per_page": per_page, "cpu_ms_per_page_total": round(total_ms, 1),
           "pages_per_core_second": round(1000 / total_ms, 3),
           "recognize_cpu_ms_per_line": round(1000 * cost["recognize"] / max(lines, 1), 2),
           "bytes_per_page": {"scan": scan_bytes // n, "decoded_page": page_bytes // n, "crops": crop_bytes // n},
           "model_mflops_per_line": round(flops / 1e6, 1) if flops else None,
           "driver_write_cpu_ms_per_page": driver}
    print(f"{n} pages ({lines} lines, {lines / n:.1f} per page), one thread, line finder {reader.finder_name}, "
          f"recogniser backend {spec.backend} {spec.quantize or ''}; CPU ms per page by stage:")
    print("| stage | CPU ms / page |")
    print("|---|---|")
    for k, v in per_page.items():
        print(f"| {k} | {v} |")
    print(f"| total | {total_ms:.1f} |")
    print(f"-> {1000 / total_ms:.2f} pages per core-second; recognise {out['recognize_cpu_ms_per_line']} ms per line; "
          f"bytes per page: scan {out['bytes_per_page']['scan']:,}, page {out['bytes_per_page']['decoded_page']:,}, "
          f"crops {out['bytes_per_page']['crops']:,}; model {out['model_mflops_per_line']} MFLOP per line")
    print("result path, CPU ms per page: " + ", ".join(f"{k} {v}" for k, v in driver.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
