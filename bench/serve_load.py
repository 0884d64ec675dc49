"""Closed-loop HTTP load on the Serve endpoint with real handwritten line images.

    .venv/bin/python bench/serve_load.py [--seconds 20] [--concurrency 1 8 32] [--replicas 1]
                                         [--batch-wait S] [--threads N] [--json PATH]

The app is the one serve_config.yaml describes (htr_ray.distributed.serve.make_app reads it), run
twice: batching as configured, and batching off (max_batch_size 1). At each concurrency, that many
clients each POST /v1/recognize with a held-out IAM-OnDB line (test-split forms), wait for the
answer and send the next, for --seconds. Per run: requests/s, client latency p50/p95/p99, the time
the replica itself spent on the request (the answer's "seconds": decode + batch wait + model + JSON),
the mean model batch, and the peak RSS (VmHWM) of the Recognizer and Pages replicas. The same lines
through the recognizer called directly in this process give the model's own time: what Serve adds is
the difference. Prints a table and writes JSON.

--replicas pins the Recognizer's replica count (autoscaling off) so that runs compare like with like;
--batch-wait and --threads override the config's batch_wait_timeout_s and the recognizer's torch
threads, to measure what each setting buys.
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

from htr_ray import paths  # noqa: E402
from htr_ray.data import labels  # noqa: E402
from htr_ray.io import images, storage  # noqa: E402
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL, RecognizerSpec  # noqa: E402


def held_out_lines(data_dir: str, n: int) -> list[bytes]:
    """PNG bytes of IAM-OnDB lines from held-out (test-split) forms."""
    rows = labels.read_rows(data_dir, split="test")[:n]
    return [storage.read_bytes(r.image_uri()) for r in rows]


def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    deadline = time.time() + seconds
    latencies: list[float] = []
    server: list[float] = []
    errors = 0

    def client(k: int):
        nonlocal errors
        session = requests.Session()
        i = k
        while time.time() < deadline:
            t = time.perf_counter()
            r = session.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "image/png"}, timeout=120)
            latencies.append(time.perf_counter() - t)
            if r.status_code == 200:
                server.append(r.json()["seconds"])
            else:
                errors += 1
            i += concurrency

    started = time.time()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    elapsed = time.time() - started
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "rps": round(len(lat) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "replica_p50_ms": round(float(np.percentile(np.array(server) * 1000, 50)), 1) if server else None}


def stats(base: str) -> dict:
    return requests.get(f"{base}/v1/stats", timeout=60).json()


def mean_batch_since(before: dict, after: dict) -> float:
    """Mean model batch between two batch-size counts of the (one) Recognizer replica."""
    delta = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    return round(sum(k * v for k, v in delta.items()) / max(1, sum(delta.values())), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL)
    ap.add_argument("--replicas", type=int, default=1, help="Recognizer replicas (autoscaling off); 0: as configured")
    ap.add_argument("--batch-wait", type=float, default=None, help="override batch_wait_timeout_s of serve_config.yaml")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the recognizer (default: Ray's, 1 a CPU)")
    ap.add_argument("--modes", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--data", default=str(paths.shared_data() / "iam_ondb_lines"))
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "serve_load.json"))
    args = ap.parse_args()

    bodies = held_out_lines(args.data, 64)
    spec = RecognizerSpec(model=args.model, threads=args.threads)
    rec = spec.build()
    grays = [images.decode_gray(b) for b in bodies]
    rec.recognize(grays[:2])
    t = time.perf_counter()
    for g in grays:
        rec.recognize([g])
    direct_ms = (time.perf_counter() - t) / len(grays) * 1000
    del rec

    from ray import serve

    from htr_ray.distributed.runtime import ensure_ray
    from htr_ray.distributed.serve import config_deployments, make_app

    ensure_ray(log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    configured = config_deployments()["Recognizer"]["user_config"]
    load = os.getloadavg()[0]
    results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
               "load_average_at_start": round(load, 1), "model": args.model, "replicas": args.replicas,
               "direct_recognizer_ms_per_line": round(direct_ms, 1), "serve_config_user_config": configured,
               "runs": []}
    print(f"load average at start {load:.1f}; recognizer directly, one line at a time: {direct_ms:.1f} ms per line")
    for mode in args.modes:
        user_config = dict(configured)
        if args.batch_wait is not None:
            user_config["batch_wait_timeout_s"] = args.batch_wait
        if mode == "off":
            user_config["max_batch_size"] = 1
        overrides = {"Recognizer": {"user_config": user_config}}
        if args.replicas:
            overrides["Recognizer"].update(num_replicas=args.replicas, autoscaling_config=None)
        label = (f"batching on (max_batch_size {user_config['max_batch_size']}, "
                 f"wait {user_config['batch_wait_timeout_s'] * 1000:g} ms)" if mode == "on"
                 else "batching off (max_batch_size 1)")
        serve.run(make_app({"recognizer": {"model": args.model, "threads": args.threads}}, overrides=overrides),
                  name="htr", route_prefix="/")
        closed_loop(f"{base}/v1/recognize", bodies, 2, 3)  # warm-up
        for c in args.concurrency:
            before = stats(base)["recognizer"]["batch_sizes"]
            r = closed_loop(f"{base}/v1/recognize", bodies, c, args.seconds)
            after = stats(base)
            r.update(mode=label, mean_batch=mean_batch_since(before, after["recognizer"]["batch_sizes"]),
                     recognizer_peak_rss_mb=after["recognizer"].get("peak_rss_mb"),
                     pages_peak_rss_mb=after["pages"].get("peak_rss_mb"),
                     recognizer_memory={k: v for k, v in after["recognizer"].items() if k.endswith("_mb")},
                     pages_memory={k: v for k, v in after["pages"].items() if k.endswith("_mb")},
                     torch_threads=after["recognizer"]["torch_threads"])
            results["runs"].append(r)
            print(f"{label:<44} c={c:<3} {r['rps']:>7.1f} req/s  p50 {r['p50_ms']:>7.1f} ms  "
                  f"p95 {r['p95_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  replica p50 {r['replica_p50_ms']:>6.1f} ms  "
                  f"batch {r['mean_batch']:>5.1f}  errors {r['errors']}  "
                  f"peak RSS recognizer {r['recognizer_peak_rss_mb']} MB, pages {r['pages_peak_rss_mb']} MB")
            print(f"    memory (MB) recognizer {r['recognizer_memory']}  pages {r['pages_memory']}")
        serve.delete("htr")
    serve.shutdown()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
