"""Synthetic samples as shard rows (Ray-free): split assignment and one task's worth of rows.

Sample ``i`` of a run with seed ``S`` is fully fixed by (kind, S, i, domains): its split comes from
``crc32`` of ``S:i``, its pixels from ``sample_rng(S, i, split)``, so any worker can make any sample and
the same command writes the same bytes, however the work is spread.
"""

from __future__ import annotations

import logging
import time
import traceback
import zlib
from typing import Sequence

from htr_ray.io import images, shards

log = logging.getLogger(__name__)
KINDS = ("lines", "pages")


def split_of(seed: int, index: int, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    b = zlib.crc32(f"{seed}:{index}".encode()) % 10000 / 10000.0
    return "test" if b < test_fraction else "val" if b < test_fraction + val_fraction else "train"


class SampleMaker:
    """Makes sample ``i`` of a run as a :class:`htr_ray.io.shards.Sample` (generators built once, per split)."""

    def __init__(self, kind: str, seed: int, domains: Sequence[str] | None = None, val_fraction: float = 0.05,
                 test_fraction: float = 0.05, strokes_fraction: float = 0.0, clean_fraction: float = 0.3):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind, self.seed, self.domains = kind, int(seed), list(domains) if domains else None
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.strokes_fraction, self.clean_fraction = strokes_fraction, clean_fraction
        self._gens: dict[str, object] = {}
        from htr_ray.data.synth import pages, texts

        known = texts.SOURCES if kind == "lines" else pages.LAYOUTS
        bad = [d for d in self.domains or () if d not in known]
        if bad:
            raise ValueError(f"unknown {kind} domain(s) {bad}; choose from {sorted(known)}")

    def generator(self, split: str):
        if split not in self._gens:
            if self.kind == "lines":
                from htr_ray.data.synth.render import LineGenerator

                self._gens[split] = LineGenerator(self.seed, split, self.domains, clean_fraction=self.clean_fraction,
                                                  strokes_fraction=self.strokes_fraction)
            else:
                from htr_ray.data.synth.pages import PageGenerator

                self._gens[split] = PageGenerator(self.seed, split, self.domains)
        return self._gens[split]

    def split_of(self, index: int) -> str:
        return split_of(self.seed, index, self.val_fraction, self.test_fraction)

    def make(self, index: int) -> shards.Sample:
        split = self.split_of(index)
        gen = self.generator(split)
        sid = f"synth-{self.kind}-{self.seed}-{index:09d}"
        if self.kind == "lines":
            s = gen.sample_full(index)
            source = "synth-strokes" if s.font.startswith("iam-strokes/") else "synth-lines"
            return shards.Sample(sid, images.encode_png(s.image, compression=1), s.text, source, s.domain, split)
        p = gen.sample(index)
        return shards.Sample(sid, images.encode_png(p.image, compression=1), p.text, "synth-pages", p.domain, split, lines=p.lines)


def make_task(maker: SampleMaker, task: int, start: int, stop: int, output: str) -> dict:
    """Generate samples [start, stop) and write them as ``<output>/<split>/part-<task>.parquet``.

    Returns counts per split, files, and errors (a sample that fails is an error entry with its index and
    reason, never a silent gap): ``stop - start == sum(written) + len(errors)``.
    """
    t0 = time.time()
    by_split: dict[str, list[shards.Sample]] = {}
    errors = []
    for i in range(start, stop):
        try:
            s = maker.make(i)
            by_split.setdefault(s.split, []).append(s)
        except Exception as e:  # noqa: BLE001 - reported as data
            errors.append({"index": i, "kind": type(e).__name__, "message": str(e)[:500]})
            log.warning("sample %d failed: %s\n%s", i, e, traceback.format_exc(limit=3))
    written, files = {}, []
    for split, rows in sorted(by_split.items()):
        uri = shards.shard_uri(output, split, task)
        written[split] = shards.write_shard(uri, rows)
        files.append(uri)
    return {"task": task, "start": start, "stop": stop, "written": written, "files": files, "errors": errors,
            "seconds": time.time() - t0}
