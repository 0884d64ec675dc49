"""The one reader of IAM-style ``labels.tsv`` files, and the project's split rule for them.

A ``labels.tsv`` sits beside an image tree: an optional header ``line_id<TAB>image<TAB>transcription``,
then one line per text line: its id (``a01-000u-01``: form ``a01-000u``, line 1), the image path
(relative to the file's folder, or a URI) and the transcription. Ingest, training, the synthetic-data
generator (texts and pen strokes of train forms only), the tests and the benchmarks all read it here.

Lines are split by *form*, never by line (:func:`split_by_group` on :func:`form_of`), so lines of one
page never land on both sides of an evaluation. A line without exactly three fields is not a row: it is
returned as a :class:`BadLine` with its line number, for the caller to report (ingest counts it as an
error; training logs it).

Plain Python: no numpy, torch or Ray.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass

from htr_ray.io import storage

log = logging.getLogger(__name__)

FILE_NAME = "labels.tsv"
HEADER = ("line_id", "image", "transcription")


def split_by_group(group: str, val_percent: int = 5, test_percent: int = 5) -> str:
    """Deterministic document-level split: the same group id always lands in the same split
    (``crc32(group) % 100``: below ``test_percent`` test, below ``test_percent + val_percent`` val)."""
    bucket = zlib.crc32(group.encode("utf-8")) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
    return "train"


def form_of(line_id: str) -> str:
    """'a01-000u-01' -> 'a01-000u': the form a line was written on."""
    return re.sub(r"-\d+$", "", line_id)


@dataclass(frozen=True)
class LabelRow:
    """One line of a labels.tsv: ``image`` as written in the file; :meth:`image_uri` resolves it."""

    line_id: str
    image: str
    text: str
    lineno: int
    base: str  # the folder of the labels file (URI or path)

    @property
    def form(self) -> str:
        return form_of(self.line_id)

    def split(self, val_percent: int = 5) -> str:
        return split_by_group(self.form, val_percent)

    def image_uri(self) -> str:
        if "://" in self.image or os.path.isabs(self.image):
            return self.image
        return storage.join(self.base, *self.image.split("/"))


@dataclass(frozen=True)
class BadLine:
    """A line of the file that is not a row: where it is and why."""

    where: str  # <labels uri>:<line number>
    message: str


def labels_uri(root_or_file: str) -> str:
    """The labels file of a dataset folder (or the ``.tsv`` given itself)."""
    s = str(root_or_file)
    return s if s.endswith(".tsv") else storage.join(s, FILE_NAME)


def has_labels(root: str) -> bool:
    """True when ``root`` is an IAM-style folder (holds a labels.tsv)."""
    return storage.exists(labels_uri(root))


def parse(text: str, uri: str = FILE_NAME, base: str = "") -> tuple[list[LabelRow], list[BadLine]]:
    """Rows and bad lines of a labels.tsv's text (blank lines are skipped; the header is optional)."""
    rows, bad = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if lineno == 1 and tuple(fields[:2]) == HEADER[:2]:
            continue
        if len(fields) != 3:
            bad.append(BadLine(f"{uri}:{lineno}", "expected 3 tab-separated fields (line_id, image, "
                                                  f"transcription), got {len(fields)}"))
            continue
        rows.append(LabelRow(fields[0], fields[1], fields[2], lineno, base))
    return rows, bad


def read(root_or_file: str, split: str | None = None, val_percent: int = 5) -> tuple[list[LabelRow], list[BadLine]]:
    """Rows (of one split by form, if given) and bad lines of a dataset folder's labels.tsv (local
    path, ``file://`` or ``s3://``)."""
    uri = labels_uri(root_or_file)
    base = uri.rsplit("/", 1)[0] if "://" in uri else os.path.dirname(storage.parse(uri).path)
    rows, bad = parse(storage.read_text(uri), uri, base)
    if split is not None:
        rows = [r for r in rows if r.split(val_percent) == split]
    return rows, bad


def read_rows(root_or_file: str, split: str | None = None) -> list[LabelRow]:
    """:func:`read`, logging the bad lines instead of returning them."""
    rows, bad = read(root_or_file, split)
    for b in bad[:20]:
        log.warning("%s: %s", b.where, b.message)
    if len(bad) > 20:
        log.warning("... and %d more bad lines in %s", len(bad) - 20, labels_uri(root_or_file))
    return rows
