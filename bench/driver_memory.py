"""What the bulk job's driver holds as the archive grows: the listing, the committed-row index and the
part bookkeeping, measured on a simulated archive of ``--keys`` scans, and the bytes per key.

    .venv/bin/python bench/driver_memory.py --keys 1000000 [--s3-keys 2000] [--workers 2000] [--json out.json]

1. The listing through real S3 requests: ``--s3-keys`` empty objects on moto's S3 server on loopback
   (started as tests/conftest.py starts it), listed with ``storage.list_uris`` (everything, sorted) and
   walked with ``storage.iter_uris`` (one LIST page at a time): Python heap per key (tracemalloc).
2. What the driver holds at ``--keys`` keys, from synthetic key names of a realistic length
   (``s3://bank-archive/scans/YYYY/MM/DD/branch-NNNN/cheque-NNNNNNNNN.tif``; creating a million objects on
   the test server would take hours), for a rerun after a crash at the half (the first half committed as
   Parquet part files of ``flush_pages`` rows, written by the job's ``PartWriter`` in a local folder),
   each step with the job's own functions (``htr_ray.pages.output``, ``htr_ray.distributed.transcribe``):
   - ``DoneIndex``: the URI range of each committed part, from its Parquet footer;
   - ``write_manifest``: the listing streamed (``storage.iter_uris``, fed the synthetic keys) into
     manifest shards of the URIs to do, each shard filtered against the parts its range overlaps;
   - ``read_tasks``: the Ray Data read tasks over those shards;
   - ``output_counts``: the end-of-run totals, part by part.
   Python heap by tracemalloc (retained after each step, and the peak), and the process's RSS.
3. Extrapolated to 100 M keys: bytes per key x 1e8, against a driver node's memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

from htr_ray.io import storage  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def synthetic_keys(n: int, bucket: str = "bank-archive") -> list[str]:
    """n URIs shaped like a dated archive of scans, 66-70 characters each."""
    return [f"s3://{bucket}/scans/2026/{1 + i % 12:02d}/{1 + i % 28:02d}/branch-{i % 5000:04d}/cheque-{i:09d}.tif"
            for i in range(n)]


class Heap:
    """tracemalloc bookkeeping: bytes retained since the last mark, and the peak in between."""

    def __init__(self):
        gc.collect()
        tracemalloc.start()
        self.base = self.origin = tracemalloc.get_traced_memory()[0]
        self.steps: list[dict] = []

    def step(self, name: str, keys: int, started: float, keep_from: int | None = None) -> None:
        gc.collect()
        cur, peak = tracemalloc.get_traced_memory()
        self.steps.append({"step": name, "retained_mb": round((cur - self.base) / 2**20, 1),
                           "peak_mb": round((peak - self.base) / 2**20, 1),
                           "retained_bytes_per_key": round((cur - self.base) / keys, 1),
                           "peak_bytes_per_key": round((peak - self.base) / keys, 1),
                           "seconds": round(time.perf_counter() - started, 2), "rss_mb": round(rss_mb(), 1)})
        tracemalloc.reset_peak()
        self.base = cur

    def rebase(self) -> None:
        """Leave what was allocated since the last step out of the next one (bench scaffolding)."""
        gc.collect()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]


# ------------------------------------------------------------------------------------- 1. real S3


def start_moto() -> tuple[subprocess.Popen, str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import free_port, wait_for_port

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    cmd = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_REGION": "us-east-1"})
    return proc, endpoint


def measure_s3_listing(n: int) -> dict:
    proc, _ = start_moto()
    try:
        prefix = "s3://bank-archive/scans/"
        storage.ensure_bucket(prefix)
        keys = [u[len("s3://bank-archive/"):] for u in synthetic_keys(n)]
        t = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: storage.write_bytes(f"s3://bank-archive/{k}", b""), keys))
        put_s = time.perf_counter() - t
        storage.list_uris(prefix)  # warm the client
        heap = Heap()
        t = time.perf_counter()
        listing = storage.list_uris(prefix)
        heap.step("list_uris (S3, sorted list)", n, t)
        assert len(listing) == n, len(listing)
        del listing
        heap.step("freed", n, time.perf_counter())
        t = time.perf_counter()
        count = sum(1 for _ in storage.iter_uris(prefix))
        heap.step("iter_uris (S3, streamed, counted)", n, t)
        tracemalloc.stop()
        return {"keys": count, "put_seconds": round(put_s, 1), "steps": [s for s in heap.steps if s["step"] != "freed"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------- 2. simulated 1 M keys


def write_committed_parts(output: str, uris: list[str], flush_pages: int) -> int:
    """The part files a run leaves: ``flush_pages`` result rows each, in the job's schema, written by the
    job's own PartWriter."""
    from htr_ray.pages import output as store

    schema = store.JOB_SCHEMA
    n = 0
    for start in range(0, len(uris), flush_pages):
        chunk = uris[start:start + flush_pages]
        cols = {f.name: pa.nulls(len(chunk), f.type) for f in schema}
        cols.update({"uri": pa.array(chunk), "page": pa.array([0] * len(chunk), pa.int32()),
                     "pages": pa.array([1] * len(chunk), pa.int32()), "status": pa.array(["ok"] * len(chunk)),
                     "error_kind": pa.array([""] * len(chunk)), "_json": pa.array(["{}"] * len(chunk)),
                     "_files": pa.array([0] * len(chunk), pa.int32())})
        writer = store.PartWriter(output, f"bench{n:06d}")
        writer.add(pa.table([cols[f.name] for f in schema], schema=schema))
        writer.flush()
        n += 1
    return n


def measure_driver(n: int, flush_pages: int, workdir: Path, workers: int = 32) -> dict:
    """A rerun after a crash at the half: the first half of the keys (in key order) is committed."""
    from htr_ray.distributed import transcribe
    from htr_ray.pages import output as store

    keys = sorted(synthetic_keys(n))
    mean_len = sum(map(len, keys)) / n
    output = str(workdir / "out")
    t = time.perf_counter()
    parts = write_committed_parts(output, keys[: n // 2], flush_pages)
    write_s = time.perf_counter() - t
    del keys

    transcribe.read_tasks([])  # import Ray Data before the heap is watched: its modules are not per key
    heap = Heap()
    t = time.perf_counter()
    done = store.DoneIndex(store.list_parts(output))
    heap.step(f"done index: DoneIndex, URI ranges of {parts} parts (half the keys committed)", n, t)
    # write_manifest streams storage.iter_uris; feed it the synthetic keys in key order, from a list made
    # outside the measured step (a real listing arrives one LIST page at a time)
    listing = sorted(synthetic_keys(n))
    heap.rebase()
    real_iter = storage.iter_uris
    storage.iter_uris = lambda prefix, suffixes=None, recursive=True, page_size=1000: iter(listing)
    try:
        t = time.perf_counter()
        manifest = store.write_manifest("s3://bank-archive/scans/", output, "bench", done)
        heap.step(f"listing -> manifest: write_manifest, {len(manifest.shards)} shards of the "
                  f"{manifest.todo:,} URIs to do (peak: one shard being filtered)", n, t)
    finally:
        storage.iter_uris = real_iter
    del listing
    heap.rebase()
    # the read tasks the dataset's datasource gives Ray (without a cluster: the objects the driver builds;
    # Ray then puts each in its object store, a few hundred bytes each, not measured here)
    rows_per_read = max(4, min(store.MANIFEST_ROWS_PER_GROUP, -(-manifest.todo // (workers * 16))))
    t = time.perf_counter()
    tasks = transcribe.read_tasks(manifest.slices(rows_per_read))
    heap.step(f"read tasks: {len(tasks):,} of {rows_per_read} URIs ({workers} workers)", n, t)
    heap.steps[-1]["bytes_per_read_task"] = round(heap.steps[-1]["retained_mb"] * 2**20 / max(len(tasks), 1))
    t = time.perf_counter()
    counts = store.output_counts(output)
    heap.step("end-of-run counts: output_counts (part by part, Arrow)", n, t)
    assert counts["rows"] == n // 2, counts
    held = tracemalloc.get_traced_memory()[0] - heap.origin
    del tasks, manifest, done
    tracemalloc.stop()
    return {"keys": n, "mean_uri_chars": round(mean_len, 1), "flush_pages": flush_pages, "parts": parts,
            "parts_write_seconds": round(write_s, 1), "held_at_end_of_run_mb": round(held / 2**20, 1),
            "held_at_end_of_run_bytes_per_key": round(held / n, 1), "steps": heap.steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--s3-keys", type=int, default=2000)
    ap.add_argument("--flush-pages", type=int, default=200, help="rows per part file (the job's default)")
    ap.add_argument("--workers", type=int, default=32, help="recogniser actors the read tasks are sized for")
    ap.add_argument("--node-gb", type=float, default=16.0, help="driver node memory for the 100 M verdict")
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "driver_memory.json"))
    args = ap.parse_args()

    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
           "python": platform.python_version()}
    if args.s3_keys:
        out["s3"] = measure_s3_listing(args.s3_keys)
    work = Path(tempfile.mkdtemp(prefix="htr-driver-mem-"))
    try:
        out["simulated"] = measure_driver(args.keys, args.flush_pages, work, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"driver memory, Python heap (tracemalloc); {time.strftime('%Y-%m-%d')}, {out['machine']}")
    if "s3" in out:
        print(f"\nreal S3 listing (moto on loopback), {out['s3']['keys']} keys:")
        for s in out["s3"]["steps"]:
            print(f"  {s['step']:<58} retained {s['retained_bytes_per_key']:>7.0f} B/key   peak {s['peak_bytes_per_key']:>7.0f} B/key")
    sim = out["simulated"]
    print(f"\nsimulated archive: {sim['keys']:,} keys (URIs of {sim['mean_uri_chars']} chars), {sim['parts']} part files")
    print("| step | retained MB | peak MB | retained B/key | peak B/key | seconds | at 100 M keys (retained, GB) |")
    print("|---|---|---|---|---|---|---|")
    for s in sim["steps"]:
        s["at_100M_gb"] = round(s["retained_bytes_per_key"] * 1e8 / 1e9, 1)
        print(f"| {s['step']} | {s['retained_mb']} | {s['peak_mb']} | {s['retained_bytes_per_key']:.0f} | "
              f"{s['peak_bytes_per_key']:.0f} | {s['seconds']} | {s['at_100M_gb']} |")
    per_key = sim["held_at_end_of_run_bytes_per_key"]
    print(f"held at the end of run() (done index, manifest, read tasks, counts): {per_key:.0f} B/key -> "
          f"{per_key * 1e8 / 1e9:.0f} GB at 100 M keys "
          f"({'does not fit' if per_key * 1e8 / 1e9 > args.node_gb else 'fits'} in a {args.node_gb:.0f} GB driver)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
