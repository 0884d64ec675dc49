"""Synthetic handwriting: determinism, ground truth that matches the pixels, font split, text sources.

No Ray here (tests/test_make_dataset.py runs the Ray job); everything renders for real.
"""

from __future__ import annotations

import re
from fractions import Fraction

import cv2
import numpy as np
import pytest

from htr_ray.io import images
from htr_ray.data.synth import fonts, pages, preview, render, samples, strokes, texts


# ------------------------------------------------------------------------------------------- fonts


def test_registry_has_latin_and_cjk_hands_on_both_sides_of_the_split():
    reg = fonts.registry()
    test = reg.test_families()
    train_latin, test_latin = reg.families_for("train", "latin"), reg.families_for("test", "latin")
    train_cjk, test_cjk = reg.families_for("train", "cjk"), reg.families_for("test", "cjk")
    assert train_latin and test_latin and train_cjk and test_cjk
    assert not set(train_latin) & set(test_latin) and not set(train_cjk) & set(test_cjk)
    assert set(test_latin) | set(test_cjk) == test
    # deterministic: recomputing from the same faces gives the same split; it is by family, never by file
    assert fonts.split_families(reg.faces) == test
    for fam in {f.family for f in reg.faces}:
        sides = {fam in fonts.split_families([f for f in reg.faces if f.family == fam] + [g for g in reg.faces if g.family != fam])}
        assert len(sides) == 1


def test_split_keeps_one_family_per_script_on_each_side():
    faces = [fonts.FontFace(f"fam{i}", f"/x/{i}.ttf", ("latin",), "pkg") for i in range(6)]
    faces += [fonts.FontFace("onlycjk1", "/x/c1.ttf", ("cjk",), "pkg"), fonts.FontFace("onlycjk2", "/x/c2.ttf", ("cjk",), "pkg")]
    test = fonts.split_families(faces, test_percent=0)  # nothing hashes below 0: the fix-up must still reserve some
    assert any(f.startswith("fam") for f in test) and any(f.startswith("onlycjk") for f in test)
    test_all = fonts.split_families(faces, test_percent=100)  # everything would be test: train must keep one
    assert any(f.startswith("fam") and f not in test_all for f in (x.family for x in faces))


def test_coverage_reads_the_fonts():
    reg = fonts.registry()
    latin_only = [f for f in reg.faces if f.scripts == ("latin",)]
    cjk = [f for f in reg.faces if "cjk" in f.scripts]
    for f in latin_only:
        assert {"a", "Z", "7"} <= fonts.coverage(f.path, "aZ7")
        assert "中" not in fonts.coverage(f.path, "中")
    for f in cjk:
        assert "中" in fonts.coverage(f.path, "中文")
    assert "\U0010FFFD" not in fonts.coverage(cjk[0].path, "\U0010FFFD")


# ------------------------------------------------------------------------------------------- texts


def test_amounts_in_words_and_figures():
    assert texts.amount_in_words(123456) == "One thousand two hundred thirty-four and 56/100"
    assert texts.amount_in_words(100) == "One and 00/100"
    assert texts.amount_in_words(2_000_000_05) == "Two million and 05/100"
    assert texts.int_to_words(90_019) == "ninety thousand nineteen"
    assert texts.amount_in_figures(123456, 0) == "$1,234.56"
    assert texts.amount_in_figures(123456, 2) == "1 234,56"
    assert texts.amount_in_figures(123456, 3) == "1.234,56"


def _check_equation(line: str) -> None:
    body = re.sub(r"^\d+\. |^[a-f]\) ", "", line)
    if ", x = " in body:
        lhs, x = body.split(", x = ")
        m = re.fullmatch(r"(\d+)x \+ (\d+) = (\d+)", lhs)
        c, k, r = map(int, m.groups())
        assert c * int(x) + k == r, line
        return
    m = re.fullmatch(r"(\S+) (\S) (\S+) = (\S+)", body)
    assert m, line
    a, op, b, r = m.groups()
    fa, fb, fr = Fraction(a), Fraction(b), Fraction(r)
    want = {"+": fa + fb, "-": fa - fb, "x": fa * fb, "×": fa * fb, "*": fa * fb, "÷": None, "/": None, ":": None}[op]
    if want is None:
        want = fa / fb
    assert abs(want - fr) < Fraction(1, 1000), line


def test_homework_arithmetic_has_correct_answers():
    rng = np.random.default_rng(1)
    for _ in range(400):
        _check_equation(texts.arithmetic(rng))


def test_prescriptions_use_real_drug_names_and_cheque_words_match_figures():
    rng = np.random.default_rng(2)
    names = {n.lower() for n in texts.DRUGS}
    for _ in range(100):
        line = texts.drug_line(rng)
        assert any(line.lower().startswith(n + " ") for n in names), line
        f = texts.cheque_fields(rng)
        cents = int(re.sub(r"[^\d]", "", f["amount"]))
        assert f["words"].lower().startswith(texts.int_to_words(cents // 100).split()[0]), f
        assert f"{cents % 100:02d}/100" in f["words"], f


def test_generic_lines_vary_and_part_follow_lob_tokenisation():
    rng = np.random.default_rng(3)
    lines = [texts.line_text("generic", rng) for _ in range(300)]
    assert len(set(lines)) > 280
    assert sum(bool(re.search(r" [.,;:?!]( |$)", s)) for s in lines) > 20  # "Mr . Foot", "support , a"
    assert all(s == " ".join(s.split()) and s for s in lines)
    assert len({c for s in lines for c in s}) > 60


def test_iam_text_and_strokes_come_from_train_forms_only():
    lines = texts.iam_train_lines()
    if not lines:
        pytest.skip("IAM-OnDB data absent")
    assert all(texts.iam_form_split(lid) == "train" for lid, _ in lines)
    d = strokes.load()
    for split, pool in d["split"].items():
        assert all(texts.iam_form_split(d["ids"][i]) == split for i in pool[:500])
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        s = strokes.render_random(rng, split)
        assert texts.iam_form_split(s.meta["line_id"]) == split


# ------------------------------------------------------------------------------------------- lines


def _png(img: np.ndarray) -> bytes:
    return images.encode_png(img)


def test_lines_are_deterministic_per_seed_and_index():
    a = render.LineGenerator(seed=5, split="train", strokes_fraction=0.3)
    b = render.LineGenerator(seed=5, split="train", strokes_fraction=0.3)
    for i in (0, 7, 31, 32):
        ia, ta = a.sample(i)
        ib, tb = b.sample(i)
        assert ta == tb and _png(ia) == _png(ib)
    assert _png(a.sample(1)[0]) != _png(a.sample(2)[0])
    assert _png(render.LineGenerator(seed=6).sample(0)[0]) != _png(a.sample(0)[0])


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_glyph_is_inside_the_line_image(split):
    gen = render.LineGenerator(seed=11, split=split)
    domains, pens = set(), set()
    for i in range(60):
        s = gen.sample_full(i)
        domains.add(s.domain)
        pens.add(s.meta["pen"])
        h, w = s.image.shape
        assert s.text and s.image.dtype == np.uint8
        a = s.ink.alpha
        assert a.shape == (h, w)
        # no ink on the border: nothing was cut off by any transform or crop
        assert max(a[0].max(), a[-1].max(), a[:, 0].max(), a[:, -1].max()) < 0.05, (i, s.text)
        # one box per drawn character, each inside the image and holding ink
        drawn = [c for c in s.text if not c.isspace()]
        assert len(s.ink.boxes) == len(drawn) and s.ink.chars == drawn, (i, s.text)
        for x0, y0, x1, y1 in s.ink.boxes:
            assert -1 <= x0 < x1 <= w + 1 and -1 <= y0 < y1 <= h + 1, (i, s.text, (x0, y0, x1, y1), (w, h))
            box = a[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))]
            assert box.size and box.max() > 0.3, (i, s.text, (x0, y0, x1, y1))
        # together the glyph boxes cover (almost) all of the ink
        covered = np.zeros(a.shape, bool)
        for x0, y0, x1, y1 in s.ink.boxes:
            covered[max(0, int(y0) - 1):int(np.ceil(y1)) + 1, max(0, int(x0) - 1):int(np.ceil(x1)) + 1] = True
        assert a[~covered].sum() < 0.02 * a.sum(), (i, s.text)
        # and the font really has every glyph (no "missing glyph" boxes drawn as text)
        path = next(f.path for f in fonts.registry().faces if f.name == s.font)
        assert set(drawn) <= fonts.coverage(path, set(drawn)), (s.font, s.text)
        # the ink shows in the image: dark where the ink is, against the paper
        ink = a > 0.6
        assert ink.any() and np.median(s.image[ink]) < np.median(s.image[a < 0.01]) - 40, (i, s.text)
    assert domains == set(render.DEFAULT_WEIGHTS)
    assert pens and 0 in pens and len(pens) > 1  # filled outlines and pen traces both checked


def test_test_split_lines_and_pages_use_only_test_fonts():
    reg = fonts.registry()
    test = reg.test_families()
    for split in ("train", "val", "test"):
        gen = render.LineGenerator(seed=2, split=split)
        fams = {gen.sample_full(i).font.split("/")[0] for i in range(25)}
        assert (fams <= test) if split == "test" else not (fams & test), (split, fams)
        pg = pages.PageGenerator(seed=2, split=split)
        pfams = {pg.sample(i).font.split("/")[0] for i in range(2)}
        assert (pfams <= test) if split == "test" else not (pfams & test), (split, pfams)


def test_stroke_lines_keep_their_ink_inside():
    if strokes.load() is None:
        pytest.skip("IAM-OnDB strokes absent")
    rng = np.random.default_rng(4)
    for _ in range(10):
        s = strokes.render_random(rng, "train")
        a = s.ink.alpha
        assert a.shape == s.image.shape
        assert max(a[0].max(), a[-1].max(), a[:, 0].max(), a[:, -1].max()) < 0.05
        assert s.text


# ------------------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("domain", pages.PAGE_DOMAINS)
def test_pages_boxes_match_the_handwritten_lines(domain):
    gen = pages.PageGenerator(seed=9, split="train", domains=[domain])
    for i in range(3):
        p = gen.sample(i)
        h, w = p.image.shape
        assert 1200 <= max(h, w) <= 1700
        assert p.lines and len(p.lines) == len(p.text.split("\n"))
        boxes = [ln["bbox"] for ln in p.lines]
        for ln in p.lines:
            x0, y0, x1, y1 = ln["bbox"]
            assert ln["text"] and ln["text"] == ln["text"].strip()
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (domain, ln)
            crop = p.image[y0:y1, x0:x1]
            assert crop.min() < np.percentile(p.image, 50) - 60, (domain, ln)  # the box holds ink
        # handwritten lines do not sit on top of each other
        for k, a in enumerate(boxes):
            for b in boxes[k + 1:]:
                ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
                iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
                smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                assert ix * iy < 0.3 * smaller, (domain, a, b)


def test_pages_are_deterministic_and_plain_function_matches():
    g1, l1 = pages.render_page("prescription", seed=4, index=2)
    g2, l2 = pages.render_page("prescription", seed=4, index=2)
    assert _png(g1) == _png(g2) and l1 == l2
    g3, _ = pages.render_page("prescription", seed=4, index=3)
    assert _png(g1) != _png(g3)


def test_page_ink_outside_boxes_is_printed_not_handwritten():
    """Erase every box: what stays must be far less ink than inside (the boxes capture the writing)."""
    gen = pages.PageGenerator(seed=1, split="train", domains=["homework"])
    p = gen.sample(0)
    dark = p.image < 110
    inside = np.zeros_like(dark)
    for ln in p.lines:
        x0, y0, x1, y1 = ln["bbox"]
        inside[y0:y1, x0:x1] = True
    assert dark[inside].sum() > 0.5 * dark.sum()


# ------------------------------------------------------------------------------------- rows, preview


def test_sample_rows_and_local_task(tmp_path):
    from htr_ray.io import shards

    maker = samples.SampleMaker("lines", seed=3, domains=["cheque", "hanzi"])
    r = samples.make_task(maker, 7, 0, 30, str(tmp_path))
    assert sum(r["written"].values()) + len(r["errors"]) == 30 and not r["errors"]
    rows = list(shards.iter_rows(str(tmp_path)))
    assert len(rows) == 30 and {row["domain"] for row in rows} <= {"cheque", "hanzi"}
    for row in rows:
        assert row["split"] == samples.split_of(3, int(row["id"].rsplit("-", 1)[1]))
        assert images.decode_gray(row["image"]).ndim == 2
    assert all(u.endswith("part-00007.parquet") for u in r["files"])


def test_contact_sheets_are_pngs(tmp_path):
    gen = render.LineGenerator(seed=0)
    png = preview.lines_sheet([gen.sample(i) for i in range(6)], columns=2)
    sheet = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert sheet.shape[1] == 2 * 760 and sheet.shape[0] > 3 * 120
    g, lines = pages.render_page("cheque", seed=0)
    png = preview.pages_sheet([(g, lines, "cheque")], columns=1)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
    preview.write(str(tmp_path / "p.png"), png)
    assert (tmp_path / "p.png").stat().st_size == len(png)


def test_unknown_domains_are_refused_up_front():
    with pytest.raises(ValueError, match="unknown pages domain"):
        samples.SampleMaker("pages", seed=0, domains=["hanzi"])
    with pytest.raises(ValueError, match="unknown lines domain"):
        samples.SampleMaker("lines", seed=0, domains=["poetry"])
    with pytest.raises(ValueError):
        samples.SampleMaker("words", seed=0)
