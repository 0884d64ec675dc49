"""The README's main command: htr-ray end to end on one machine, on a local Ray started here.

1. generate a small archive of synthetic scans (cheques, prescriptions, homework; handwriting in
   fonts the model never trained on) into --workdir/archive, with their ground truth aside;
2. transcribe the archive with the bulk job (Ray Data, recognizer actor pool) and the shipped model;
3. score every page against its handwritten ground truth: CER per domain, and run the domain checks
   (cheque amount in figures vs in words, drug names, homework grading).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from htr_ray import config, paths
from htr_ray.distributed.transcribe import TranscribeConfig, run
from htr_ray.pages.output import committed_rows
from htr_ray.evaluation import domain_checks
from htr_ray.evaluation.evaluate import score_page
from htr_ray.io import images, storage
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.recognition.spec import PAGE_READING_DEFAULT, RecognizerSpec


@dataclass
class DemoConfig:
    """Generate a synthetic archive, transcribe it with Ray Data, and score it per domain."""

    pages: int = config.field(12, help="pages to generate (cheques, prescriptions and homework in turn)")
    seed: int = config.field(2026, help="seed of the generated archive")
    workdir: str = config.field(str(paths.REPO_ROOT / "work" / "demo"), help="where the archive and the results are written")
    recognizer: RecognizerSpec = config.field(PAGE_READING_DEFAULT, help="how lines are read (as the bulk job and Serve)")
    workers: int = config.field(2, help="recognizer actors")
    line_finder: str = config.field("auto", help="auto, learned or opencv (see jobs/transcribe.py)")
    printed_filter: str = config.field(DEFAULT_FILTER, help="printed-text filter of the opencv finder ('none': read lines whole)")


def generate_archive(cfg: DemoConfig) -> dict[str, dict]:
    from htr_ray.data.synth.pages import PAGE_DOMAINS, PageGenerator

    truth = {}
    gens = {d: PageGenerator(seed=cfg.seed, split="test", domains=[d]) for d in PAGE_DOMAINS}
    for i in range(cfg.pages):
        domain = PAGE_DOMAINS[i % len(PAGE_DOMAINS)]
        sample = gens[domain].sample(i)
        uri = storage.join(cfg.workdir, "archive", f"{domain}-{i:03d}.png")
        storage.write_bytes(uri, images.encode_png(sample.image))
        truth[storage.parse(uri).uri()] = {"domain": domain, "lines": sample.lines}
    storage.write_text(storage.join(cfg.workdir, "truth.json"), json.dumps(truth, ensure_ascii=False))
    return truth


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = config.from_args(DemoConfig, argv)
    import ray

    started = time.time()
    print(f"1. generating {cfg.pages} scans under {cfg.workdir}/archive (test-split fonts) ...")
    truth = generate_archive(cfg)
    output = storage.join(cfg.workdir, "results")
    for uri in storage.list_uris(output) if os.path.isdir(output) else []:
        storage.delete(uri)  # a fresh run each time: the demo shows the whole job, not a resume

    print(f"2. transcribing with {cfg.recognizer.model} on a local Ray ({cfg.workers} recognizer actors) ...")
    from htr_ray.distributed.runtime import ensure_ray

    ray = ensure_ray(log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    job = TranscribeConfig(input=storage.join(cfg.workdir, "archive"), output=output, recognizer=cfg.recognizer,
                           workers=cfg.workers, lines_per_batch=32, line_finder=cfg.line_finder,
                           printed_filter=cfg.printed_filter)
    summary = run(job, on_progress=lambda m: print("   " + m))
    ray.shutdown()
    s = summary.as_dict()
    print(f"   {s['pages']} pages, {s['lines']} lines, {s['errors']} errors in {s['seconds']:.1f}s "
          f"({s['pages_per_s']} pages/s, {s['lines_per_s']} lines/s)")

    print("3. scoring against the handwritten ground truth")
    rows = {r["uri"]: r for r in committed_rows(output, columns=("uri", "status", "text", "lines", "error"))}
    per_domain = defaultdict(lambda: {"errors": 0, "chars": 0, "pages": 0, "missed": 0, "lines": 0, "flags": 0})
    examples = []
    for uri, t in sorted(truth.items()):
        row = rows.get(uri)
        d = per_domain[t["domain"]]
        d["pages"] += 1
        found = row["lines"] if row and row["status"] == "ok" else []
        handwritten = [ln for ln in found if ln["kind"] != "printed"]
        score = score_page(t["lines"], found)
        d["errors"] += score["errors"]
        d["chars"] += score["chars"]
        d["missed"] += score["missed"]
        d["lines"] += score["lines"]
        checks = domain_checks.check_page(handwritten, t["domain"])
        d["flags"] += sum(f["status"] != "ok" for f in checks["findings"])
        examples.append((score["errors"] / max(score["chars"], 1), uri, found, checks))
    print(f"   {'domain':<14}{'pages':>6}{'lines':>7}{'missed':>8}{'CER':>8}{'check flags':>13}")
    total_e = total_c = 0
    for domain, d in sorted(per_domain.items()):
        total_e, total_c = total_e + d["errors"], total_c + d["chars"]
        print(f"   {domain:<14}{d['pages']:>6}{d['lines']:>7}{d['missed']:>8}{d['errors'] / max(d['chars'], 1):>8.3f}{d['flags']:>13}")
    print(f"   {'all':<14}{sum(d['pages'] for d in per_domain.values()):>6}"
          f"{sum(d['lines'] for d in per_domain.values()):>7}{sum(d['missed'] for d in per_domain.values()):>8}"
          f"{total_e / max(total_c, 1):>8.3f}")
    if examples:
        # a typical page: the one whose CER is nearest the archive's
        overall = total_e / max(total_c, 1)
        cer, uri, found, checks = min(examples, key=lambda e: abs(e[0] - overall))
        print(f"\n   e.g. {uri} (CER {cer:.3f}):")
        hand = [ln for ln in found if ln["kind"] != "printed"]
        for ln in hand[:8]:
            print(f"     {ln['confidence']:.2f}  {ln['text']}")
        print(f"     (+ {len(found) - len(hand)} pieces of form print, flagged printed: "
              + ", ".join(repr(ln["text"]) for ln in found if ln["kind"] == "printed" and ln["confidence"] > 0.9)[:120] + ")")
        print(f"     checks: {json.dumps(checks['summary'])}")
    print(f"\nresults: {output}/parts/*.parquet|.jsonl, summary {output}/_summary.json "
          f"({time.time() - started:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
