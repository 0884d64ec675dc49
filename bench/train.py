"""Training throughput: samples/s and epoch time of the line model for the single-process loop and
for Ray Train with 1 and 2 CPU workers, on real IAM-OnDB lines.

    python bench/train.py --lines 256 --epochs 2 --out work/bench_train.json

Prints a table and writes JSON. Starts its own local Ray (``ray.init``) unless RAY_ADDRESS is set.
The figures depend on what else runs on the machine: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from htr_ray.io import shards  # noqa: E402
from htr_ray.training.loop import TrainConfig, fit, LocalContext, load_rows  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "iam_ondb_lines"))
    ap.add_argument("--model", default="crnn_small")
    ap.add_argument("--lines", type=int, default=256, help="training lines per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per configuration (the first includes warm-up)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray Train worker counts to measure")
    ap.add_argument("--no-local", action="store_true", help="skip the single-process measurement")
    ap.add_argument("--out", default="work/bench_train.json")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-train-")
    rows = load_rows(args.data, "train")[: args.lines]
    val = load_rows(args.data, "val")[:32]
    root = os.path.join(tmp, "data")
    shards.write_samples(root, [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split="train") for r in rows]
                         + [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split="val") for r in val])
    base = dict(model=args.model, data=[root], epochs=args.epochs, batch_size=args.batch_size, threads=1,
                loader_threads=1, test_split="", patience=100, max_failures=0, cpus_per_worker=1)
    results = []

    def record(name, workers, history, wall):
        last = history[-1]
        results.append({"config": name, "workers": workers, "samples_per_s": round(last["samples_per_s"], 2),
                        "epoch_s": round(last["epoch_s"], 1), "epochs": args.epochs, "wall_s": round(wall, 1),
                        "lines_per_epoch": last["samples"]})

    if not args.no_local:
        cfg = TrainConfig(**base, output=os.path.join(tmp, "local"), local=True)
        t = time.time()
        s = fit(cfg, LocalContext(cfg))
        record("local (1 process)", 1, s["history"], time.time() - t)
    if args.workers:
        import ray

        from htr_ray.distributed.train import run_ray

        if not ray.is_initialized():
            ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        for n in args.workers:
            cfg = TrainConfig(**base, workers=n, storage_path=os.path.join(tmp, "ray"), name=f"bench-{n}")
            t = time.time()
            s = run_ray(cfg)
            # the last reported epoch (the first one includes the workers' and Ray Data's start-up)
            record(f"Ray Train, {n} worker(s)", n, [s["metrics"]], time.time() - t)
    load = os.getloadavg()
    print(f"\n{'configuration':<26}{'workers':>8}{'samples/s':>11}{'epoch s':>9}{'wall s':>8}")
    for r in results:
        print(f"{r['config']:<26}{r['workers']:>8}{r['samples_per_s']:>11.1f}{r['epoch_s']:>9.1f}{r['wall_s']:>8.1f}")
    print(f"(load average during the run: {load[0]:.1f}; {os.cpu_count()} CPUs)")
    out = {"model": args.model, "lines": args.lines, "batch_size": args.batch_size, "cpus": os.cpu_count(),
           "loadavg": load, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
