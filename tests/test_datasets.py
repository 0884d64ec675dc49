"""Ingest readers on real files from ../shared/data and on small files written here by each format's spec."""

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htr_ray.data import datasets
from htr_ray.io import images, shards, storage
from htr_ray.data.ingest import run_ingest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ writers by the spec


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def gnt_record(char: str | bytes, bitmap: np.ndarray) -> bytes:
    tag = char if isinstance(char, bytes) else char.encode("gb2312")
    h, w = bitmap.shape
    return struct.pack("<I2sHH", 10 + w * h, tag, w, h) + bitmap.astype(np.uint8).tobytes()


def glyph(seed: int, h: int = 30, w: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 255, np.uint8)
    img[5:h - 5, 4:w - 4] = rng.integers(0, 120, size=(h - 10, w - 8))
    return img


def png(gray: np.ndarray) -> bytes:
    return images.encode_png(gray)


# --------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_written_by_spec(tmp_path, gz):
    src = tmp_path / "mnist"
    src.mkdir()
    suffix = ".gz" if gz else ""
    imgs = np.zeros((7, 28, 28), np.uint8)
    imgs[:, 10:18, 12:16] = 255  # white stroke on black, as MNIST stores it
    write_idx(src / f"train-images-idx3-ubyte{suffix}", imgs, gz)
    write_idx(src / f"train-labels-idx1-ubyte{suffix}", np.arange(7) % 10, gz)
    write_idx(src / f"t10k-images-idx3-ubyte{suffix}", imgs[:3], gz)
    write_idx(src / f"t10k-labels-idx1-ubyte{suffix}", np.array([4, 5, 6]), gz)
    report = run_ingest("mnist", str(src), str(tmp_path / "out"), parallel=False, val_percent=0)
    assert report.read == 10 and report.total_written == 10 and report.total_errors == 0
    rows = list(shards.iter_rows(str(tmp_path / "out"), "test"))
    assert [r["text"] for r in rows] == ["4", "5", "6"]
    gray = images.decode_gray(rows[0]["image"])
    assert gray.shape == (28, 28) and gray[0, 0] == 255 and gray[12, 13] == 0  # inverted: dark ink on white


def test_mnist_truncated_idx_and_count_mismatch(tmp_path):
    src = tmp_path / "mnist"
    src.mkdir()
    write_idx(src / "train-images-idx3-ubyte", np.zeros((5, 28, 28)), False)
    write_idx(src / "train-labels-idx1-ubyte", np.arange(3), False)  # 2 labels missing
    write_idx(src / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    (src / "t10k-images-idx3-ubyte").write_bytes((src / "t10k-images-idx3-ubyte").read_bytes()[:500])
    write_idx(src / "t10k-labels-idx1-ubyte", np.arange(4), False)
    report = run_ingest("mnist", str(src), str(tmp_path / "out"), parallel=False)
    assert report.total_written == 3
    assert report.errors_by_kind == {"count_mismatch": 3, "bad_file": 1}
    assert any("truncated" in e["message"] for e in report.errors)
    assert report.read == report.total_written + report.total_errors


def test_mnist_real_counts(shared_data, tmp_path):
    chunks, errors = datasets.plan_mnist(str(shared_data / "mnist"), 5000, 5)
    assert not errors
    assert sum(c["stop"] - c["start"] for c in chunks) == 70000
    # read one real chunk end to end
    samples = list(datasets.read_mnist(chunks[0]))
    assert len(samples) == 5000 and {s.text for s in samples} == set("0123456789")


# ------------------------------------------------------------------------------------------------ IAM


def test_iam_real_subset_and_form_split(shared_data, tmp_path):
    src = shared_data / "iam_ondb_lines"
    lines = (src / "labels.tsv").read_text().splitlines()
    subset = tmp_path / "labels.tsv"
    # absolute image paths keep the subset pointing at the real images
    rows = [lines[0]] + ["\t".join([f.split("\t")[0], str(src / f.split("\t")[1]), f.split("\t")[2]]) for f in lines[1:301]]
    subset.write_text("\n".join(rows) + "\n")
    report = run_ingest("iam", str(subset), str(tmp_path / "out"), parallel=False)
    assert report.read == 300 and report.total_written == 300 and report.total_errors == 0
    by_form = {}
    for r in shards.iter_rows(str(tmp_path / "out")):
        by_form.setdefault(datasets.iam_form_id(r["id"]), set()).add(r["split"])
    assert all(len(s) == 1 for s in by_form.values()), "a form's lines landed in two splits"
    first = next(shards.iter_rows(str(tmp_path / "out"), "train"))
    assert first["source"] == "iam-ondb" and first["text"]


def test_iam_bad_inputs_are_counted_with_position(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes(png(glyph(1, 40, 200)))
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage that is no png")
    (tmp_path / "labels.tsv").write_text(
        "line_id\timage\ttranscription\n"
        "f01-000-01\timages/ok.png\thello world\n"
        "f01-000-02\timages/corrupt.png\tbroken\n"
        "f01-000-03\timages/missing.png\tgone\n"
        "f01-000-04\ttoo\tmany\tfields\n"
    )
    report = run_ingest("iam", str(tmp_path), str(tmp_path / "out"), parallel=False)
    assert report.read == 4 and report.total_written == 1
    kinds = {e["kind"]: e for e in report.errors}
    assert set(kinds) == {"image_undecodable", "missing_file", "bad_label_line"} or set(kinds) == {"image_truncated", "missing_file", "bad_label_line"}
    assert kinds["bad_label_line"]["where"].endswith("labels.tsv:5")
    assert "missing.png" in kinds["missing_file"]["message"]
    saved = json.loads((tmp_path / "out" / "_ingest.json").read_text())
    assert saved["total_errors"] == 3 and saved["total_written"] == 1


# ------------------------------------------------------------------------------------------ CASIA GNT


def test_gnt_written_by_spec_with_bad_records(tmp_path):
    good = [("安", glyph(1)), ("宀", glyph(2, 20, 31)), ("字", glyph(3))]
    data = b"".join(gnt_record(c, b) for c, b in good[:2])
    data += gnt_record(b"\xff\xff", glyph(4))  # not a GB2312 character: skipped, walk goes on
    data += gnt_record(*good[2])
    (tmp_path / "w001.gnt").write_bytes(data)
    # a second writer whose file is cut in the middle of its second record
    data2 = gnt_record("宏", glyph(5)) + gnt_record("宙", glyph(6))[:-40]
    (tmp_path / "w002.gnt").write_bytes(data2)
    report = run_ingest("casia-gnt", str(tmp_path), str(tmp_path / "out"), parallel=False)
    assert report.total_written == 4
    assert report.errors_by_kind == {"unknown_char": 1, "bad_record": 1}
    assert report.read == 6
    rows = sorted(shards.iter_rows(str(tmp_path / "out")), key=lambda r: r["id"])
    assert sorted(r["text"] for r in rows) == sorted(["安", "宀", "字", "宏"])
    by_id = {r["id"]: r for r in rows}
    second = by_id[f"casia-gnt/w001.gnt/{10 + 30 * 24}"]
    assert second["text"] == "宀"
    assert np.array_equal(images.decode_gray(second["image"]), good[1][1])
    # writer-disjoint: all samples of one file share a split
    assert len({r["split"] for r in rows if "w001" in r["id"]}) == 1
    bad = next(e for e in report.errors if e["kind"] == "bad_record")
    assert "w002.gnt@" in bad["where"] and "truncated" in bad["message"]


# ------------------------------------------------------------------------------------------ CASIA PNG


def test_casia_png_real_counts(shared_data, tmp_path):
    chunks, errors = datasets.plan_casia_png(str(shared_data / "casia_hwdb_21"), 5000, 5)
    assert not errors
    items = [i for c in chunks for i in c["items"]]
    assert len(items) == 13828
    assert sum(1 for i in items if i[2] == "test") == 2674


def test_casia_png_folders_with_bad_entries(tmp_path):
    for split, folder, n in (("train", "U+5B89_安", 3), ("test", "U+5B89_安", 1), ("train", "U+5B80_它", 1), ("train", "U+ZZZZ_x", 1)):
        d = tmp_path / split / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{i}.png").write_bytes(png(glyph(i)))
    (tmp_path / "train" / "U+5B89_安" / "bad.png").write_bytes(b"")
    report = run_ingest("casia-png", str(tmp_path), str(tmp_path / "out"), parallel=False, val_percent=0)
    # U+ZZZZ is not hex, so the folder name is taken as the label itself; U+5B80 is 宀, not 它
    assert report.errors_by_kind == {"unknown_char": 1, "image_empty": 1}
    assert report.total_written == 5
    assert report.written == {"train": 4, "test": 1}
    texts = sorted(r["text"] for r in shards.iter_rows(str(tmp_path / "out")))
    assert texts == sorted(["安"] * 4 + ["U+ZZZZ_x"])


# ------------------------------------------------------------------------------------------- manifest


def test_manifest_jsonl_and_csv_on_s3(s3_bucket, tmp_path):
    for name in ("a", "b", "c"):
        storage.write_bytes(f"{s3_bucket}/scans/doc-{name}/line1.png", png(glyph(ord(name), 40, 160)))
    storage.write_bytes(f"{s3_bucket}/scans/doc-c/line2.png", b"this is not an image")
    jsonl = "\n".join([
        json.dumps({"image": "scans/doc-a/line1.png", "text": "pay John", "domain": "cheque"}),
        json.dumps({"image": f"{s3_bucket}/scans/doc-b/line1.png", "text": "500 mg", "split": "test"}),
        "{not json",
        json.dumps({"image": "scans/doc-c/line2.png", "text": "x"}),
        json.dumps({"text": "no image"}),
    ])
    storage.write_text(f"{s3_bucket}/manifest.jsonl", jsonl)
    report = run_ingest("manifest", f"{s3_bucket}/manifest.jsonl", f"{s3_bucket}/shards", parallel=False)
    assert report.read == 5 and report.total_written == 2
    assert report.errors_by_kind == {"bad_label_line": 2, "image_undecodable": 1}
    rows = {r["text"]: r for r in shards.iter_rows(f"{s3_bucket}/shards")}
    assert rows["500 mg"]["split"] == "test" and rows["pay John"]["domain"] == "cheque"

    csv_text = "image,text,document\nscans/doc-a/line1.png,one,d1\nscans/doc-b/line1.png,two,d1\nscans/doc-c/line1.png,\"three, 3\",d1\nbroken,row,with,extra\n"
    storage.write_text(f"{s3_bucket}/manifest.csv", csv_text)
    report = run_ingest("manifest", f"{s3_bucket}/manifest.csv", f"{s3_bucket}/shards-csv", parallel=False)
    assert report.total_written == 3 and report.errors_by_kind == {"bad_label_line": 1}
    assert len({r["split"] for r in shards.iter_rows(f"{s3_bucket}/shards-csv")}) == 1  # one document, one split


# ----------------------------------------------------------------------------- parallel + the job


def test_parallel_ingest_with_ray_data_to_s3(ray_local, s3_bucket, tmp_path):
    src = tmp_path / "lines"
    (src / "images").mkdir(parents=True)
    rows = ["line_id\timage\ttranscription"]
    for i in range(40):
        (src / "images" / f"{i}.png").write_bytes(png(glyph(i, 32, 120)))
        rows.append(f"form{i // 4:02d}-x-{i % 4:02d}\timages/{i}.png\ttext {i}")
    (src / "labels.tsv").write_text("\n".join(rows) + "\n")
    report = run_ingest("iam", str(src), f"{s3_bucket}/iam", chunk_size=10, parallel=True)
    assert report.parallel and report.read == 40 and report.total_written == 40
    assert shards.count_rows(f"{s3_bucket}/iam") == 40
    assert len(report.files) >= 4


def test_ingest_job_prints_summary(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png(glyph(1, 40, 100)))
    (tmp_path / "labels.tsv").write_text("x-1-01\timages/a.png\tok\nbad line\n")
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "ingest.py"), "--format", "iam", "--input", str(tmp_path),
                          "--output", str(tmp_path / "out"), "--no-parallel"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "read 2 records" in out.stdout and "written 1" in out.stdout and "bad_label_line 1" in out.stdout
