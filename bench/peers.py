"""htr-ray's bulk job side by side with Tesseract 5 and RapidOCR: the same pages, the same cores, one
engine after the other.

    .venv/bin/python bench/peers.py --pages 40 [--workers 2] [--engines htr-ray,tesseract,rapidocr]
                                     [--htr-variant 'filter off=--printed-filter none'] [--json out.json]

Pages (:func:`build_page_set`): composed by :func:`htr_ray.data.synth.layout_pages.compose_page` from the
lines of HELD-OUT IAM-OnDB forms (the test split of :func:`htr_ray.data.datasets.split_by_group` by form)
on plain and ruled paper and on printed forms, plus generated forms written in the test fonts; written
in turn as PNG, JPEG and TIFF. The ground truth of a page is its handwritten lines in reading order.

Engines, each on all the pages, each with 2 processes (or actors) of 1 thread on the same cores:
  - htr-ray: ``jobs/transcribe.py`` as a user runs it (its flags build its config), in a child process
    that is the job's driver; Ray starts inside it. pages/s use the job's own clock (``_summary.json``:
    listing to last commit, actor start and model load included, Ray start-up not), and the
    wall clock with Ray start-up is reported too. Per-stage seconds come from each page's ``timings``.
  - Tesseract 5 (Debian ``tesseract-ocr``): ``tesseract <file> stdout --psm 3 -l eng``,
    ``OMP_THREAD_LIMIT=1``, 2 at a time.
  - RapidOCR (``rapidocr-onnxruntime``: PP-OCRv4 det + rec, ONNX Runtime, models in the wheel): 2 worker
    processes, each with one engine of ``intra_op_num_threads=1``.

Figures: pages/s; lines/s = the pages' handwritten truth lines per second (the same count for every
engine, so the two rates rank engines alike); page CER (:func:`page_errors`): the edit distance between
the engine's page text and the truth text, both with every run of whitespace (line breaks included)
made one space, summed over pages and divided by the truth's characters. Whatever an engine outputs
beyond the handwriting (printed form labels it reads) counts as insertions: the task is the handwriting.

Memory: peak RSS (``VmHWM``) of the htr-ray driver, of each recogniser actor (sampled from /proc while the
job runs), of each Tesseract process (GNU ``time -f %M``) and of each RapidOCR worker process.

Peers are for this benchmark only (CI does not need them). Install them with
    apt-get install tesseract-ocr
    .venv/bin/pip install --no-deps rapidocr-onnxruntime pyclipper shapely
(``--no-deps``: its requirement on ``opencv-python`` would overwrite the project's headless OpenCV build).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from htr_ray.evaluation.metrics import char_errors  # noqa: E402

FORMATS = ("png", "jpg", "tif")
INSTALL = {
    "tesseract": "apt-get install tesseract-ocr   (Debian's Tesseract 5 with the English model)",
    "rapidocr": ".venv/bin/pip install --no-deps rapidocr-onnxruntime pyclipper shapely",
}


# ------------------------------------------------------------------------------------- the page set


def composed_kinds() -> tuple[str, ...]:
    """Every composer kind with handwriting on it: real IAM-OnDB pages and forms, and generated forms."""
    from htr_ray.data.synth import layout_pages

    return tuple(layout_pages.IAM_KINDS) + ("generated",)


def compose(index: int, seed: int, kind: str):
    """(gray image, handwritten truth lines, their text in reading order) of one test-split page."""
    from htr_ray.data.synth import layout_pages

    page = layout_pages.compose_page(seed * 100_003 + index, "test", kind)
    return page.image, [ln["text"] for ln in page.handwritten_lines], page.handwritten_text


def encode(gray: np.ndarray, fmt: str) -> bytes:
    params = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 3], "jpg": [cv2.IMWRITE_JPEG_QUALITY, 90], "tif": []}[fmt]
    ok, buf = cv2.imencode("." + fmt, gray, params)
    if not ok:
        raise RuntimeError(f"could not encode a page as {fmt}")
    return buf.tobytes()


def build_page_set(folder: str | Path, pages: int, seed: int = 14, kinds: tuple[str, ...] | None = None) -> list[dict]:
    """Write ``pages`` scans into ``folder`` (kinds and formats in turn) and return their manifest:
    ``{"file", "kind", "format", "lines", "truth"}`` per page, also written as ``folder/../manifest.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = tuple(kinds or composed_kinds())
    manifest = []
    for i in range(pages):
        kind, fmt = kinds[i % len(kinds)], FORMATS[(i // len(kinds)) % len(FORMATS)]
        gray, lines, truth = compose(i, seed, kind)
        name = f"page-{i:04d}-{kind}.{fmt}"
        (folder / name).write_bytes(encode(gray, fmt))
        manifest.append({"file": name, "kind": kind, "format": fmt, "lines": len(lines), "truth": truth})
    (folder.parent / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


# ----------------------------------------------------------------------------------------- scoring


def normalise(text: str) -> str:
    """Every run of whitespace (line breaks included) becomes one space; ends stripped."""
    return " ".join((text or "").split())


def page_errors(truth: str, hypothesis: str) -> tuple[int, int]:
    """(character edit distance, truth characters) of one page's text, whitespace normalised."""
    return char_errors(normalise(truth), normalise(hypothesis))


def score(manifest: list[dict], texts: dict[str, str]) -> dict:
    """Page CER over all pages and per kind; a page an engine gave no text for scores as all deleted."""
    groups: dict[str, list[int]] = {}
    for entry in manifest:
        e, n = page_errors(entry["truth"], texts.get(entry["file"], ""))
        for g in ("all", entry["kind"]):
            acc = groups.setdefault(g, [0, 0, 0])
            acc[0], acc[1], acc[2] = acc[0] + e, acc[1] + n, acc[2] + 1
    return {g: {"page_cer": round(e / max(n, 1), 4), "errors": e, "chars": n, "pages": p}
            for g, (e, n, p) in groups.items()}


# ------------------------------------------------------------------------------------------ memory


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, MB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ProcSampler:
    """Samples /proc while a run goes on: the highest VmHWM seen of every process whose command line
    matches ``pattern`` (Ray sets an actor's title to ``ray::<ActorClass>...``)."""

    def __init__(self, pattern: str, every: float = 0.2):
        self.pattern, self.every = re.compile(pattern), every
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid_dir in glob.glob("/proc/[0-9]*"):
                try:
                    cmd = Path(pid_dir, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue
                if not self.pattern.search(cmd):
                    continue
                pid = int(pid_dir.rsplit("/", 1)[1])
                mb = peak_rss_mb(pid)
                if mb is not None and mb >= self.peaks.get(pid, ("", 0.0))[1]:
                    self.peaks[pid] = (cmd[:80], mb)
            self._stop.wait(self.every)

    def __enter__(self) -> "ProcSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------- engines


def run_tesseract(folder: Path, files: list[str], procs: int = 2) -> dict:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    peaks: list[float] = []

    timer = shutil.which("time") or "/usr/bin/time"

    def one(name: str) -> str:
        # GNU time reports the peak RSS of tesseract itself: wait4 from this (large) process would
        # report ours, which a forked child inherits as its high-water mark until it execs
        p = subprocess.run([timer, "-f", "maxrss_kb=%M", "tesseract", str(folder / name), "stdout", "--psm", "3",
                            "-l", "eng"], env=env, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError(f"tesseract failed on {name} (exit {p.returncode}): {p.stderr[-300:]!r}")
        peaks.extend(int(m) / 1024 for m in re.findall(rb"maxrss_kb=(\d+)", p.stderr))
        return p.stdout.decode("utf-8", errors="replace")

    started = time.perf_counter()
    with ThreadPoolExecutor(procs) as pool:
        texts = dict(zip(files, pool.map(one, files)))
    return {"seconds": time.perf_counter() - started, "texts": texts,
            "memory_mb": {"per process (max)": round(max(peaks), 1)}}


_RAPID = None


def _rapid_init() -> None:
    global _RAPID
    from rapidocr_onnxruntime import RapidOCR

    _RAPID = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)


def _rapid_one(path: str) -> tuple[str, int]:
    result, _ = _RAPID(path)
    return "\n".join(r[1] for r in result or []), os.getpid()


def run_rapidocr(folder: Path, files: list[str], procs: int = 2) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with ctx.Pool(procs, initializer=_rapid_init) as pool:
        out = pool.map(_rapid_one, [str(folder / f) for f in files], chunksize=1)
        peaks = [peak_rss_mb(p.pid) for p in pool._pool]  # the workers, still alive
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "texts": {f: t for f, (t, _) in zip(files, out)},
            "memory_mb": {"per worker process (max)": round(max(p for p in peaks if p), 1)}}


def run_htr(input_dir: Path, output_dir: Path, workers: int, flags: list[str]) -> dict:
    """The bulk job in a child process (the driver), its recogniser actors sampled from /proc."""
    stats = output_dir.parent / f"{output_dir.name}.driver.json"
    shutil.rmtree(output_dir, ignore_errors=True)  # a rerun of the bench must not find its pages done
    cmd = [sys.executable, str(Path(__file__).resolve()), "--as-driver", str(stats), "--",
           "--input", str(input_dir), "--output", str(output_dir), "--workers", str(workers), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    with ProcSampler(r"^ray::") as sampler:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the bulk job failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    driver = json.loads(stats.read_text())
    summary = json.loads((output_dir / "_summary.json").read_text())
    rows = read_results(output_dir)
    texts = {Path(r["uri"]).name: r.get("text") or "" for r in rows}
    actors = [mb for cmd_, mb in sampler.peaks.values() if "Recogni" in cmd_ or "MapWorker" in cmd_]
    others = [mb for cmd_, mb in sampler.peaks.values() if not ("Recogni" in cmd_ or "MapWorker" in cmd_)]
    seconds = float(summary.get("run", {}).get("seconds") or driver["seconds"])
    return {"seconds": seconds, "wall_with_ray_start": wall, "texts": texts,
            "stages": stage_split(rows, seconds, workers), "errors": sum(r.get("status") != "ok" for r in rows),
            "memory_mb": {"driver": round(driver["peak_rss_mb"], 1),
                          "recogniser actor (max)": round(max(actors), 1) if actors else None,
                          "recogniser actors": len(actors),
                          "other Ray workers (max)": round(max(others), 1) if others else None},
            "job_stdout": proc.stdout.strip().splitlines()[-3:]}


def read_results(output_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for part in sorted(glob.glob(str(output_dir / "**" / "*.parquet"), recursive=True)):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def stage_split(rows: list[dict], seconds: float, cores: int) -> dict:
    """Mean ms of core time per page in each stage the pages' ``timings`` name, and the rest of the
    job's core time (``seconds`` x ``cores``) as Ray overhead: scheduling, the object store, actor
    start and model load, idle cores, the driver's commits."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok or not any(r.get("timings") for r in ok):
        return {"note": "the job's rows carry no per-stage timings"}
    stages: dict[str, float] = {}
    for r in ok:
        for k, v in (r.get("timings") or {}).items():
            stages[k] = stages.get(k, 0.0) + float(v or 0.0)
    n = len(ok)
    out = {k: round(1000 * v / n, 1) for k, v in stages.items()}
    out["ray_overhead"] = round(1000 * (seconds * cores - sum(stages.values())) / n, 1)
    out["total_core_ms_per_page"] = round(1000 * seconds * cores / n, 1)
    return out


def as_driver(stats_path: str, job_args: list[str]) -> int:
    """Run ``jobs/transcribe.py`` in this process, then record its peak RSS: the driver's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("transcribe_job", REPO / "jobs" / "transcribe.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    started = time.perf_counter()
    rc = job.main(job_args)
    Path(stats_path).write_text(json.dumps({
        "seconds": time.perf_counter() - started,
        # VmHWM, not getrusage: ru_maxrss counts the parent's pages this process had before it exec'd
        "peak_rss_mb": peak_rss_mb(os.getpid()), "rc": rc}))
    return int(rc or 0)


# -------------------------------------------------------------------------------------------- main


def check_peers(engines: list[str]) -> list[str]:
    missing = []
    if "tesseract" in engines and not shutil.which("tesseract"):
        missing.append("tesseract")
    if "rapidocr" in engines:
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError:
            missing.append("rapidocr")
    return missing


def peer_versions() -> dict:
    out = {}
    if shutil.which("tesseract"):
        out["tesseract"] = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    try:
        from importlib.metadata import version

        out["rapidocr"] = "rapidocr-onnxruntime " + version("rapidocr-onnxruntime") + ", onnxruntime " + version("onnxruntime")
    except Exception:
        pass
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--as-driver":
        return as_driver(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--workers", type=int, default=2, help="processes (actors) per engine")
    ap.add_argument("--engines", default="htr-ray,tesseract,rapidocr")
    ap.add_argument("--htr-variant", action="append", default=[],
                    help="'label=flags' for the bulk job (repeatable); default: one run with its default flags")
    ap.add_argument("--workdir", default=None, help="where the pages and outputs go (default: a temp folder)")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "peers.json"))
    args = ap.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    missing = check_peers(engines)
    if missing:
        for m in missing:
            print(f"{m} is not installed; install it with:  {INSTALL[m]}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="htr-peers-"))
    t = time.perf_counter()
    manifest = build_page_set(work / "pages", args.pages, args.seed)
    files = [m["file"] for m in manifest]
    truth_lines = sum(m["lines"] for m in manifest)
    print(f"{len(manifest)} pages ({truth_lines} handwritten lines; kinds "
          f"{sorted({m['kind'] for m in manifest})}; {', '.join(FORMATS)}) built in {time.perf_counter() - t:.0f}s under {work}")

    results = []
    for engine in engines:
        if engine == "htr-ray":
            variants = [v.split("=", 1) for v in args.htr_variant] or [["default flags", ""]]
            for i, (label, flags) in enumerate(variants):
                r = run_htr(work / "pages", work / f"out-{i}", args.workers, shlex.split(flags))
                r["engine"] = f"htr-ray bulk job, {label}".strip(", ")
                results.append(r)
        elif engine == "tesseract":
            r = run_tesseract(work / "pages", files, args.workers)
            r["engine"] = f"Tesseract 5 (--psm 3, {args.workers} processes x 1 thread)"
            results.append(r)
        elif engine == "rapidocr":
            r = run_rapidocr(work / "pages", files, args.workers)
            r["engine"] = f"RapidOCR (PP-OCRv4, ONNX Runtime, {args.workers} processes x 1 thread)"
            results.append(r)
        else:
            raise SystemExit(f"unknown engine {engine!r}")
        r["score"] = score(manifest, r.pop("texts"))
        print(f"  {r['engine']}: {r['seconds']:.1f}s, page CER {r['score']['all']['page_cer']:.3f}", flush=True)

    kinds = sorted({m["kind"] for m in manifest})
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
           "load_average_at_end": os.getloadavg(), "pages": len(manifest), "truth_lines": truth_lines,
           "workers": args.workers, "seed": args.seed, "versions": peer_versions(), "engines": []}
    print(f"\n{len(manifest)} pages, {truth_lines} handwritten lines, {args.workers} processes per engine, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print("| engine | pages/s | lines/s | page CER | " + " | ".join(f"CER {k}" for k in kinds) + " | peak RSS (MB) |")
    print("|---|---|---|---|" + "---|" * len(kinds) + "---|")
    for r in results:
        mem = ", ".join(f"{k} {v}" for k, v in r["memory_mb"].items() if v is not None and k != "recogniser actors")
        row = {"engine": r["engine"], "seconds": round(r["seconds"], 2),
               "pages_per_s": round(len(manifest) / r["seconds"], 2), "lines_per_s": round(truth_lines / r["seconds"], 1),
               **{k: v for k, v in r.items() if k not in ("engine", "seconds")}}
        out["engines"].append(row)
        print(f"| {r['engine']} | {row['pages_per_s']:.2f} | {row['lines_per_s']:.1f} | {r['score']['all']['page_cer']:.3f} | "
              + " | ".join(f"{r['score'].get(k, {}).get('page_cer', float('nan')):.3f}" for k in kinds) + f" | {mem} |")
    for r in out["engines"]:
        if "stages" in r:
            print(f"\n{r['engine']}: core ms per page by stage: " + json.dumps(r["stages"])
                  + f"; wall with Ray start-up {r['wall_with_ray_start']:.1f}s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
