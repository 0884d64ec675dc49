"""Ingest of real handwriting formats into sample shards (DESIGN.md).

Each format is planned cheaply into *chunks* (small JSON-able dicts: a range of records), and each
chunk is read into :class:`~htr_ray.io.shards.Sample` rows or :class:`IngestError` records. The same
chunk reader runs in one process or in parallel Ray Data tasks (``htr_ray.ingest``), and every chunk
writes its own ``part-NNNNN`` file per split, so a rerun overwrites instead of duplicating.

Formats:
  mnist      the four IDX files (gzipped or not); digits are inverted to dark ink on white
  iam        ``labels.tsv`` (line id, image path, transcription) beside an image tree
  casia-png  class folders ``<split>/U+XXXX_<char>/*.png`` (or ``<split>/<label>/*.png``)
  casia-gnt  CASIA-HWDB ``.gnt`` files: per sample 4-byte LE size, 2-byte GB2312 code, 2-byte LE
             width, 2-byte LE height, width*height gray bytes
  manifest   CSV or JSONL with an image URI and a text per row (optional id, split, domain, source,
             document); relative image paths are resolved against the manifest's folder

Splits: a source's own split is kept. Otherwise samples are split by *document* (form id, writer
file, page folder), never by line, with a stable hash, so lines of one page never land on both sides.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import struct
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

from htr_ray.data import labels
from htr_ray.data.labels import split_by_group  # noqa: F401  (the split rule, used by every format here)
from htr_ray.io import images, storage
from htr_ray.io.shards import Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DEFAULT_CHUNK = 5000


@dataclass
class IngestError:
    """One input record that could not be ingested: ``kind`` is a stable tag for counting, ``where``
    names the file and position, ``message`` says what is wrong."""

    kind: str
    where: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def carve_val(sample_id: str, val_percent: int) -> str:
    """For sources that ship only train/test: a stable ``val_percent`` of train becomes val."""
    return "val" if val_percent and zlib.crc32(sample_id.encode("utf-8")) % 100 < val_percent else "train"


# ---------------------------------------------------------------------------------------------- MNIST

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 TT DD, DD big-endian dims, then data."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in IDX_DTYPES:
        raise ValueError(f"unknown IDX data type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header < expected:
        raise ValueError(f"IDX file truncated: {len(data) - header} data bytes, {expected} expected for shape {dims}")
    return np.frombuffer(data, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims)


@lru_cache(maxsize=4)
def _idx_cached(uri: str) -> np.ndarray:
    return parse_idx(storage.read_bytes(uri))


def _find_idx(files: list[str], prefix: str, kind: str) -> str | None:
    for uri in files:
        name = storage.basename(uri)
        if name.startswith(prefix) and f"{kind}-idx" in name:
            return uri
    return None


def plan_mnist(input_uri: str, chunk: int, val_percent: int) -> tuple[list[dict], list[IngestError]]:
    files = storage.list_uris(input_uri)
    chunks, errors = [], []
    for prefix, split in (("train", "train"), ("t10k", "test")):
        img_uri, lbl_uri = _find_idx(files, prefix, "images"), _find_idx(files, prefix, "labels")
        if not img_uri or not lbl_uri:
            errors.append(IngestError("missing_file", input_uri, f"no {prefix}-images/{prefix}-labels IDX pair"))
            continue
        try:
            n_img, n_lbl = len(_idx_cached(img_uri)), len(_idx_cached(lbl_uri))
        except (ValueError, storage.StorageError) as exc:
            errors.append(IngestError("bad_file", img_uri, str(exc)))
            continue
        if n_img != n_lbl:
            errors.append(IngestError("count_mismatch", img_uri, f"{n_img} images but {n_lbl} labels; extra records skipped"))
            # the unmatched tail is reported, each missing partner once
            for i in range(min(n_img, n_lbl), max(n_img, n_lbl)):
                errors.append(IngestError("count_mismatch", f"{img_uri}#{i}", "record has no partner"))
        n = min(n_img, n_lbl)
        for start in range(0, n, chunk):
            chunks.append({"images": img_uri, "labels": lbl_uri, "split": split, "start": start,
                           "stop": min(n, start + chunk), "val_percent": val_percent, "name": prefix})
    return chunks, errors


def read_mnist(c: dict) -> Iterator[Sample | IngestError]:
    imgs, lbls = _idx_cached(c["images"]), _idx_cached(c["labels"])
    for i in range(c["start"], c["stop"]):
        sample_id = f"mnist-{c['name']}-{i:05d}"
        label = int(lbls[i])
        if not 0 <= label <= 9:
            yield IngestError("bad_label", f"{c['labels']}#{i}", f"label {label} is not a digit")
            continue
        split = c["split"] if c["split"] == "test" else carve_val(sample_id, c["val_percent"])
        gray = 255 - np.ascontiguousarray(imgs[i], dtype=np.uint8)  # MNIST is white ink on black
        yield Sample(sample_id, images.encode_png(gray, 1), str(label), "mnist", "digits", split)


# ------------------------------------------------------------------------------------------------ IAM


def plan_iam(input_uri: str, chunk: int, val_percent: int) -> tuple[list[dict], list[IngestError]]:
    rows, bad = labels.read(input_uri)
    errors = [IngestError("bad_label_line", b.where, b.message) for b in bad]
    uri = labels.labels_uri(input_uri)
    base = rows[0].base if rows else ""
    records = [[r.lineno, r.line_id, r.image, r.text] for r in rows]
    chunks = [{"labels": uri, "base": base, "rows": records[i:i + chunk], "val_percent": val_percent}
              for i in range(0, len(records), chunk)]
    return chunks, errors


iam_form_id = labels.form_of  # 'a01-000u-01' -> 'a01-000u'


def _load_referenced_image(base: str, ref: str, where: str) -> tuple[str, "np.ndarray | IngestError"]:
    """(uri, gray image or the error) for an image named in a label file or manifest; a relative
    reference is resolved against the label file's folder."""
    uri = ref if "://" in ref or os.path.isabs(ref) else storage.join(base, ref)
    try:
        return uri, images.decode_gray(storage.read_bytes(uri))
    except storage.StorageError as exc:
        return uri, IngestError("missing_file", where, str(exc))
    except images.ImageError as exc:
        return uri, IngestError(f"image_{exc.kind}", where, f"{ref}: {exc}")


def read_iam(c: dict) -> Iterator[Sample | IngestError]:
    for lineno, line_id, rel, transcription in c["rows"]:
        _, gray = _load_referenced_image(c["base"], rel, f"{c['labels']}:{lineno}")
        if isinstance(gray, IngestError):
            yield gray
            continue
        split = split_by_group(iam_form_id(line_id), c["val_percent"])
        yield Sample(line_id, images.encode_png(gray), transcription, "iam-ondb", "generic", split)


# ---------------------------------------------------------------------------------------- CASIA (PNG)

CODEPOINT_DIR = re.compile(r"^U\+([0-9A-Fa-f]{4,6})(?:_(.*))?$")


def label_from_folder(name: str) -> str:
    """'U+5B89_安' -> '安'; any other folder name is the label itself. Raises ValueError for a code
    point that is not a character or disagrees with the character after the underscore."""
    m = CODEPOINT_DIR.match(name)
    if not m:
        return name
    cp = int(m.group(1), 16)
    if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        raise ValueError(f"folder {name!r}: U+{m.group(1)} is not a Unicode character")
    char = chr(cp)
    if m.group(2) and m.group(2) != char:
        raise ValueError(f"folder {name!r}: code point U+{m.group(1)} is {char!r}, the name says {m.group(2)!r}")
    return char


def plan_casia_png(input_uri: str, chunk: int, val_percent: int) -> tuple[list[dict], list[IngestError]]:
    root = input_uri.rstrip("/")
    files = storage.list_uris(root, suffixes=IMAGE_SUFFIXES)
    items, errors = [], []
    for uri in files:
        rel = uri[len(root):].lstrip("/").split("/") if storage.is_s3(uri) else os.path.relpath(uri, storage.parse(root).path).split(os.sep)
        if len(rel) < 2:
            errors.append(IngestError("bad_layout", uri, "expected <split>/<class>/<image> or <class>/<image>"))
            continue
        split = rel[-3] if len(rel) >= 3 and rel[-3] in ("train", "val", "test") else None
        items.append([uri, rel[-2], split])
    chunks = [{"items": items[i:i + chunk], "val_percent": val_percent, "root": root} for i in range(0, len(items), chunk)]
    return chunks, errors


def read_casia_png(c: dict) -> Iterator[Sample | IngestError]:
    for uri, folder, split in c["items"]:
        try:
            label = label_from_folder(folder)
        except ValueError as exc:
            yield IngestError("unknown_char", uri, str(exc))
            continue
        try:
            gray = images.decode_gray(storage.read_bytes(uri))
        except storage.StorageError as exc:
            yield IngestError("missing_file", uri, str(exc))
            continue
        except images.ImageError as exc:
            yield IngestError(f"image_{exc.kind}", uri, str(exc))
            continue
        sample_id = "casia/" + "/".join(uri.replace(os.sep, "/").split("/")[-3:])
        if split is None:
            split = split_by_group(folder + "/" + storage.basename(uri), c["val_percent"])
        elif split == "train":
            split = carve_val(sample_id, c["val_percent"])
        yield Sample(sample_id, images.encode_png(gray), label, "casia-hwdb", "hanzi", split)


# ---------------------------------------------------------------------------------------- CASIA (GNT)

GNT_HEADER = struct.Struct("<I2sHH")  # size, GB2312 tag code (2 raw bytes), width, height


def iter_gnt(data: bytes, where: str) -> Iterator[tuple[int, str | None, np.ndarray | None, IngestError | None]]:
    """Walk the records of a .gnt file: (offset, label, gray, error). A record whose size field cannot
    be trusted ends the walk with a 'bad_record' error (nothing after it can be located)."""
    off = 0
    n = len(data)
    while off < n:
        if n - off < GNT_HEADER.size:
            yield off, None, None, IngestError("bad_record", f"{where}@{off}", f"{n - off} trailing bytes, too short for a record header")
            return
        size, tag, width, height = GNT_HEADER.unpack_from(data, off)
        if size != GNT_HEADER.size + width * height or width == 0 or height == 0:
            yield off, None, None, IngestError(
                "bad_record", f"{where}@{off}",
                f"record size {size} does not match {width}x{height} bitmap; rest of file ({n - off} bytes) skipped")
            return
        if off + size > n:
            yield off, None, None, IngestError("bad_record", f"{where}@{off}", f"record of {size} bytes runs past the end of the file (truncated)")
            return
        try:
            label = tag.decode("gb2312")
            if len(label) != 1:
                raise UnicodeDecodeError("gb2312", tag, 0, 2, "not one character")
        except UnicodeDecodeError:
            yield off, None, None, IngestError("unknown_char", f"{where}@{off}", f"tag code 0x{tag.hex()} is not a GB2312 character")
            off += size
            continue
        bitmap = np.frombuffer(data, np.uint8, count=width * height, offset=off + GNT_HEADER.size).reshape(height, width)
        yield off, label, bitmap, None
        off += size


def plan_casia_gnt(input_uri: str, chunk: int, val_percent: int) -> tuple[list[dict], list[IngestError]]:
    files = storage.list_uris(input_uri, suffixes=(".gnt",))
    if not files:
        return [], [IngestError("missing_file", input_uri, "no .gnt files found")]
    # one chunk per file: records are only locatable by walking the file
    return [{"file": uri, "val_percent": val_percent} for uri in files], []


def read_casia_gnt(c: dict) -> Iterator[Sample | IngestError]:
    uri = c["file"]
    try:
        data = storage.read_bytes(uri)
    except storage.StorageError as exc:
        yield IngestError("missing_file", uri, str(exc))
        return
    parts = uri.replace(os.sep, "/").split("/")
    given = parts[-2] if len(parts) >= 2 and parts[-2] in ("train", "val", "test") else None
    writer = storage.basename(uri)
    # a .gnt file is one writer: splitting by file keeps the split writer-disjoint
    split = given or split_by_group(writer, c["val_percent"])
    for index, (off, label, bitmap, err) in enumerate(iter_gnt(data, uri)):
        if err is not None:
            yield err
            continue
        yield Sample(f"casia-gnt/{writer}/{off}", images.encode_png(np.ascontiguousarray(bitmap)), label, "casia-hwdb", "hanzi", split)


# ------------------------------------------------------------------------------------------- manifest


def _manifest_rows(uri: str) -> Iterator[tuple[int, dict | None, str | None]]:
    text = storage.read_text(uri)
    if uri.lower().endswith((".jsonl", ".ndjson")):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                yield lineno, row, None
            except ValueError as exc:
                yield lineno, None, f"bad JSON: {exc}"
    else:
        dialect = "excel-tab" if uri.lower().endswith(".tsv") else "excel"
        reader = csv.reader(io.StringIO(text), dialect=dialect)
        header = next(reader, None) or []
        for lineno, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                yield lineno, None, f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}"
                continue
            yield lineno, dict(zip(header, fields)), None


def plan_manifest(input_uri: str, chunk: int, val_percent: int) -> tuple[list[dict], list[IngestError]]:
    base = input_uri.rsplit("/", 1)[0] if storage.is_s3(input_uri) else os.path.dirname(storage.parse(input_uri).path)
    rows, errors = [], []
    for lineno, row, problem in _manifest_rows(input_uri):
        where = f"{input_uri}:{lineno}"
        if problem is None and (not row.get("image") or row.get("text") is None):
            problem = "row needs an 'image' and a 'text' field"
        if problem:
            errors.append(IngestError("bad_label_line", where, problem))
            continue
        rows.append([where, {k: (str(v) if v is not None else None) for k, v in row.items()}])
    chunks = [{"base": base, "rows": rows[i:i + chunk], "val_percent": val_percent} for i in range(0, len(rows), chunk)]
    return chunks, errors


def read_manifest(c: dict) -> Iterator[Sample | IngestError]:
    for where, row in c["rows"]:
        ref = row["image"]
        uri, gray = _load_referenced_image(c["base"], ref, where)
        if isinstance(gray, IngestError):
            yield gray
            continue
        split = row.get("split") or ""
        if split not in ("train", "val", "test"):
            group = row.get("document") or uri.rsplit("/", 1)[0]
            split = split_by_group(group, c["val_percent"])
        yield Sample(row.get("id") or ref, images.encode_png(gray), row["text"], row.get("source") or "manifest",
                     row.get("domain") or "generic", split)


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Format:
    name: str
    plan: Callable[[str, int, int], tuple[list[dict], list[IngestError]]]
    read: Callable[[dict], Iterator[Sample | IngestError]]
    default_val_percent: int


FORMATS = {
    "mnist": Format("mnist", plan_mnist, read_mnist, 5),
    "iam": Format("iam", plan_iam, read_iam, 5),
    "casia-png": Format("casia-png", plan_casia_png, read_casia_png, 5),
    "casia-gnt": Format("casia-gnt", plan_casia_gnt, read_casia_gnt, 5),
    "manifest": Format("manifest", plan_manifest, read_manifest, 5),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}") from None
