"""jobs/make_dataset.py end to end: Ray Data on the session's local Ray, to local disk and to the S3 test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from htr_ray.io import images, shards, storage
from htr_ray.distributed.generation import MakeDatasetConfig, generate
from htr_ray.data.synth import fonts
from htr_ray.data.synth.samples import SampleMaker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import make_dataset  # noqa: E402


def test_job_writes_lines_locally_with_unseen_test_fonts(ray_local, tmp_path, capsys):
    out, png = tmp_path / "lines", tmp_path / "lines.png"
    rc = make_dataset.main(["--kind", "lines", "--n", "40", "--output", str(out), "--seed", "7", "--rows-per-task", "20",
                            "--test-fraction", "0.2", "--val-fraction", "0.2", "--strokes-fraction", "0.3",
                            "--preview", str(png), "--preview-count", "6"])
    assert rc == 0
    assert "40/40 written" in capsys.readouterr().out
    rows = list(shards.iter_rows(str(out)))
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # every split lives under its own folder, one part file per task
    assert {Path(u).name for u in shards.list_shards(str(out), "train")} <= {f"part-{k:05d}.parquet" for k in range(2)}
    report = json.loads((out / "_generate.json").read_text())
    assert report["total_written"] == 40 and report["tasks"] == 2 and not report["errors"]
    # the Ray workers wrote exactly what this process makes for the same (seed, index): determinism across processes,
    # and the test rows were drawn in test-only font families
    maker = SampleMaker("lines", seed=7, test_fraction=0.2, val_fraction=0.2, strokes_fraction=0.3)
    test_fams = fonts.registry().test_families()
    for r in rows[::3]:
        i = int(r["id"].rsplit("-", 1)[1])
        again = maker.make(i)
        assert again.image == r["image"] and again.text == r["text"] and again.split == r["split"]
        full = maker.generator(r["split"]).sample_full(i)
        fam = full.font.split("/")[0]
        if fam != "iam-strokes":
            assert (fam in test_fams) == (r["split"] == "test"), (r["split"], full.font)
    sheet = cv2.imread(str(png))
    assert sheet is not None and sheet.shape[0] > 300


def test_job_writes_pages_to_s3(ray_local, s3_bucket):
    uri = f"{s3_bucket}/synth/pages"
    report = generate(MakeDatasetConfig(kind="pages", n=6, output=uri, seed=3, rows_per_task=2,
                                        test_fraction=0.3, val_fraction=0.0, preview=f"{uri}/preview.png", preview_count=3))
    assert report["total_written"] == 6 and not report["errors"]
    assert shards.count_rows(uri) == 6
    assert storage.exists(f"{uri}/_generate.json") and storage.exists(f"{uri}/preview.png")
    for r in shards.iter_rows(uri):
        assert r["source"] == "synth-pages" and r["domain"] in ("cheque", "prescription", "homework")
        gray = images.decode_gray(r["image"])
        h, w = gray.shape
        assert r["lines"] and len(r["lines"]) == len(r["text"].split("\n"))
        assert [ln["text"] for ln in r["lines"]] == r["text"].split("\n")
        for ln in r["lines"]:
            x0, y0, x1, y1 = ln["bbox"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert gray[y0:y1, x0:x1].min() < np.median(gray) - 60


def test_parallel_and_single_process_runs_give_the_same_bytes(ray_local, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = dict(kind="lines", n=12, seed=1, rows_per_task=4, domains=["prescription", "hanzi"])
    generate(MakeDatasetConfig(output=str(a), parallel=True, **common))
    generate(MakeDatasetConfig(output=str(b), parallel=False, **common))
    ra = {r["id"]: r for r in shards.iter_rows(str(a))}
    rb = {r["id"]: r for r in shards.iter_rows(str(b))}
    assert ra.keys() == rb.keys() and len(ra) == 12
    assert all(ra[k]["image"] == rb[k]["image"] and ra[k]["text"] == rb[k]["text"] for k in ra)


def test_job_starts_its_own_local_ray(tmp_path):
    """Run as a user would, with no cluster given: the job starts (and stops) a private local Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    out = tmp_path / "own"
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "make_dataset.py"), "--kind", "lines", "--n", "6",
                           "--output", str(out), "--num-cpus", "1", "--domains", "cheque"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "6/6 written" in proc.stdout
    assert shards.count_rows(str(out)) == 6
