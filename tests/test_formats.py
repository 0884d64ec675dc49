"""ALTO v4, PAGE-XML 2019-07-15 and hOCR written from PageResult, validated against the official schemas.

The schemas come from registry wheels (never written here): ALTO 4.4 from ``htrflow`` (its
serialization/schemas), PAGE 2019-07-15 and the Library of Congress xlink schema that ALTO imports from
``ocrd-validators``, and XHTML 1.0 Strict (for hOCR) from ``xmlschema`` itself. scripts/setup installs the
first two with ``--no-deps`` (only their .xsd files are read). Validation never touches the network:
remote schema locations are blocked (``allow="local"``) and xlink is pointed at the local copy. hOCR has
no XSD: besides XHTML it passes ``hocr-spec``, the validator of the hOCR spec's editor, and a parse of
every property used.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from htr_ray.pages.formats import (ALTO_NS, EXTENSIONS, FORMATS, MEDIA_TYPES, PAGE_NS, XHTML_NS, page_file_name,
                                   read_alto, render)
from htr_ray.pages.results import PageResult, TextLine

XLINK_NS = "http://www.w3.org/1999/xlink"
A = {"a": ALTO_NS}
P = {"p": PAGE_NS}
H = {"h": XHTML_NS}


def _schema_file(dist: str, path: str) -> str:
    try:
        f = Path(str(importlib.metadata.distribution(dist).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        f = None
    if f is None or not f.is_file():
        pytest.fail(f"the official schema {path} ships in the {dist} wheel: run scripts/setup "
                    f"(it installs {dist} with --no-deps)")
    return str(f)


@pytest.fixture(scope="module")
def schemas() -> dict[str, xmlschema.XMLSchema]:
    xlink = _schema_file("ocrd-validators", "ocrd_validators/xlink.xsd")
    alto = xmlschema.XMLSchema(_schema_file("htrflow", "htrflow/serialization/schemas/alto-4-4.xsd"),
                               allow="local", locations={XLINK_NS: xlink})
    page = xmlschema.XMLSchema(_schema_file("ocrd-validators", "ocrd_validators/page.xsd"), allow="local")
    xhtml = xmlschema.XMLSchema(str(Path(xmlschema.__file__).parent / "schemas/XHTML/xhtml1-strict.xsd"),
                                allow="local")
    assert alto.target_namespace == ALTO_NS and page.target_namespace == PAGE_NS
    assert xhtml.target_namespace == XHTML_NS
    return {"alto": alto, "page": page, "hocr": xhtml}


def _errors(schema: xmlschema.XMLSchema, data: bytes) -> list[str]:
    return [str(e).splitlines()[0] for e in schema.iter_errors(data.decode("utf-8"))]


TRICKY = 'a<b & "c" \'d\' € × ÷ ]]> 𝔘 e\u0301'


def _line(text: str, x0: int, y0: int, x1: int, y1: int, kind: str = "handwritten", char_x: bool = True,
          polygon: bool = True, baseline: bool = True) -> TextLine:
    n = len(text)
    confs = [round(0.5 + 0.5 * ((i * 37) % 11) / 10, 3) for i in range(n)]
    step = (x1 - x0) / max(n, 1)
    return TextLine(
        text=text, confidence=0.87, char_confidences=confs, bbox=[x0, y0, x1, y1],
        polygon=[[x0, y0 + 2], [x1, y0], [x1, y1], [x0, y1 - 1]] if polygon else [],
        baseline=[[x0, y1 - 8], [(x0 + x1) // 2, y1 - 7], [x1, y1 - 6]] if baseline else [],
        kind=kind, char_x=[int(x0 + step * (i + 0.5)) for i in range(n)] if char_x else [])


def sample_page() -> PageResult:
    return PageResult(
        uri="s3://archive/cheques/2026/scan 07.png", page=1, pages=3, width=1700, height=2200, angle=1.25,
        model="models/iam_line_v3", lines=[
            _line("PAY TO THE ORDER OF", 60, 300, 420, 340, kind="printed"),
            _line("D. McKenzie", 450, 290, 900, 350),
            _line("DATE", 1200, 120, 1300, 150, kind="printed", baseline=False),
            _line("12/03/2026", 1320, 100, 1650, 160, char_x=False),
            _line(TRICKY, 60, 500, 1500, 580, polygon=False),
        ])


def _pages() -> dict[str, PageResult]:
    return {
        "mixed": sample_page(),
        "error": PageResult.failed("s3://archive/broken.tif", "decode", 'cannot identify image <file> & "x"'),
        "empty": PageResult(uri="blank.png", width=1000, height=1400),
        "tricky": PageResult(uri='dir/we"ird & <name>.png', width=800, height=300, lines=[
            _line(TRICKY, 10, 10, 790, 90), _line("", 10, 100, 400, 160),  # a line read as nothing
            _line("  two  spaces ", 10, 170, 790, 250)]),
        "unknown_size": PageResult(uri="x.png", lines=[_line("no size given", 5, 5, 300, 40, char_x=False)]),
        "control_chars": PageResult(uri="c.png", width=200, height=60,
                                    lines=[TextLine("a\x0cb\x00c", 0.5, bbox=[0, 0, 200, 60])]),
    }


@pytest.mark.parametrize("name", sorted(_pages()))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_validates_against_its_official_schema(schemas, fmt, name):
    data = render(_pages()[name], fmt)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert _errors(schemas[fmt], data) == []


def test_the_validators_reject_what_the_schemas_forbid(schemas):
    """Guards the guard: each schema is really applied (a wrong namespace or a lax mode would pass all)."""
    alto = render(sample_page(), "alto").decode()
    bad_alto = alto.replace('CONTENT="D" ', 'CONTENT="DX" ', 1)  # a Glyph holds exactly one character
    assert bad_alto != alto and _errors(schemas["alto"], bad_alto.encode())
    assert _errors(schemas["alto"], re.sub(r' WC="[^"]*"', ' WC="1.5"', alto, count=1).encode())
    page = render(sample_page(), "page").decode()
    assert _errors(schemas["page"], re.sub(r' imageWidth="\d+"', "", page).encode())
    assert _errors(schemas["page"], page.replace('production="printed"', 'production="typed"', 1).encode())
    hocr = render(sample_page(), "hocr").decode()
    assert _errors(schemas["hocr"], re.sub(r"<title>.*?</title>", "", hocr).encode())  # head needs a title
    aligned = hocr.replace('<span class="ocr_line"', '<span align="left" class="ocr_line"', 1)  # not in Strict
    assert _errors(schemas["hocr"], aligned.encode())


def test_the_same_result_renders_to_the_same_bytes(schemas):
    """Bulk job and Serve, first run and rerun: one page result, one file. Only a time the caller gives
    changes PAGE-XML's Created/LastChange."""
    for fmt in FORMATS:
        assert render(sample_page(), fmt) == render(PageResult.from_row(sample_page().to_row()), fmt)
    when = _dt.datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=_dt.timezone(_dt.timedelta(hours=1)))
    data = render(sample_page(), "page", created=when)
    meta = ET.fromstring(data).find("p:Metadata", P)
    assert [meta.findtext(f"p:{k}", namespaces=P) for k in ("Created", "LastChange")] == ["2026-11-30T22:59:58Z"] * 2
    assert _errors(schemas["page"], data) == []
    assert ET.fromstring(render(sample_page(), "page")).findtext("p:Metadata/p:Created", namespaces=P) == \
        "1970-01-01T00:00:00Z"


def test_media_types_and_extensions_cover_every_format():
    assert set(MEDIA_TYPES) == set(EXTENSIONS) == set(FORMATS) == {"alto", "page", "hocr"}
    assert len(set(MEDIA_TYPES.values())) == 3
    with pytest.raises(ValueError, match="unknown output format"):
        render(sample_page(), "pdf")
    assert render(sample_page(), " ALTO ") == render(sample_page(), "alto")


def _expected_words(ln: TextLine) -> list[tuple[str, int, int, list[float]]]:
    """(word, start, end, char confidences) of the line's text split on spaces."""
    return [(m.group(), m.start(), m.end(), ln.char_confidences[m.start():m.end()])
            for m in re.finditer(r"\S+", ln.text)]


def test_alto_holds_lines_words_glyphs_kinds_and_reading_order():
    page = sample_page()
    root = ET.fromstring(render(page, "alto", image_name="scan 07.png"))
    assert root.get("SCHEMAVERSION") == "4.4"
    assert root.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=A) == "scan 07.png"
    p = root.find("a:Layout/a:Page", A)
    assert (p.get("WIDTH"), p.get("HEIGHT"), p.get("PHYSICAL_IMG_NR")) == ("1700", "2200", "2")
    tags = {t.get("ID"): t.get("LABEL") for t in root.findall("a:Tags/a:OtherTag", A)}
    blocks = p.findall("a:PrintSpace/a:TextBlock", A)
    refs = [e.get("REF") for e in root.findall("a:ReadingOrder/a:OrderedGroup/a:ElementRef", A)]
    assert refs == [b.get("ID") for b in blocks] and len(blocks) == len(page.lines)
    for block, ln in zip(blocks, page.lines):
        tl = block.find("a:TextLine", A)
        x0, y0, x1, y1 = ln.bbox
        assert [int(tl.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == [x0, y0, x1 - x0, y1 - y0]
        assert tags[tl.get("TAGREFS")] == ln.kind
        poly = tl.find("a:Shape/a:Polygon", A).get("POINTS")
        assert poly == " ".join(f"{x},{y}" for x, y in (ln.polygon or [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        assert tl.get("BASELINE") == (" ".join(f"{x},{y}" for x, y in ln.baseline) if ln.baseline else None)
        strings = tl.findall("a:String", A)
        assert len(tl.findall("a:SP", A)) == len(strings) - 1
        expected = _expected_words(ln)
        assert [s.get("CONTENT") for s in strings] == [w for w, *_ in expected]
        for s, (word, start, end, confs) in zip(strings, expected):
            assert float(s.get("WC")) == pytest.approx(sum(confs) / len(confs), abs=1e-4)
            glyphs = s.findall("a:Glyph", A)
            assert "".join(g.get("CONTENT") for g in glyphs) == word
            assert [float(g.get("GC")) for g in glyphs] == pytest.approx(confs, abs=1e-4)
            hpos = [int(g.get("HPOS")) for g in glyphs]
            assert hpos == sorted(hpos) and x0 <= int(s.get("HPOS")) and int(s.get("HPOS")) + int(s.get("WIDTH")) <= x1
            if ln.char_x:  # a word starts halfway between its first character and the one before
                before = ln.char_x[start - 1] if start else x0
                assert int(s.get("HPOS")) == pytest.approx((before + ln.char_x[start]) / 2 if start else x0, abs=1)


def test_word_geometry_without_char_x_is_proportional_to_character_counts():
    ln = TextLine("ab cdef", 0.9, bbox=[100, 0, 170, 20])  # 7 characters over 70 px
    root = ET.fromstring(render(PageResult(uri="u", width=200, height=20, lines=[ln]), "alto"))
    got = [(s.get("CONTENT"), int(s.get("HPOS")), int(s.get("WIDTH"))) for s in root.iter(f"{{{ALTO_NS}}}String")]
    assert got == [("ab", 100, 20), ("cdef", 130, 40)]
    # no per-character confidences: words carry the line's, glyphs none
    assert [s.get("WC") for s in root.iter(f"{{{ALTO_NS}}}String")] == ["0.9", "0.9"]
    assert all(g.get("GC") is None for g in root.iter(f"{{{ALTO_NS}}}Glyph"))


def test_page_xml_holds_regions_lines_words_glyphs_kinds_and_reading_order():
    page = sample_page()
    root = ET.fromstring(render(page, "page"))
    pg = root.find("p:Page", P)
    assert (pg.get("imageFilename"), pg.get("imageWidth"), pg.get("imageHeight")) == (page.uri, "1700", "2200")
    assert float(pg.get("orientation")) == pytest.approx(-page.angle)
    assert "model: models/iam_line_v3" in root.findtext("p:Metadata/p:Comments", namespaces=P)
    regions = pg.findall("p:TextRegion", P)
    order = pg.findall("p:ReadingOrder/p:OrderedGroup/p:RegionRefIndexed", P)
    assert [(int(o.get("index")), o.get("regionRef")) for o in order] == [
        (i, r.get("id")) for i, r in enumerate(regions)]
    for region, ln in zip(regions, page.lines):
        tl = region.find("p:TextLine", P)
        assert tl.get("production") == ("printed" if ln.kind == "printed" else "handwritten-cursive")
        assert f"kind {{value:{ln.kind};}}" in tl.get("custom")
        assert tl.findtext("p:TextEquiv/p:Unicode", namespaces=P) == ln.text
        assert float(tl.find("p:TextEquiv", P).get("conf")) == pytest.approx(ln.confidence)
        base = tl.find("p:Baseline", P)
        assert (base.get("points") if base is not None else None) == (
            " ".join(f"{x},{y}" for x, y in ln.baseline) if ln.baseline else None)
        words = tl.findall("p:Word", P)
        expected = _expected_words(ln)
        assert [w.findtext("p:TextEquiv/p:Unicode", namespaces=P) for w in words] == [w for w, *_ in expected]
        for w, (word, _, _, confs) in zip(words, expected):
            glyphs = w.findall("p:Glyph", P)
            assert [g.findtext("p:TextEquiv/p:Unicode", namespaces=P) for g in glyphs] == list(word)
            assert [float(g.find("p:TextEquiv", P).get("conf")) for g in glyphs] == pytest.approx(confs, abs=1e-4)
            assert float(w.find("p:TextEquiv", P).get("conf")) == pytest.approx(sum(confs) / len(confs), abs=1e-4)


_PROP = re.compile(r'\s*([a-z_]+)((?:\s+(?:"(?:[^"\\]|\\.)*"|[^;"\s]+))*)\s*(?:;|$)')


def hocr_properties(title: str) -> dict[str, list[str]]:
    """hOCR's title grammar: 'name value value; name "quoted"; ...'."""
    props, pos = {}, 0
    while pos < len(title):
        m = _PROP.match(title, pos)
        assert m and m.end() > pos, f"unparseable hOCR title at {title[pos:]!r}"
        props[m.group(1)] = re.findall(r'"(?:[^"\\]|\\.)*"|[^\s"]+', m.group(2))
        pos = m.end()
    return props


def test_hocr_is_well_formed_and_its_properties_parse():
    page = sample_page()
    root = ET.fromstring(render(page, "hocr"))  # raises unless well-formed
    assert root.tag == f"{{{XHTML_NS}}}html"
    metas = {m.get("name"): m.get("content") for m in root.iter(f"{{{XHTML_NS}}}meta") if m.get("name")}
    assert metas["ocr-system"] == "htr-ray" and "ocrx_word" in metas["ocr-capabilities"]
    pg = root.find("h:body/h:div", H)
    props = hocr_properties(pg.get("title"))
    assert props["bbox"] == ["0", "0", "1700", "2200"] and props["ppageno"] == ["1"]
    assert props["image"] == ['"s3://archive/cheques/2026/scan 07.png"']
    lines = [e for e in root.iter() if e.get("class") == "ocr_line"]
    assert len(lines) == len(page.lines)
    for el, ln in zip(lines, page.lines):
        p = hocr_properties(el.get("title"))
        assert [int(v) for v in p["bbox"]] == ln.bbox
        assert p["x_kind"] == [ln.kind]
        assert 0 <= int(p["x_wconf"][0]) <= 100
        if ln.polygon:
            assert [int(v) for v in p["poly"]] == [c for pt in ln.polygon for c in pt]
        if ln.baseline:  # slope and offset from the bottom-left corner reproduce the baseline's ends
            slope, offset = (float(v) for v in p["baseline"])
            (ax, ay), (bx, by) = ln.baseline[0], ln.baseline[-1]
            assert ln.bbox[3] + offset + slope * (ax - ln.bbox[0]) == pytest.approx(ay, abs=0.05)
            assert ln.bbox[3] + offset + slope * (bx - ln.bbox[0]) == pytest.approx(by, abs=0.05)
        else:
            assert "baseline" not in p
        words = [w for w in el if w.get("class") == "ocrx_word"]
        assert " ".join(w.text for w in words) == " ".join(ln.text.split())
        for w, (word, _, _, confs) in zip(words, _expected_words(ln)):
            wp = hocr_properties(w.get("title"))
            assert int(wp["x_wconf"][0]) == round(100 * sum(confs) / len(confs))
            assert [float(v) for v in wp["x_confs"]] == pytest.approx([100 * c for c in confs], abs=0.01)
            assert len(wp["x_bboxes"]) == 4 * len(word)
            x0, y0, x1, y1 = (int(v) for v in wp["bbox"])
            assert ln.bbox[0] <= x0 <= x1 <= ln.bbox[2] and (y0, y1) == (ln.bbox[1], ln.bbox[3])


def _hocr_spec_errors(doc: bytes, tmp_path: Path) -> list[str]:
    from hocr_spec import HocrValidator  # the reference validator of the hOCR spec's editor

    f = tmp_path / "page.hocr.html"
    f.write_bytes(doc)
    report = HocrValidator("standard").validate(str(f))
    return [str(i) for i in report.items if i.level in ("ERROR", "FATAL")]


@pytest.mark.parametrize("name", sorted(_pages()))
def test_hocr_passes_the_hocr_spec_validator(tmp_path, name):
    """Classes, nesting, metadata and every property's type and range, as hocr-spec checks them. It knows
    only the properties the spec lists; ``x_kind`` is ours (engine-specific, as hOCR's x_ prefix allows),
    so it is the one thing taken out before, and the one thing it finds otherwise."""
    doc = render(_pages()[name], "hocr")
    assert _hocr_spec_errors(re.sub(rb"; x_kind \w+", b"", doc), tmp_path) == []
    assert all("x_kind" in e for e in _hocr_spec_errors(doc, tmp_path))
    bad = re.sub(rb"; x_kind \w+", b"", re.sub(rb"x_wconf \d+", b"x_wconf 150", doc))
    assert bad == re.sub(rb"; x_kind \w+", b"", doc) or _hocr_spec_errors(bad, tmp_path)


def test_tricky_text_comes_back_exactly_from_every_format():
    page = _pages()["tricky"]
    alto = ET.fromstring(render(page, "alto"))
    assert [s.get("CONTENT") for s in alto.iter(f"{{{ALTO_NS}}}String")][:len(TRICKY.split())] == TRICKY.split()
    assert alto.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=A) == page.uri
    pagexml = ET.fromstring(render(page, "page"))
    assert [tl.findtext("p:TextEquiv/p:Unicode", namespaces=P)
            for tl in pagexml.iter(f"{{{PAGE_NS}}}TextLine")] == [ln.text for ln in page.lines]
    assert pagexml.find("p:Page", P).get("imageFilename") == page.uri
    hocr = ET.fromstring(render(page, "hocr"))
    first = next(e for e in hocr.iter() if e.get("class") == "ocr_line")
    assert [w.text for w in first] == TRICKY.split()
    assert hocr_properties(hocr.find("h:body/h:div", H).get("title"))["image"] == [r'"dir/we\"ird & <name>.png"']
    # what XML cannot carry (form feed, NUL) becomes U+FFFD instead of a broken file
    assert read_alto(render(_pages()["control_chars"], "alto")).lines[0].text == "a\ufffdb\ufffdc"


def test_an_error_page_keeps_its_error_and_has_no_lines():
    page = _pages()["error"]
    back = read_alto(render(page, "alto"))
    assert (back.status, back.error_kind, back.error, back.lines) == ("error", "decode", page.error, [])
    pagexml = ET.fromstring(render(page, "page"))
    assert pagexml.find("p:Page/p:TextRegion", P) is None
    assert "error_kind: decode" in pagexml.findtext("p:Metadata/p:Comments", namespaces=P)
    hocr = ET.fromstring(render(page, "hocr"))
    metas = {m.get("name"): m.get("content") for m in hocr.iter(f"{{{XHTML_NS}}}meta") if m.get("name")}
    assert [metas[f"htr-ray:{k}"] for k in ("status", "error-kind", "error")] == ["error", "decode", page.error]
    assert not [e for e in hocr.iter() if e.get("class") == "ocr_line"]


def test_alto_round_trip_gives_back_the_page():
    page = sample_page()
    back = read_alto(render(page, "alto"))
    assert back.text == page.text and back.text
    assert (back.uri, back.page, back.model, back.status) == (page.uri, page.page, page.model, "ok")
    assert (back.width, back.height) == (page.width, page.height)
    assert len(back.lines) == len(page.lines)
    for b, ln in zip(back.lines, page.lines):
        assert (b.text, b.kind, b.bbox, b.baseline) == (ln.text, ln.kind, ln.bbox, ln.baseline)
        x0, y0, x1, y1 = ln.bbox
        assert b.polygon == (ln.polygon or [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        assert len(b.char_confidences) == len(ln.text)
        for i, ch in enumerate(ln.text):  # characters exactly; a space has no place in ALTO
            if ch != " ":
                assert b.char_confidences[i] == pytest.approx(ln.char_confidences[i], abs=1e-4)
            else:
                assert b.char_confidences[i] == pytest.approx(
                    min(ln.char_confidences[i - 1], ln.char_confidences[i + 1]), abs=1e-4)
    # the empty line, runs of spaces and spaces at the ends (empty Strings stand for them), the empty page
    tricky_page = _pages()["tricky"]
    alto = render(tricky_page, "alto")
    tricky = read_alto(alto)
    assert [ln.text for ln in tricky.lines] == [TRICKY, "", "  two  spaces "]
    strings = ET.fromstring(alto).findall("a:Layout/a:Page/a:PrintSpace/a:TextBlock/a:TextLine", A)[2]
    assert [s.get("CONTENT") for s in strings.findall("a:String", A)] == ["", "", "two", "", "spaces", ""]
    confs = tricky_page.lines[2].char_confidences
    assert tricky.lines[2].char_confidences[2:5] == pytest.approx(confs[2:5], abs=1e-4)
    assert tricky.lines[2].char_confidences[0] == pytest.approx(confs[2], abs=1e-4)  # nearest character
    assert tricky.lines[2].char_confidences[6] == pytest.approx(min(confs[4], confs[7]), abs=1e-4)
    empty = read_alto(render(_pages()["empty"], "alto"))
    assert (empty.lines, empty.text, empty.status, empty.width) == ([], "", "ok", 1000)


def test_read_alto_takes_a_file_without_confidences_or_glyphs():
    alto = render(sample_page(), "alto").decode()
    bare = re.sub(r'<Glyph [^>]*/>', "", re.sub(r' (WC|GC)="[^"]*"', "", alto))
    assert "<Glyph" not in bare and " WC=" not in bare
    back = read_alto(bare.encode())
    assert back.text == sample_page().text
    assert all(ln.char_confidences == [] and ln.confidence == 0.0 for ln in back.lines)


def test_page_size_falls_back_to_the_extent_of_the_lines():
    root = ET.fromstring(render(_pages()["unknown_size"], "alto"))
    p = root.find("a:Layout/a:Page", A)
    assert (p.get("WIDTH"), p.get("HEIGHT")) == ("300", "40")


def test_page_file_names_are_deterministic_safe_and_unique():
    uri = "s3://archive/cheques/2026/scan 07 (final).png"
    # pinned: a rerun of the bulk job must find the files of an earlier run under the same names
    assert page_file_name("s3://archive/cheques/scan_07.png", 0, "alto") == "scan_07-f778ce0896-p0000.alto.xml"
    name = page_file_name(uri, 0, "alto")
    assert name == page_file_name(uri, 0, "alto")
    assert re.fullmatch(r"scan_07_final-[0-9a-f]{10}-p0000\.alto\.xml", name), name
    same_name = (uri, "s3://other/cheques/2026/scan 07 (final).png", "scan 07 (final).png")
    names = {page_file_name(u, p, f) for u in same_name for p in (0, 1, 12) for f in FORMATS}
    assert len(names) == 27
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) and not n.startswith(".") for n in names)
    assert {n[-9:] for n in names} >= {".alto.xml", ".page.xml", "hocr.html"}
    assert page_file_name("s3://b/", 0, "hocr").startswith("b-")
    assert page_file_name("", 0, "page").startswith("page-")
    assert page_file_name("a/" + "x" * 300 + ".tif", 0, "page").startswith("x" * 60 + "-")
    with pytest.raises(ValueError):
        page_file_name(uri, 0, "txt")
