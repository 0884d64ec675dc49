"""Ray Data shell of the synthetic generator: many tasks in parallel, each writing its own part files.

    generate(MakeDatasetConfig(kind="lines", n=100_000, output="s3://bucket/synth/lines"))

The work is split into tasks of consecutive sample indices (``ray.data.from_items`` with one block per
task, then ``map_batches``); each task renders its samples (:mod:`htr_ray.data.synth.samples`) and writes
``<output>/<split>/part-<task>.parquet`` straight to the output URI, so the driver only collects counts.
Splits: test samples use font families train never sees (``htr_ray.data.synth.fonts``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass

from htr_ray import config
from htr_ray.io import storage
from htr_ray.data.synth.samples import SampleMaker, make_task

log = logging.getLogger(__name__)


@dataclass
class MakeDatasetConfig:
    """Generate synthetic handwriting (text lines or whole pages) as Parquet sample shards under
    --output/<split>/part-NNNNN.parquet, in parallel with Ray Data; train/val/test splits, with the test
    split written in fonts that train never saw."""

    kind: str = config.field("lines", help="what to generate: lines | pages")
    n: int = config.field(1000, help="number of samples")
    output: str = config.field("", help="output URI: a local folder or s3://bucket/prefix (default: work/synth/<kind>)")
    seed: int = config.field(0, help="run seed: same seed and flags, same bytes")
    domains: list[str] = config.field([], help="text domains (lines: cheque prescription homework hanzi generic; "
                                               "pages: cheque prescription homework); default: all")
    val_fraction: float = config.field(0.05, help="share of samples in the val split (train fonts)")
    test_fraction: float = config.field(0.05, help="share of samples in the test split (test-only fonts)")
    strokes_fraction: float = config.field(0.0, help="lines: share of generic lines re-rendered from real IAM-OnDB "
                                                     "pen strokes of the same split's forms")
    clean_fraction: float = config.field(0.3, help="lines: share drawn clean (dark pen on white, no scan effects)")
    rows_per_task: int = config.field(0, help="samples per task / part file (0: about 4 tasks per CPU, at most 2000 "
                                              "lines or 200 pages each)")
    preview: str = config.field("", help="also write a contact-sheet PNG of the first samples to this URI")
    preview_count: int = config.field(24, help="samples on the contact sheet")
    address: str = config.field("", help="Ray cluster to use (default: $RAY_ADDRESS if set, else a new local Ray)")
    num_cpus: int = config.field(0, help="CPUs for a new local Ray (0: all)")
    parallel: bool = config.field(True, help="use Ray Data (--no-parallel: one process, same bytes)")


def plan_tasks(n: int, rows_per_task: int) -> list[dict]:
    return [{"task": k, "start": s, "stop": min(n, s + rows_per_task)} for k, s in enumerate(range(0, n, rows_per_task))]


def generate(cfg: MakeDatasetConfig) -> dict:
    """Run the generation; returns (and writes to ``<output>/_generate.json``) a report with counts per split."""
    t0 = time.time()
    maker_args = dict(kind=cfg.kind, seed=cfg.seed, domains=cfg.domains or None, val_fraction=cfg.val_fraction,
                      test_fraction=cfg.test_fraction, strokes_fraction=cfg.strokes_fraction,
                      clean_fraction=cfg.clean_fraction)
    SampleMaker(**maker_args)  # validate flags before starting anything
    from htr_ray.data.synth import fonts

    fonts.registry()  # no handwriting fonts installed: fail here, not once per sample on the workers
    if cfg.n <= 0:
        raise ValueError("--n must be positive")
    cpus = 1
    if cfg.parallel:
        from htr_ray.distributed.runtime import ensure_ray

        ray = ensure_ray(cfg.address or None, num_cpus=cfg.num_cpus or None)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per = cfg.rows_per_task or max(1, min(2000 if cfg.kind == "lines" else 200, math.ceil(cfg.n / (4 * cpus))))
    tasks = plan_tasks(cfg.n, per)
    output = cfg.output = cfg.output or f"work/synth/{cfg.kind}"
    if cfg.parallel:
        import ray

        def work(batch: dict) -> dict:
            maker = SampleMaker(**maker_args)
            out = [make_task(maker, int(t), int(a), int(b), output)
                   for t, a, b in zip(batch["task"], batch["start"], batch["stop"])]
            return {"result": [json.dumps(r) for r in out]}

        ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        ds = ds.map_batches(work, batch_size=1, batch_format="numpy", num_cpus=1)
        results = [json.loads(r["result"]) for r in ds.take_all()]
    else:
        maker = SampleMaker(**maker_args)
        results = [make_task(maker, t["task"], t["start"], t["stop"], output) for t in tasks]
    results.sort(key=lambda r: r["task"])
    written: dict[str, int] = {}
    errors = []
    files = []
    for r in results:
        for split, k in r["written"].items():
            written[split] = written.get(split, 0) + k
        errors.extend(r["errors"])
        files.extend(r["files"])
    seconds = time.time() - t0
    report = {
        "config": asdict(cfg), "requested": cfg.n, "written": written, "total_written": sum(written.values()),
        "errors": errors, "tasks": len(tasks), "files": len(files), "seconds": round(seconds, 2),
        "samples_per_second": round(cfg.n / seconds, 2) if seconds else None,
        "task_seconds": round(sum(r["seconds"] for r in results), 2),
    }
    storage.write_text(storage.join(output, "_generate.json"), json.dumps(report, indent=1))
    if cfg.preview:
        write_preview(cfg.kind, cfg.seed, cfg.domains or None, cfg.preview, cfg.preview_count, maker_args)
        report["preview"] = cfg.preview
    log.info("generated %d/%d %s in %.1fs (%d errors)", report["total_written"], cfg.n, cfg.kind, seconds, len(errors))
    return report


def write_preview(kind: str, seed: int, domains, uri: str, count: int, maker_args: dict | None = None) -> None:
    """Contact sheet of samples 0..count-1 of the run (the same pixels as in the shards)."""
    from htr_ray.io.images import decode_gray
    from htr_ray.data.synth import preview

    maker = SampleMaker(**(maker_args or dict(kind=kind, seed=seed, domains=domains)))
    samples = [maker.make(i) for i in range(count)]
    if kind == "lines":
        png = preview.lines_sheet([(decode_gray(s.image), f"[{s.split}/{s.domain}] {s.text}") for s in samples],
                                  title=f"synthetic lines, seed {seed}")
    else:
        png = preview.pages_sheet([(decode_gray(s.image), s.lines, f"{s.domain} ({s.split})") for s in samples],
                                  title=f"synthetic pages, seed {seed}")
    preview.write(uri, png)
