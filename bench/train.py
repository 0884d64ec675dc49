"""Training throughput: samples/s and epoch time of the line model, single process (the data path
and model options compared in the same run) and optionally Ray Train with 1 and 2 CPU workers, on real
IAM-OnDB lines.

    OMP_NUM_THREADS=1 python bench/train.py --lines 256 --epochs 2 --repeat 2 --out work/bench/train.json
    python bench/train.py --workers 1 2 ...       # also Ray Train (starts a local Ray unless RAY_ADDRESS is set)

Local configurations (``--configs``, default all of them), each a set of TrainConfig options:

- ``before``: the loop as it was (decode + augment in 1 loader thread beside the model, 1 torch thread,
  contiguous convolutions, batch 16);
- ``procs``: decode + augment in 1 worker process;
- ``procs+cl``: and channels-last convolutions;
- ``after``: ``procs+cl`` with batch 32;
- ``after-2t``: ``after`` with 2 torch threads;
- ``pack``: the same lines from a training pack (:mod:`htr_ray.training.pack`, built by the bench at the
  model's height: decoded and normalised once, before training), augmented as whole batches in torch
  (``augment_torch``), channels-last, batch 16, 1 thread;
- ``pack-2t``, ``pack-2t-b32``: ``pack`` with 2 torch threads (batch 16 or 32);
- ``pack-compile``: ``pack`` with ``torch.compile`` (dynamic shapes).

``--workers 1 2`` also runs Ray Train with that many 1-CPU workers, reading the shards through Ray
Data (the default) or, with ``--ray-pack``, each worker reading the pack: the way to keep both cores
of a 2-core machine on the model.

The configurations run interleaved (``--repeat`` rounds of all of them), so a change in the machine's
load hits every configuration alike; the table shows the median of each configuration's last epochs
(the first epoch of a run includes warm-up). The figures depend on what else runs on the machine: the
JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from htr_ray import paths  # noqa: E402
from htr_ray.io import shards  # noqa: E402
from htr_ray.training.loop import LocalContext, TrainConfig, fit, load_rows  # noqa: E402

CONFIGS = {
    "before": dict(loader_processes=0, loader_threads=1, channels_last=False, batch_size=16, threads=1),
    "procs": dict(loader_processes=1, channels_last=False, batch_size=16, threads=1),
    "procs+cl": dict(loader_processes=1, channels_last=True, batch_size=16, threads=1),
    "after": dict(loader_processes=1, channels_last=True, batch_size=32, threads=1),
    "after-2t": dict(loader_processes=1, channels_last=True, batch_size=32, threads=2),
    "pack": dict(loader_processes=0, loader_threads=1, channels_last=True, batch_size=16, threads=1, pack=True),
    "pack-2t": dict(loader_processes=0, loader_threads=1, channels_last=True, batch_size=16, threads=2, pack=True),
    "pack-2t-b32": dict(loader_processes=0, loader_threads=1, channels_last=True, batch_size=32, threads=2, pack=True),
    "pack-compile": dict(loader_processes=0, loader_threads=1, channels_last=True, batch_size=16, threads=1, pack=True,
                         compile=True),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(paths.shared_data() / "iam_ondb_lines"), help="IAM-style folder or shards")
    ap.add_argument("--model", default="crnn_small")
    ap.add_argument("--lines", type=int, default=256, help="training lines per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run (the first includes warm-up and is not counted)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the configurations (interleaved)")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), help=f"local configurations ({', '.join(CONFIGS)})")
    ap.add_argument("--batch-size", type=int, default=16, help="Ray Train runs: batch size per worker")
    ap.add_argument("--workers", type=int, nargs="*", default=[], help="Ray Train worker counts to measure")
    ap.add_argument("--ray-pack", action="store_true", help="Ray Train workers read the training pack, not Ray Data shards")
    ap.add_argument("--out", default="work/bench/train.json")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-train-")
    rows = load_rows(args.data, "train")[: args.lines]
    val = load_rows(args.data, "val")[:32]
    root = os.path.join(tmp, "data")
    shards.write_samples(root, [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split="train") for r in rows]
                         + [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split="val") for r in val])
    base = dict(model=args.model, data=[root], epochs=args.epochs, test_split="", patience=100, max_failures=0,
                cpus_per_worker=1)
    pack_dir = ""
    if args.ray_pack or any(CONFIGS[c].get("pack") for c in args.configs):
        from htr_ray.models import build_model
        from htr_ray.training import pack

        # the same first --lines train-form lines, normalised at the model's height; it validates on 32
        # of its val-form lines (max_val), as the shard runs do on the first 32
        height = int(build_model(args.model, num_classes=2).input_height)
        pack_dir = os.path.join(tmp, "pack")
        pack.build(args.data, pack_dir, height=height, synth=0, limit=args.lines)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    for rnd in range(args.repeat):
        for name in args.configs:
            opts = dict(CONFIGS[name])
            if opts.pop("pack", False):
                from htr_ray.training.pack import pack_context

                cfg = TrainConfig(**{**base, **opts}, pack=pack_dir, max_val=32,
                                  output=os.path.join(tmp, f"local-{name}-{rnd}"), local=True)
                ctx = pack_context(cfg)
            else:
                cfg = TrainConfig(**{**base, **opts}, output=os.path.join(tmp, f"local-{name}-{rnd}"), local=True)
                ctx = LocalContext(cfg)
            t = time.time()
            s = fit(cfg, ctx)
            for h in s["history"][1:] or s["history"]:
                runs[name].append({"samples_per_s": h["samples_per_s"], "epoch_s": h["epoch_s"], "wall_s": time.time() - t,
                                   "samples": h["samples"]})
            print(f"round {rnd} {name}: {[round(h['samples_per_s'], 1) for h in s['history']]} samples/s by epoch", flush=True)
    results = []
    for name, rs in runs.items():
        results.append({"config": name, "workers": 1, **CONFIGS[name],
                        "samples_per_s": round(statistics.median(r["samples_per_s"] for r in rs), 2),
                        "all_samples_per_s": [round(r["samples_per_s"], 2) for r in rs],
                        "epoch_s": round(statistics.median(r["epoch_s"] for r in rs), 1), "lines_per_epoch": rs[0]["samples"]})
    if args.workers:
        from htr_ray.distributed.runtime import ensure_ray
        from htr_ray.distributed.train import run_ray

        ensure_ray(num_cpus=max(args.workers), log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        for n in args.workers:
            cfg = TrainConfig(**base, batch_size=args.batch_size, threads=1, loader_threads=1, workers=n,
                              storage_path=os.path.join(tmp, "ray"), name=f"bench-{n}{'-pack' if args.ray_pack else ''}",
                              pack=pack_dir if args.ray_pack else "", channels_last=args.ray_pack,
                              max_val=32 if args.ray_pack else 0)
            t = time.time()
            s = run_ray(cfg)
            m = s["metrics"]  # the last reported epoch
            results.append({"config": f"Ray Train, {n} worker(s)" + (", pack" if args.ray_pack else ""), "workers": n,
                            "samples_per_s": round(m["samples_per_s"], 2),
                            "epoch_s": round(m["epoch_s"], 1), "wall_s": round(time.time() - t, 1), "lines_per_epoch": m["samples"]})
    load = os.getloadavg()
    print(f"\n{'configuration':<26}{'workers':>8}{'batch':>6}{'samples/s':>11}{'epoch s':>9}")
    for r in results:
        print(f"{r['config']:<26}{r['workers']:>8}{r.get('batch_size', args.batch_size):>6}{r['samples_per_s']:>11.1f}{r['epoch_s']:>9.1f}")
    print(f"(load average before {load_before[0]:.1f}, after {load[0]:.1f}; {os.cpu_count()} CPUs)")
    out = {"model": args.model, "lines": args.lines, "epochs": args.epochs, "repeat": args.repeat, "cpus": os.cpu_count(),
           "loadavg_before": load_before, "loadavg_after": load, "results": results,
           "command": "python bench/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
