"""Closed-loop HTTP load on the Serve endpoint with real handwritten line images.

    .venv/bin/python bench/serve_load.py [--seconds 20] [--concurrency 1 8 32] [--model URI]

For batching on (max_batch_size 16; lines padded to a width bucket of 32 px, and of 8 px, the finer
bucket letting fewer lines share a batch) and off (max_batch_size 1): at each concurrency, that many
clients each send POST /v1/recognize, wait for the answer and send the next, for --seconds. Prints
requests/s and p50/p95/p99 latency, and the latency of the same images through the recognizer
called directly in this process (what Serve adds is the difference). Writes JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from htr_ray.data import labels
from htr_ray.io import images, storage  # noqa: E402
from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL  # noqa: E402


def held_out_lines(data_dir: Path, n: int) -> list[bytes]:
    """PNG bytes of IAM-OnDB lines from held-out (test-split) forms."""
    out = []
    for row in labels.read_rows(str(data_dir), split="test")[:n]:
        out.append(storage.read_bytes(row.image_uri()))
    return out


def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    deadline = time.time() + seconds
    latencies: list[float] = []
    errors = 0

    def client(k: int):
        nonlocal errors
        session = requests.Session()
        i = k
        while time.time() < deadline:
            t = time.perf_counter()
            r = session.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "image/png"}, timeout=120)
            latencies.append(time.perf_counter() - t)
            errors += r.status_code != 200
            i += concurrency

    started = time.time()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    elapsed = time.time() - started
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "rps": round(len(lat) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def mean_batch_since(url: str, seen: dict[int, int]) -> float:
    """Mean model batch size since the last call, from the batch-size counts of the replica that answers
    /v1/stats (if autoscaling started a second one, of one of them); updates ``seen``."""
    now = {int(k): v for k, v in requests.get(url.replace("/v1/recognize", "/v1/stats"), timeout=30)
           .json()["batch_sizes"].items()}
    delta = {k: v - seen.get(k, 0) for k, v in now.items() if v > seen.get(k, 0)}
    seen.clear()
    seen.update(now)
    return sum(k * v for k, v in delta.items()) / max(1, sum(delta.values()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "iam_ondb_lines"))
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "serve_load.json"))
    args = ap.parse_args()

    bodies = held_out_lines(Path(args.data), 64)
    from htr_ray.recognition.recognizer import Recognizer

    rec = Recognizer.from_uri(args.model)
    grays = [images.decode_gray(b) for b in bodies]
    rec.recognize(grays[:2])
    t = time.perf_counter()
    for g in grays:
        rec.recognize([g])
    direct_ms = (time.perf_counter() - t) / len(grays) * 1000

    import ray
    from ray import serve

    from htr_ray.distributed.serve import build_app

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1/recognize"
    results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
               "model": args.model, "direct_recognizer_ms_per_line": round(direct_ms, 1), "runs": []}
    modes = (("batching on, width bucket 32", 16, 32), ("batching on, width bucket 8", 16, 8),
             ("batching off (max_batch_size 1)", 1, 32))
    for label, batch, bucket in modes:
        serve.run(build_app({"model": args.model, "max_batch_size": batch, "batch_wait_timeout_s": 0.01,
                             "width_bucket": bucket}),
                  name="htr", route_prefix="/")
        closed_loop(url, bodies, 2, 3)  # warm-up
        seen: dict[int, int] = {}
        mean_batch_since(url, seen)  # count from here: not the warm-up's batches
        for c in args.concurrency:
            r = closed_loop(url, bodies, c, args.seconds)
            r["mode"] = label
            r["mean_batch"] = mean_batch_since(url, seen)
            results["runs"].append(r)
            print(f"{label:<34} c={c:<3} {r['rps']:>7.1f} req/s  p50 {r['p50_ms']:>7.1f} ms  "
                  f"p95 {r['p95_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  mean batch {r['mean_batch']:>5.1f}  "
                  f"errors {r['errors']}")
        serve.delete("htr")
    serve.shutdown()
    ray.shutdown()
    print(f"recognizer called directly, one line at a time: {direct_ms:.1f} ms per line")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
