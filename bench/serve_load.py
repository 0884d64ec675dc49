"""Closed-loop HTTP load on the Serve endpoint with real handwritten line images.

    .venv/bin/python bench/serve_load.py [--seconds 20] [--concurrency 1 8 32] [--replicas 1] [--rounds 1]
                                         [--batch-wait S] [--threads N] [--json PATH]

The app is the one serve_config.yaml describes (htr_ray.distributed.serve.make_app reads its
deployments, and its args give the recogniser spec: the bulk job's ONNX int8 by default), run
twice: batching as configured, and batching off (max_batch_size 1); with --rounds N, N times each,
interleaved, and the batching gain (on / off requests/s) is given per round and as the median. The
modes switch by ``user_config`` on the same replica, so its peak RSS is the peak of all runs so far.
At each concurrency, that many clients each POST /v1/recognize with a held-out IAM-OnDB line (test-split forms), wait for the
answer and send the next, for --seconds. Per run: requests/s, client latency p50/p95/p99, the time
the replica itself spent on the request (the answer's "seconds", and its Server-Timing stages: read,
decode, queue, model, answer), the mean model batch, the CPU the clients and the replica used, the
peak RSS (VmHWM) of the Recognizer and Pages replicas, whether torch is loaded in the Recognizer
replica and which ingress brought the requests. The same lines through the recognizer (the same
spec) called directly in this process give the model's own time, one line at a time and 16 at a
time (what batching saves in the model itself); GET /healthz at concurrency 1 the
floor of one HTTP round trip through the ingress to the replica; and the same GET on a bare uvicorn
+ FastAPI app in this process what HTTP alone costs here: what Serve adds is the difference. Prints
a table (markdown) and writes JSON.

The ingress is HAProxy (a local Ray started by the project has it); `RAY_SERVE_ENABLE_HA_PROXY=0
python bench/serve_load.py ...` measures Serve's Python proxy instead.

--replicas pins the Recognizer's replica count (autoscaling off) so that runs compare like with like;
--batch-wait, --threads, --backend/--quantize and --decoder override the config's
batch_wait_timeout_s and the recogniser spec, to measure what each setting buys.
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
from htr_ray.recognition.spec import DEFAULT_LINE_MODEL  # noqa: E402


def held_out_lines(data_dir: str, n: int) -> list[bytes]:
    """PNG bytes of IAM-OnDB lines from held-out (test-split) forms."""
    rows = labels.read_rows(data_dir, split="test")[:n]
    return [storage.read_bytes(r.image_uri()) for r in rows]


def stage_split(rec, bodies: list[bytes]) -> dict:
    """Mean ms per line of what the replica does for one line, stage by stage, in this process: PNG
    decode (the endpoint's own), pre-processing, the network (+ log-softmax), the CTC decoder."""
    from htr_ray.distributed.serve import _decode_line

    if not rec.numpy_io:
        return {}
    from htr_ray.recognition.recognizer import _log_softmax

    t = dict.fromkeys(("png_decode", "prepare", "network", "ctc_decode"), 0.0)
    for b in bodies:
        t0 = time.perf_counter()
        g = _decode_line(b)
        t1 = time.perf_counter()
        xs, _ = rec._prepare_all([g])
        t2 = time.perf_counter()
        arr, widths = images.pad_batch(xs, width_multiple=rec.width_multiple)
        logits, lengths = rec.model.run(arr, widths)
        lp = _log_softmax(logits)[0, : int(lengths[0])]
        t3 = time.perf_counter()
        rec.decode(lp)
        t4 = time.perf_counter()
        for k, d in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += d
    return {k: round(v / len(bodies) * 1000, 2) for k, v in t.items()}


def healthz_p50_ms(base: str, seconds: float = 3) -> float:
    """p50 of GET /healthz, one at a time: client -> proxy -> replica -> back, with no body and no model."""
    session = requests.Session()
    lat, deadline = [], time.time() + seconds
    while time.time() < deadline:
        t = time.perf_counter()
        session.get(f"{base}/healthz", timeout=60).raise_for_status()
        lat.append(time.perf_counter() - t)
    return round(float(np.percentile(np.array(lat) * 1000, 50)), 1)


def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    deadline = time.time() + seconds
    latencies: list[float] = []
    server: list[float] = []
    stages: dict[str, list[float]] = {}
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
                for part in r.headers.get("Server-Timing", "").split(","):  # the replica's stages, ms
                    name, _, dur = part.strip().partition(";dur=")
                    if dur:
                        stages.setdefault(name, []).append(float(dur))
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
            "replica_p50_ms": round(float(np.percentile(np.array(server) * 1000, 50)), 1) if server else None,
            "server_timing_p50_ms": {k: round(float(np.percentile(v, 50)), 2) for k, v in stages.items()}}


def bare_http_p50_ms(seconds: float = 3) -> float:
    """p50 of GET on a bare FastAPI app under uvicorn in this process, with the same client: what one
    HTTP round trip costs on this machine with no Serve at all (the floor /healthz is compared with)."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        return healthz_p50_ms(f"http://127.0.0.1:{port}", seconds)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of a process on this machine (default: this one, the load generator)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # the replica runs elsewhere (a cluster): no figure
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(base: str) -> dict:
    return requests.get(f"{base}/v1/stats", timeout=60).json()


def mean_batch_since(before: dict, after: dict) -> float:
    """Mean model batch between two batch-size counts of the (one) Recognizer replica."""
    delta = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    return round(sum(k * v for k, v in delta.items()) / max(1, sum(delta.values())), 2)


def batching_gain(runs: list[dict]) -> dict:
    """requests/s with batching on over batching off, per concurrency: the ratio of each round (the
    two modes measured back to back) and the median of the rounds."""
    gains = {}
    for c in sorted({r["concurrency"] for r in runs}):
        rps = {}
        for r in runs:
            if r["concurrency"] == c:
                rps.setdefault(r["round"], {})[r["batching"]] = r["rps"]
        by_round = [round(m["on"] / m["off"], 2) for _, m in sorted(rps.items()) if "on" in m and "off" in m]
        if by_round:
            gains[c] = {"by_round": by_round, "median": round(float(np.median(by_round)), 2)}
    return gains


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--model", default=DEFAULT_LINE_MODEL)
    ap.add_argument("--replicas", type=int, default=1, help="Recognizer replicas (autoscaling off); 0: as configured")
    ap.add_argument("--batch-wait", type=float, default=None, help="override batch_wait_timeout_s of serve_config.yaml")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of the recognizer (default: the spec's)")
    ap.add_argument("--backend", default=None, help="override the recogniser backend (torch, onnx)")
    ap.add_argument("--quantize", default=None, help="override the quantisation (int8, none)")
    ap.add_argument("--decoder", default=None, help="override the decoder (greedy, beam)")
    ap.add_argument("--modes", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of the modes, interleaved (on, off, on, off ...): a drift in the machine's speed "
                         "hits both modes alike, and the batching gain is given per round and as their median")
    ap.add_argument("--data", default=str(paths.shared_data() / "iam_ondb_lines"))
    ap.add_argument("--json", default=str(REPO / "work" / "bench" / "serve_load.json"))
    args = ap.parse_args()

    from htr_ray.distributed.serve import ServeAppConfig, config_args

    bodies = held_out_lines(args.data, 64)
    app_args = config_args()
    spec_overrides = {k: v for k, v in {"model": args.model, "threads": args.threads, "backend": args.backend,
                                   "decoder": args.decoder}.items() if v is not None}
    if args.quantize is not None:
        spec_overrides["quantize"] = None if args.quantize in ("none", "") else args.quantize
    app_args["recognizer"] = {**(app_args.get("recognizer") or {}), **spec_overrides}
    spec = ServeAppConfig.from_args(app_args).recognizer
    rec = spec.build()
    grays = [images.decode_gray(b) for b in bodies]
    rec.recognize(grays[:2])
    t = time.perf_counter()
    for g in grays:
        rec.recognize([g])
    direct_ms = (time.perf_counter() - t) / len(grays) * 1000
    # the same lines 16 at a time (a full batch of the replica's): what the model itself gains from batching
    t = time.perf_counter()
    for i in range(0, len(grays), 16):
        rec.recognize(grays[i:i + 16])
    direct_batch16_ms = (time.perf_counter() - t) / len(grays) * 1000
    split = stage_split(rec, bodies)
    decoder_kind = rec.decoder_kind
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
               "recognizer": spec.as_dict(), "direct_recognizer_ms_per_line": round(direct_ms, 1),
               "direct_recognizer_ms_per_line_batch16": round(direct_batch16_ms, 1),
               "direct_split_ms_per_line": split,
               "bare_http_p50_ms": bare_http_p50_ms(),
               "serve_config_user_config": configured,
               "ray_serve_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_SERVE_")},
               "runs": []}
    print(f"load average at start {load:.1f}; recognizer ({spec.backend} {spec.quantize or 'fp32'}, decoder "
          f"{decoder_kind}) directly, one line at a time: {direct_ms:.1f} ms per line, 16 at a time "
          f"{direct_batch16_ms:.1f}; by stage {split}")
    for rnd, mode in [(rnd, mode) for rnd in range(args.rounds) for mode in args.modes]:
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
        serve.run(make_app(app_args, overrides=overrides), name="htr", route_prefix="/")
        closed_loop(f"{base}/v1/recognize", bodies, 2, 3)  # warm-up
        floor = healthz_p50_ms(base)
        for c in args.concurrency:
            first = stats(base)
            before, replica_pid = first["recognizer"]["batch_sizes"], first["recognizer"]["pid"]
            cpu0, replica_cpu0, wall0 = cpu_seconds(), cpu_seconds(replica_pid), time.perf_counter()
            r = closed_loop(f"{base}/v1/recognize", bodies, c, args.seconds)
            wall = time.perf_counter() - wall0
            # the cores the load generator (this process) and the Recognizer replica kept busy: on a
            # 2-core machine the clients compete with the server they measure
            r.update(client_cpu_cores=round((cpu_seconds() - cpu0) / wall, 2),
                     replica_cpu_cores=round((cpu_seconds(replica_pid) - replica_cpu0) / wall, 2))
            after = stats(base)
            r.update(mode=label, batching=mode, round=rnd, mean_batch=mean_batch_since(before, after["recognizer"]["batch_sizes"]),
                     recognizer_peak_rss_mb=after["recognizer"].get("peak_rss_mb"),
                     pages_peak_rss_mb=after["pages"].get("peak_rss_mb"),
                     recognizer_memory={k: v for k, v in after["recognizer"].items() if k.endswith("_mb")},
                     pages_memory={k: v for k, v in after["pages"].items() if k.endswith("_mb")},
                     healthz_p50_ms=floor, load_average=round(os.getloadavg()[0], 1),
                     **{k: after["recognizer"].get(k) for k in ("backend", "quantize", "decoder", "threads", "ingress",
                                                                 "torch_loaded")})
            results["runs"].append(r)
            print(f"{label:<44} round {rnd} c={c:<3} {r['rps']:>7.1f} req/s  p50 {r['p50_ms']:>7.1f} ms  "
                  f"p95 {r['p95_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  replica p50 {r['replica_p50_ms']:>6.1f} ms  "
                  f"batch {r['mean_batch']:>5.1f}  errors {r['errors']}  CPU cores: clients {r['client_cpu_cores']}, "
                  f"replica {r['replica_cpu_cores']}  "
                  f"peak RSS recognizer {r['recognizer_peak_rss_mb']} MB, pages {r['pages_peak_rss_mb']} MB")
            print(f"    memory (MB) recognizer {r['recognizer_memory']}  pages {r['pages_memory']}")
            print(f"    replica's stages (Server-Timing p50, ms) {r['server_timing_p50_ms']}")
    serve.delete("htr")
    serve.shutdown()
    results["batching_gain"] = batching_gain(results["runs"])
    print(f"\n{results['date']}, {results['machine']}, load average at start {results['load_average_at_start']}; "
          f"recognizer directly {direct_ms:.1f} ms/line ({direct_batch16_ms:.1f} in batches of 16), by stage (ms) "
          f"{split}; a bare uvicorn + FastAPI "
          f"round trip with the same client {results['bare_http_p50_ms']} ms\n")
    for c, gain in results["batching_gain"].items():
        print(f"batching on / off at concurrency {c}: {gain['by_round']} by round, median {gain['median']}")
    print("| mode | round | conc. | req/s | p50 ms | p95 ms | replica's own p50 ms | /healthz p50 ms | mean batch "
          "| CPU cores: clients / replica | Recognizer peak RSS MB | torch loaded | ingress | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['mode']} | {r['round']} | {r['concurrency']} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['replica_p50_ms']} | {r['healthz_p50_ms']} | {r['mean_batch']} | "
              f"{r['client_cpu_cores']} / {r['replica_cpu_cores']} | {r['recognizer_peak_rss_mb']} | "
              f"{r['torch_loaded']} | {r['ingress']} | {r['load_average']} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
