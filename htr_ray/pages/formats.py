"""Standard OCR outputs written from the result containers (:mod:`htr_ray.pages.results`): ALTO XML v4
(schema 4.4), PAGE-XML (2019-07-15) and hOCR 1.2. The bulk job (``--formats alto,page,hocr``) and Serve
(``Accept`` / ``?format=``) call :func:`render`, :func:`page_file_name`, :data:`FORMATS` and
:data:`MEDIA_TYPES`, and nothing else; :func:`read_alto` reads an ALTO file written here back into a
:class:`PageResult` (the round-trip check).

What goes where:

========================  ==========================  ===========================  ==========================
                          ALTO v4                     PAGE 2019-07-15              hOCR
========================  ==========================  ===========================  ==========================
page size                 Page WIDTH/HEIGHT           Page imageWidth/imageHeight  ocr_page bbox
line (reading order)      TextBlock/TextLine, in      TextRegion/TextLine, plus    ocr_carea/ocr_par/ocr_line,
                          order + ReadingOrder        ReadingOrder/OrderedGroup    in document order
line polygon              TextLine/Shape/Polygon      TextLine/Coords              ocr_line bbox + poly
baseline                  TextLine/@BASELINE points   TextLine/Baseline            ocr_line baseline (slope,
                                                                                   offset), when defined
word + confidence         String/@WC                  Word/TextEquiv/@conf         ocrx_word x_wconf (0-100)
character + confidence    String/Glyph/@GC            Word/Glyph/TextEquiv/@conf   ocrx_word x_confs, x_bboxes
kind (handwritten or      TextLine/@TAGREFS ->        TextLine/@production and     ocr_line x_kind
printed)                  Tags/OtherTag               @custom "kind {value:..;}"
error page                Processing step             Metadata/Comments            meta htr-ray:status/error
                          description
========================  ==========================  ===========================  ==========================

Coordinates are pixels of the page as given (as in :class:`PageResult`), clipped to be non-negative.
Words are the line's text split on spaces. A word's (and each character's) horizontal extent comes from
``TextLine.char_x`` (the x of each character's centre, from the CTC alignment) when it holds one value
per character, and otherwise from the line box divided in proportion to character counts; vertically a
word spans the line box. Every ``char_confidences`` value is per character of ``text`` (spaces included):
a word's confidence is the mean of its characters', or the line's confidence when they are missing.
A page with status ``error`` renders as a valid document with no lines, its error kind and message kept.
The same result always renders to the same bytes (see :data:`EPOCH`).

ALTO separates words with one ``SP``: a run of spaces, or a space at either end of a line, is written as
an empty ``String`` beside the others, so :func:`read_alto` gives the text back exactly (PAGE-XML keeps
the exact text in each line's ``TextEquiv``; there, and in hOCR, words are only the non-empty ones). What
ALTO has no place for,
and :func:`read_alto` therefore gives back only approximately: the confidence of a space (read back as
the lower of the nearest characters'), and a line's own confidence (read back as the mean of its
characters').
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Sequence

from htr_ray.layout.base import HANDWRITTEN, KINDS, PRINTED
from htr_ray.pages.results import ERROR, OK, PageResult, TextLine

FORMATS = ("alto", "page", "hocr")
MEDIA_TYPES = {
    "alto": "application/alto+xml",
    "page": "application/vnd.prima.page+xml",
    "hocr": "text/html",
}
EXTENSIONS = {"alto": ".alto.xml", "page": ".page.xml", "hocr": ".hocr.html"}

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_XSD = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_XSD = PAGE_NS + "/pagecontent.xsd"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XHTML_NS = "http://www.w3.org/1999/xhtml"

SOFTWARE = "htr-ray"
# PAGE's production values for our two kinds. PAGE distinguishes cursive from print script; the line
# finder does not, and most handwriting in the data is cursive.
PAGE_PRODUCTION = {HANDWRITTEN: "handwritten-cursive", PRINTED: "printed"}
_KIND_TAG = {k: f"kind_{k}" for k in KINDS}

# XML 1.0 allows tab, newline, carriage return and everything from U+0020 except surrogates, U+FFFE and
# U+FFFF. A recogniser's charset may hold anything; what XML cannot carry is replaced by U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(s: str) -> str:
    return _NOT_XML.sub("\ufffd", s or "")


def _check(fmt: str) -> str:
    f = (fmt or "").strip().lower()
    if f not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    return f


# ---------------------------------------------------------------- geometry shared by the three writers


@dataclass
class _Glyph:
    char: str
    x0: int
    x1: int
    conf: float | None


@dataclass
class _Word:
    text: str
    x0: int
    x1: int
    conf: float
    glyphs: list[_Glyph]


@dataclass
class _Line:
    line: TextLine
    box: list[int]  # [x0, y0, x1, y1], non-negative, x1 >= x0, y1 >= y0
    outline: list[list[int]]  # >= 3 points, non-negative
    baseline: list[list[int]]  # [] or >= 2 points, non-negative
    words: list[_Word]
    conf: float
    kind: str


def _conf(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f):
        return None
    return min(1.0, max(0.0, f))


def _points(pts) -> list[list[int]]:
    out = []
    for p in pts or []:
        if len(p) >= 2:
            out.append([max(0, int(round(float(p[0])))), max(0, int(round(float(p[1]))))])
    return out


def _line_box(ln: TextLine) -> list[int]:
    if len(ln.bbox) == 4:
        x0, y0, x1, y1 = (max(0, int(round(float(v)))) for v in ln.bbox)
    else:
        pts = _points(ln.polygon) or _points(ln.baseline)
        if not pts:
            return [0, 0, 0, 0]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _char_bounds(ln: TextLine, x0: int, x1: int) -> list[float]:
    """n + 1 x boundaries of the n characters of the line, left to right, within [x0, x1]."""
    n = len(ln.text)
    if n == 0:
        return [float(x0)]
    cx = [float(v) for v in ln.char_x] if len(ln.char_x) == n else []
    if cx and x1 > x0:
        b = [float(x0)] + [(cx[i - 1] + cx[i]) / 2 for i in range(1, n)] + [float(x1)]
        out, lo = [], float(x0)
        for v in b:  # clip into the line and keep the boundaries in order
            lo = min(float(x1), max(lo, v))
            out.append(lo)
        out[-1] = float(x1)
        return out
    return [x0 + (x1 - x0) * i / n for i in range(n + 1)]


def _spans(text: str, every_space: bool) -> list[tuple[int, int]]:
    """(start, end) of the words of ``text``: runs of non-space characters, or (``every_space``) the
    pieces between single spaces, empty ones included, so that joining them with one space gives the text
    back exactly (ALTO's way to keep runs of spaces and spaces at either end)."""
    if not every_space:
        return [m.span() for m in re.finditer(r"\S+", text)]
    spans, start = [], 0
    for piece in text.split(" "):
        spans.append((start, start + len(piece)))
        start += len(piece) + 1
    return spans


def _words(ln: TextLine, box: list[int], line_conf: float, every_space: bool = False) -> list[_Word]:
    text = _clean(ln.text)  # same length: one replacement character for each one XML cannot carry
    bounds = _char_bounds(ln, box[0], box[2])
    confs = [_conf(c) for c in ln.char_confidences] if len(ln.char_confidences) == len(text) else []
    words = []
    for s, e in _spans(text, every_space):
        glyphs = [_Glyph(text[i], int(round(bounds[i])), int(round(bounds[i + 1])), confs[i] if confs else None)
                  for i in range(s, e)]
        known = [g.conf for g in glyphs if g.conf is not None]
        conf = sum(known) / len(known) if known else line_conf
        words.append(_Word(text[s:e], int(round(bounds[s])), int(round(bounds[e])), conf, glyphs))
    return words


def _lines(result: PageResult, every_space: bool = False) -> list[_Line]:
    if result.status == ERROR:
        return []
    out = []
    for ln in result.lines:
        box = _line_box(ln)
        x0, y0, x1, y1 = box
        outline = _points(ln.polygon)
        if len(outline) < 3:
            outline = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        baseline = _points(ln.baseline)
        if len(baseline) < 2:
            baseline = []
        conf = _conf(ln.confidence)
        conf = 0.0 if conf is None else conf
        kind = ln.kind if ln.kind in KINDS else HANDWRITTEN
        out.append(_Line(ln, box, outline, baseline, _words(ln, box, conf, every_space), conf, kind))
    return out


def _page_size(result: PageResult, lines: list[_Line]) -> tuple[int, int]:
    w, h = max(0, int(result.width)), max(0, int(result.height))
    if w <= 0 or h <= 0:  # not known: the extent of what was found
        w = max([w] + [p[0] for ln in lines for p in ln.outline] + [ln.box[2] for ln in lines])
        h = max([h] + [p[1] for ln in lines for p in ln.outline] + [ln.box[3] for ln in lines])
    return w, h


def _fmt_num(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def _xml_bytes(root: ET.Element, doctype: str = "") -> bytes:
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body + "\n").encode("utf-8")


def _sub(parent: ET.Element, tag: str, attrib: dict | None = None, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in (attrib or {}).items() if v is not None})
    if text is not None:
        el.text = _clean(text)
    return el


# ---------------------------------------------------------------- ALTO


def _alto(result: PageResult, image_name: str, created: _dt.datetime) -> bytes:
    lines = _lines(result, every_space=True)
    width, height = _page_size(result, lines)
    root = ET.Element("alto", {"xmlns": ALTO_NS, "xmlns:xsi": XSI_NS,
                               "xsi:schemaLocation": f"{ALTO_NS} {ALTO_XSD}", "SCHEMAVERSION": "4.4"})
    desc = _sub(root, "Description")
    _sub(desc, "MeasurementUnit", text="pixel")
    src = _sub(desc, "sourceImageInformation")
    _sub(src, "fileName", text=image_name)
    proc = _sub(desc, "Processing", {"ID": "processing_0"})
    _sub(proc, "processingCategory", text="contentGeneration")
    _sub(proc, "processingStepDescription", text=f"status: {result.status}")
    if result.status == ERROR:
        _sub(proc, "processingStepDescription", text=f"error_kind: {result.error_kind}")
        _sub(proc, "processingStepDescription", text=f"error: {result.error}")
    _sub(proc, "processingStepSettings", text=f"model: {result.model}")
    sw = _sub(proc, "processingSoftware")
    _sub(sw, "softwareName", text=SOFTWARE)

    tags = _sub(root, "Tags")
    for k in KINDS:
        _sub(tags, "OtherTag", {"ID": _KIND_TAG[k], "TYPE": "kind", "LABEL": k,
                                "DESCRIPTION": f"{k} text line"})
    if lines:
        ro = _sub(root, "ReadingOrder")
        group = _sub(ro, "OrderedGroup", {"ID": "reading_order"})
        for i in range(len(lines)):
            _sub(group, "ElementRef", {"ID": f"ro_{i}", "REF": f"block_{i}"})

    layout = _sub(root, "Layout")
    page_attrs = {"ID": f"page_{int(result.page)}", "PHYSICAL_IMG_NR": str(int(result.page) + 1),
                  "WIDTH": str(width), "HEIGHT": str(height), "PROCESSINGREFS": "processing_0"}
    if lines:
        page_attrs["PC"] = _fmt_num(sum(ln.conf for ln in lines) / len(lines))
    page = _sub(layout, "Page", page_attrs)
    space = _sub(page, "PrintSpace", {"HPOS": "0", "VPOS": "0", "WIDTH": str(width), "HEIGHT": str(height)})
    for i, ln in enumerate(lines):
        x0, y0, x1, y1 = ln.box
        geo = {"HPOS": str(x0), "VPOS": str(y0), "WIDTH": str(x1 - x0), "HEIGHT": str(y1 - y0)}
        block = _sub(space, "TextBlock", {"ID": f"block_{i}", **geo, "TAGREFS": _KIND_TAG[ln.kind]})
        tl_attrs = {"ID": f"line_{i}", **geo, "TAGREFS": _KIND_TAG[ln.kind]}
        if ln.baseline:
            tl_attrs["BASELINE"] = " ".join(f"{x},{y}" for x, y in ln.baseline)
        tl = _sub(block, "TextLine", tl_attrs)
        shape = _sub(tl, "Shape")
        _sub(shape, "Polygon", {"POINTS": " ".join(f"{x},{y}" for x, y in ln.outline)})
        if not ln.line.text:  # ALTO needs a String in every line: an empty one spanning the line
            _sub(tl, "String", {"ID": f"string_{i}_0", **geo, "CONTENT": "", "WC": _fmt_num(ln.conf)})
            continue
        # one String per piece between single spaces: an empty String stands for each extra space and
        # each space at a line's ends, so that the text reads back exactly
        words = ln.words
        for j, w in enumerate(words):
            if j:
                prev = words[j - 1]
                _sub(tl, "SP", {"ID": f"sp_{i}_{j}", "HPOS": str(prev.x1), "VPOS": str(y0),
                                "WIDTH": str(max(0, w.x0 - prev.x1))})
            s = _sub(tl, "String", {"ID": f"string_{i}_{j}", "HPOS": str(w.x0), "VPOS": str(y0),
                                    "WIDTH": str(w.x1 - w.x0), "HEIGHT": str(y1 - y0),
                                    "CONTENT": w.text, "WC": _fmt_num(w.conf) if w.text else None})
            for k, g in enumerate(w.glyphs):
                ga = {"ID": f"glyph_{i}_{j}_{k}", "CONTENT": _clean(g.char), "HPOS": str(g.x0), "VPOS": str(y0),
                      "WIDTH": str(g.x1 - g.x0), "HEIGHT": str(y1 - y0)}
                if g.conf is not None:
                    ga["GC"] = _fmt_num(g.conf)
                _sub(s, "Glyph", ga)
    return _xml_bytes(root)


def read_alto(data: bytes) -> PageResult:
    """An ALTO v4 file written by :func:`render` back as a :class:`PageResult` (see the module doc for
    what ALTO cannot carry). ``uri`` is the file name the ALTO names."""
    root = ET.fromstring(data)
    ns = {"a": ALTO_NS}

    def text_of(path: str) -> str:
        el = root.find(path, ns)
        return (el.text or "") if el is not None else ""

    status, error_kind, error = OK, "", ""
    for d in root.findall("a:Description/a:Processing/a:processingStepDescription", ns):
        key, _, value = (d.text or "").partition(": ")
        if key == "status":
            status = value
        elif key == "error_kind":
            error_kind = value
        elif key == "error":
            error = value
    settings = text_of("a:Description/a:Processing/a:processingStepSettings")
    model = settings[len("model: "):] if settings.startswith("model: ") else ""
    tag_kind = {t.get("ID"): t.get("LABEL") for t in root.findall("a:Tags/a:OtherTag", ns)}

    page = root.find("a:Layout/a:Page", ns)
    if page is None:
        raise ValueError("not an ALTO v4 page: no Layout/Page")
    lines = []
    for tl in page.iter(f"{{{ALTO_NS}}}TextLine"):
        kind = HANDWRITTEN
        for ref in (tl.get("TAGREFS") or "").split():
            if tag_kind.get(ref) in KINDS:
                kind = tag_kind[ref]
        x0, y0 = int(float(tl.get("HPOS", 0))), int(float(tl.get("VPOS", 0)))
        x1, y1 = x0 + int(float(tl.get("WIDTH", 0))), y0 + int(float(tl.get("HEIGHT", 0)))
        poly = tl.find("a:Shape/a:Polygon", ns)
        polygon = _parse_points(poly.get("POINTS", "")) if poly is not None else []
        baseline = _parse_points(tl.get("BASELINE", ""))
        words, confs, spaces = [], [], []
        for s in tl.findall("a:String", ns):
            content = s.get("CONTENT", "")
            if words:
                spaces.append(len(confs))  # the space before this word
                confs.append(None)
            words.append(content)
            glyphs = s.findall("a:Glyph", ns)
            gc = [_conf(g.get("GC")) for g in glyphs] if len(glyphs) == len(content) else []
            if not gc or any(c is None for c in gc):
                gc = [_conf(s.get("WC"))] * len(content)
            confs.extend(gc)
        at_space = set(spaces)
        chars = [c for i, c in enumerate(confs) if i not in at_space]
        for i in spaces:  # a space: the lower of the nearest characters' on either side
            left = next((confs[k] for k in range(i - 1, -1, -1) if k not in at_space), None)
            right = next((confs[k] for k in range(i + 1, len(confs)) if k not in at_space), None)
            known = [v for v in (left, right) if v is not None]
            confs[i] = min(known) if known and all(c is not None for c in chars) else None
        char_conf = [float(c) for c in confs] if confs and all(c is not None for c in confs) else []
        conf = sum(char_conf) / len(char_conf) if char_conf else 0.0
        lines.append(TextLine(text=" ".join(words), confidence=conf, char_confidences=char_conf,
                              bbox=[x0, y0, x1, y1], polygon=polygon, baseline=baseline, kind=kind))
    return PageResult(uri=text_of("a:Description/a:sourceImageInformation/a:fileName"),
                      page=int(float(page.get("PHYSICAL_IMG_NR", 1))) - 1, status=status, error_kind=error_kind,
                      error=error, lines=lines, model=model, width=int(float(page.get("WIDTH", 0))),
                      height=int(float(page.get("HEIGHT", 0))))


def _parse_points(s: str) -> list[list[int]]:
    nums = [int(round(float(v))) for v in re.split(r"[\s,]+", s.strip())] if s.strip() else []
    return [[nums[i], nums[i + 1]] for i in range(0, len(nums) - 1, 2)]


# ---------------------------------------------------------------- PAGE-XML


def _page_points(pts: Sequence[Sequence[int]]) -> str:
    return " ".join(f"{x},{y}" for x, y in pts)


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _text_equiv(parent: ET.Element, text: str, conf: float | None) -> None:
    te = _sub(parent, "TextEquiv", {"conf": _fmt_num(conf) if conf is not None else None})
    _sub(te, "Unicode", text=text)


def _pagexml(result: PageResult, image_name: str, created: _dt.datetime) -> bytes:
    lines = _lines(result)
    width, height = _page_size(result, lines)
    root = ET.Element("PcGts", {"xmlns": PAGE_NS, "xmlns:xsi": XSI_NS,
                                "xsi:schemaLocation": f"{PAGE_NS} {PAGE_XSD}"})
    meta = _sub(root, "Metadata")
    _sub(meta, "Creator", text=SOFTWARE)
    stamp = created.astimezone(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    _sub(meta, "Created", text=stamp)
    _sub(meta, "LastChange", text=stamp)
    comments = [f"model: {result.model}", f"status: {result.status}"]
    if result.status == ERROR:
        comments += [f"error_kind: {result.error_kind}", f"error: {result.error}"]
    _sub(meta, "Comments", text="\n".join(comments))

    pattrs = {"imageFilename": image_name, "imageWidth": str(width), "imageHeight": str(height)}
    if abs(float(result.angle)) >= 0.01:
        # PAGE: the clockwise rotation that corrects the skew; result.angle is the counter-clockwise
        # (OpenCV) rotation the reader applied to deskew the page.
        pattrs["orientation"] = _fmt_num(round(-float(result.angle), 3))
    if lines:
        pattrs["conf"] = _fmt_num(sum(ln.conf for ln in lines) / len(lines))
    page = _sub(root, "Page", pattrs)
    if lines:
        ro = _sub(page, "ReadingOrder")
        group = _sub(ro, "OrderedGroup", {"id": "reading_order", "caption": "reading order"})
        for i in range(len(lines)):
            _sub(group, "RegionRefIndexed", {"index": str(i), "regionRef": f"region_{i}"})
    for i, ln in enumerate(lines):
        x0, y0, x1, y1 = ln.box
        custom = f"readingOrder {{index:{i};}} kind {{value:{ln.kind};}}"
        region = _sub(page, "TextRegion", {"id": f"region_{i}", "custom": custom,
                                           "production": PAGE_PRODUCTION[ln.kind]})
        _sub(region, "Coords", {"points": _page_points(ln.outline)})
        tl = _sub(region, "TextLine", {"id": f"line_{i}", "custom": custom, "production": PAGE_PRODUCTION[ln.kind]})
        _sub(tl, "Coords", {"points": _page_points(ln.outline)})
        if ln.baseline:
            _sub(tl, "Baseline", {"points": _page_points(ln.baseline)})
        for j, w in enumerate(ln.words):
            we = _sub(tl, "Word", {"id": f"word_{i}_{j}"})
            _sub(we, "Coords", {"points": _page_points(_rect(w.x0, y0, w.x1, y1))})
            for k, g in enumerate(w.glyphs):
                ge = _sub(we, "Glyph", {"id": f"glyph_{i}_{j}_{k}"})
                _sub(ge, "Coords", {"points": _page_points(_rect(g.x0, y0, g.x1, y1))})
                _text_equiv(ge, g.char, g.conf)
            _text_equiv(we, w.text, w.conf)
        _text_equiv(tl, ln.line.text, ln.conf)
        _text_equiv(region, ln.line.text, ln.conf)
    return _xml_bytes(root)


# ---------------------------------------------------------------- hOCR


def _hocr_quote(s: str) -> str:
    return '"' + _clean(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bbox(x0: int, y0: int, x1: int, y1: int) -> str:
    return f"bbox {x0} {y0} {x1} {y1}"


def _hocr_baseline(ln: _Line) -> str | None:
    """hOCR's baseline: slope and offset of the straight line through the first and last baseline
    points, the offset measured from the bottom-left corner of the line's bbox."""
    if not ln.baseline:
        return None
    (ax, ay), (bx, by) = ln.baseline[0], ln.baseline[-1]
    if bx == ax:
        return None
    slope = (by - ay) / (bx - ax)
    offset = ay + slope * (ln.box[0] - ax) - ln.box[3]
    return f"baseline {slope:.4f} {offset:.2f}".replace("-0.0000", "0.0000")


def _hocr(result: PageResult, image_name: str, created: _dt.datetime) -> bytes:
    lines = _lines(result)
    width, height = _page_size(result, lines)
    html = ET.Element("html", {"xmlns": XHTML_NS, "xml:lang": "en", "lang": "en"})
    head = _sub(html, "head")
    _sub(head, "title", text=image_name)
    _sub(head, "meta", {"http-equiv": "Content-Type", "content": "text/html;charset=utf-8"})
    _sub(head, "meta", {"name": "ocr-system", "content": SOFTWARE})
    _sub(head, "meta", {"name": "ocr-capabilities",
                        "content": "ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf ocrp_poly"})
    _sub(head, "meta", {"name": "ocr-number-of-pages", "content": "1"})  # one file a page; ppageno places it
    _sub(head, "meta", {"name": "htr-ray:model", "content": _clean(result.model)})
    _sub(head, "meta", {"name": "htr-ray:status", "content": result.status})
    if result.status == ERROR:
        _sub(head, "meta", {"name": "htr-ray:error-kind", "content": _clean(result.error_kind)})
        _sub(head, "meta", {"name": "htr-ray:error", "content": _clean(result.error)})
    body = _sub(html, "body")
    pg = _sub(body, "div", {"class": "ocr_page", "id": f"page_{int(result.page) + 1}",
                            "title": f"image {_hocr_quote(image_name)}; {_bbox(0, 0, width, height)}; "
                                     f"ppageno {int(result.page)}"})
    for i, ln in enumerate(lines):
        x0, y0, x1, y1 = ln.box
        area = _sub(pg, "div", {"class": "ocr_carea", "id": f"block_{i}", "title": _bbox(x0, y0, x1, y1)})
        par = _sub(area, "p", {"class": "ocr_par", "id": f"par_{i}", "title": _bbox(x0, y0, x1, y1)})
        props = [_bbox(x0, y0, x1, y1)]
        base = _hocr_baseline(ln)
        if base:
            props.append(base)
        props.append("poly " + " ".join(f"{x} {y}" for x, y in ln.outline))
        props.append(f"x_wconf {round(ln.conf * 100)}")
        props.append(f"x_kind {ln.kind}")
        span = _sub(par, "span", {"class": "ocr_line", "id": f"line_{i}", "title": "; ".join(props)})
        for j, w in enumerate(ln.words):
            wprops = [_bbox(w.x0, y0, w.x1, y1), f"x_wconf {round(w.conf * 100)}"]
            if w.glyphs and all(g.conf is not None for g in w.glyphs):
                wprops.append("x_confs " + " ".join(_fmt_num(round(g.conf * 100, 2)) for g in w.glyphs))
            wprops.append("x_bboxes " + " ".join(f"{g.x0} {y0} {g.x1} {y1}" for g in w.glyphs))
            we = _sub(span, "span", {"class": "ocrx_word", "id": f"word_{i}_{j}", "title": "; ".join(wprops)},
                      text=w.text)
            we.tail = " " if j + 1 < len(ln.words) else None
    doctype = ('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
               '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n')
    return _xml_bytes(html, doctype)


# ---------------------------------------------------------------- the API


_WRITERS = {"alto": _alto, "page": _pagexml, "hocr": _hocr}


# What PAGE-XML's required Created/LastChange hold unless the caller gives a time: the Unix epoch, as
# reproducible builds do (SOURCE_DATE_EPOCH=0), so that one page result always renders to the same bytes:
# in the bulk job and in Serve, in a first run and in a rerun that rewrites a file under the same name.
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def render(result: PageResult, fmt: str, image_name: str | None = None, *,
           created: _dt.datetime | None = None) -> bytes:
    """``result`` as an ALTO v4, PAGE-XML 2019-07-15 or hOCR document (UTF-8 bytes), the same bytes for
    the same result. ``image_name`` is the image file the document refers to (default: the result's URI);
    ``created`` fills PAGE-XML's Created/LastChange (default :data:`EPOCH`; a naive time is taken as UTC)."""
    name = image_name if image_name is not None else (result.uri or "")
    when = created or EPOCH
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return _WRITERS[_check(fmt)](result, _clean(name), when)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def page_file_name(uri: str, page: int, fmt: str) -> str:
    """The output file name of one page of one input: a readable stem from the input's name, a short hash
    of the whole URI (so inputs with the same name in different folders or buckets do not collide), the
    0-based page number and the format's extension: ``s3://archive/cheques/scan_07.png``, page 0, ALTO ->
    ``scan_07-f778ce0896-p0000.alto.xml``."""
    ext = EXTENSIONS[_check(fmt)]
    tail = (uri or "").split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = tail.rsplit(".", 1)[0] if "." in tail.lstrip(".") else tail
    stem = _UNSAFE.sub("_", stem).strip("._-")[:60] or "page"
    digest = hashlib.sha1((uri or "").encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}-p{int(page):04d}{ext}"
