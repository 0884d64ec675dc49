"""The result containers: one :class:`PageResult` per page, holding :class:`TextLine` s. The bulk job
writes them as Parquet rows (:data:`RESULT_SCHEMA`, :meth:`PageResult.to_row`), Serve returns them as
JSON (the same ``to_row``), and :mod:`htr_ray.pages.formats` writes ALTO, PAGE-XML and hOCR from them.
Nothing else defines what a page result looks like.

Coordinates are pixels of the page *as given* (the scan, before deskewing). ``text`` joins the
handwritten lines in reading order; printed lines (form labels) are read and kept in ``lines`` with
``kind == "printed"`` but left out of ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from htr_ray.layout.base import HANDWRITTEN, PRINTED

OK, ERROR = "ok", "error"


@dataclass
class TextLine:
    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    bbox: list[int] = field(default_factory=list)  # [x0, y0, x1, y1]
    polygon: list[list[int]] = field(default_factory=list)  # [[x, y], ...]
    baseline: list[list[int]] = field(default_factory=list)  # [[x, y], ...] left to right
    kind: str = HANDWRITTEN
    # x of each character's centre along the line, in page pixels (from the CTC alignment); [] = unknown
    char_x: list[int] = field(default_factory=list)

    @property
    def printed(self) -> bool:
        return self.kind == PRINTED

    def to_row(self, char_confidences: bool = True) -> dict:
        return {"text": self.text, "confidence": float(self.confidence),
                "char_confidences": [float(c) for c in self.char_confidences] if char_confidences else [],
                "bbox": [int(v) for v in self.bbox], "polygon": [[int(x), int(y)] for x, y in self.polygon],
                "baseline": [[int(x), int(y)] for x, y in self.baseline], "kind": self.kind,
                "char_x": [int(v) for v in self.char_x]}

    @classmethod
    def from_row(cls, row: dict) -> "TextLine":
        return cls(text=row.get("text") or "", confidence=float(row.get("confidence") or 0.0),
                   char_confidences=list(row.get("char_confidences") or []), bbox=list(row.get("bbox") or []),
                   polygon=[list(p) for p in row.get("polygon") or []],
                   baseline=[list(p) for p in row.get("baseline") or []],
                   kind=row.get("kind") or (PRINTED if row.get("printed") else HANDWRITTEN),
                   char_x=list(row.get("char_x") or []))


@dataclass
class PageResult:
    uri: str
    page: int = 0  # 0-based page of a multi-page file
    pages: int = 1  # pages in the file
    status: str = OK
    error_kind: str = ""
    error: str = ""
    lines: list[TextLine] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0  # CPU seconds this page cost, all stages
    width: int = 0
    height: int = 0
    angle: float = 0.0  # deskew rotation, degrees
    # seconds per stage: decode, find_lines, recognize, assemble (as measured where they ran)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(ln.text for ln in self.lines if not ln.printed)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def failed(cls, uri: str, kind: str, message: str, page: int = 0, pages: int = 1, model: str = "") -> "PageResult":
        return cls(uri=uri, page=page, pages=pages, status=ERROR, error_kind=kind, error=message, model=model)

    def to_row(self, char_confidences: bool = True) -> dict[str, Any]:
        return {"uri": self.uri, "page": int(self.page), "pages": int(self.pages), "status": self.status,
                "error_kind": self.error_kind, "error": self.error, "text": self.text,
                "lines": [ln.to_row(char_confidences) for ln in self.lines], "model": self.model,
                "seconds": float(self.seconds), "width": int(self.width), "height": int(self.height),
                "angle": float(self.angle), "timings": {k: float(self.timings.get(k, 0.0)) for k in STAGES}}

    @classmethod
    def from_row(cls, row: dict) -> "PageResult":
        return cls(uri=row["uri"], page=int(row.get("page") or 0), pages=int(row.get("pages") or 1),
                   status=row.get("status") or OK, error_kind=row.get("error_kind") or "",
                   error=row.get("error") or "", lines=[TextLine.from_row(r) for r in row.get("lines") or []],
                   model=row.get("model") or "", seconds=float(row.get("seconds") or 0.0),
                   width=int(row.get("width") or 0), height=int(row.get("height") or 0),
                   angle=float(row.get("angle") or 0.0), timings=dict(row.get("timings") or {}))


STAGES = ("decode", "find_lines", "recognize", "assemble")

POINTS = pa.list_(pa.list_(pa.int32()))
LINE_TYPE = pa.struct([
    ("text", pa.string()), ("confidence", pa.float32()), ("char_confidences", pa.list_(pa.float32())),
    ("bbox", pa.list_(pa.int32())), ("polygon", POINTS), ("baseline", POINTS), ("kind", pa.string()),
    ("char_x", pa.list_(pa.int32())),
])
RESULT_SCHEMA = pa.schema([
    ("uri", pa.string()), ("page", pa.int32()), ("pages", pa.int32()), ("status", pa.string()),
    ("error_kind", pa.string()), ("error", pa.string()), ("text", pa.string()), ("lines", pa.list_(LINE_TYPE)),
    ("model", pa.string()), ("seconds", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("angle", pa.float32()), ("timings", pa.struct([(s, pa.float64()) for s in STAGES])),
])


def to_table(results: list[PageResult]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in results], schema=RESULT_SCHEMA)


def from_table(table: pa.Table) -> list[PageResult]:
    return [PageResult.from_row(r) for r in table.to_pylist()]
