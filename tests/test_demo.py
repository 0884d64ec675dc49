"""The README's main command (`scripts/demo` = `python jobs/demo.py`) end to end, on the session's Ray
cluster: generate an archive, transcribe it with the bulk job and the shipped models, score it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from htr_ray.io import storage
from htr_ray.pages.output import committed_rows

REPO = Path(__file__).resolve().parents[1]


def test_demo_generates_transcribes_and_scores_every_page(ray_local, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "demo.py"), "--pages", "3", "--workdir", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"3 pages, \d+ lines, 0 errors", text), text
    table = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(cheque|homework|prescription|all)\s+\d+\s+\d+\s+\d+\s+([0-9.]+)", text, re.M)}
    assert set(table) == {"cheque", "homework", "prescription", "all"}, text
    assert 0.0 <= table["all"] < 0.8  # a real score against the ground truth (bench/page_quality.py: 0.31)
    rows = committed_rows(storage.join(str(tmp_path), "results"), columns=("uri", "status", "lines"))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert any(ln["kind"] == "printed" for r in rows for ln in r["lines"])  # form print flagged, and kept
