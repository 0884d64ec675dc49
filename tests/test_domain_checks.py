"""Domain checks pass correct pages and catch planted errors."""

from __future__ import annotations

import numpy as np
import pytest

from htr_ray.evaluation import domain_checks as D


@pytest.mark.parametrize("text,cents", [
    ("$1,234.56", 123456), ("1,234.56", 123456), ("1 234,56", 123456), ("1.234,56", 123456),
    ("€ 1 234,56", 123456), ("**1,234.56", 123456), ("$ 75.00", 7500), ("1234", 123400), ("12,000", 1200000),
    ("Pay Acme Plumbing $42.10", 4210),
])
def test_amount_in_figures(text, cents):
    assert D.parse_amount_figures(text)["cents"] == cents


def test_dates_are_not_amounts():
    assert D.parse_amount_figures("03/12/2024") is None
    assert D.parse_amount_figures("memo") is None


@pytest.mark.parametrize("text,cents", [
    ("One thousand two hundred thirty-four and 56/100", 123456),
    ("Seventy-five dollars and 00/100", 7500),
    ("TWELVE THOUSAND AND 00/100", 1200000),
    ("Nine hundred ninety-nine and 99/100 dollars", 99999),
    ("two million three hundred thousand and xx/100", 230000000),
    ("forty two dollars and ten cents", 4210),
])
def test_amount_in_words(text, cents):
    assert D.parse_amount_words(text)["cents"] == cents


def test_amount_words_tolerate_recognition_typos():
    r = D.parse_amount_words("One thousand two hundered thirty-faur and 56/100")
    assert r["cents"] == 123456
    assert ("hundered", "hundred") in r["corrections"] and ("faur", "four") in r["corrections"]


def test_cheque_match_and_planted_mismatch():
    page = ["March 3, 2024", "Acme Plumbing", "1,234.56", "One thousand two hundred thirty-four and 56/100",
            "invoice #4411", "J. Smith"]
    ok = D.check_page(page, "cheque")
    assert ok["ok"] and ok["findings"][0]["status"] == "ok"
    assert ok["findings"][0]["details"]["figures_cents"] == 123456
    # wrong words: "thirty-four" -> "forty-four"
    bad = D.check_page([*page[:3], "One thousand two hundred forty-four and 56/100", *page[4:]], "cheque")
    assert not bad["ok"]
    f = bad["findings"][0]
    assert f["status"] == "error" and f["line"] == 2
    assert f["details"]["words_cents"] == 124456 and f["details"]["figures_cents"] == 123456
    assert "mismatch" in f["message"]
    # wrong cents in the figures
    assert not D.check_page([*page[:2], "$1,234.65", *page[3:]], "cheque")["ok"]
    # no amount in words at all: a warning, not a crash
    w = D.check_page(["Acme", "$10.00"], "cheque")
    assert w["ok"] and w["findings"][0]["status"] == "warning"


def test_prescription_known_misread_and_unknown_drugs():
    page = [{"text": "Jane Doe", "confidence": 0.9}, {"text": "Amoxicillin 500 mg #30"}, {"text": "1 cap PO TID x 10 days"},
            {"text": "lisinopril 10 mg"}, {"text": "Atorvastatn 20 mg"}, {"text": "Zorblaxin 50 mg"},
            {"text": "Refills: 2"}]
    r = D.check_page(page, "prescription")
    by_line = {f["line"]: f for f in r["findings"]}
    assert by_line[1]["status"] == "ok" and by_line[1]["details"]["match"] == "Amoxicillin"
    assert by_line[3]["status"] == "ok" and by_line[3]["details"]["match"] == "Lisinopril"
    assert by_line[4]["status"] == "warning" and by_line[4]["details"]["match"] == "Atorvastatin"
    assert by_line[5]["status"] == "error" and "unknown drug" in by_line[5]["message"]
    assert 2 not in by_line and 6 not in by_line and 0 not in by_line  # sig, refills, patient: no drug
    assert not r["ok"] and r["summary"] == {"ok": 2, "warning": 1, "error": 1}
    assert "confidence" not in by_line[5]["details"]
    r2 = D.check_page([{"text": "Zorblaxin 50 mg", "confidence": 0.31}], "prescription")
    assert r2["findings"][0]["details"]["confidence"] == 0.31
    # a custom lexicon
    assert D.check_page(["Zorblaxin 50 mg"], "prescription", drug_lexicon=["Zorblaxin"])["ok"]
    # multi-word and combination names
    assert D.check_page(["Sulfamethoxazole/Trimethoprim 800/160 mg", "Insulin glargine 100 units/mL"],
                        "prescription")["summary"]["ok"] == 2


@pytest.mark.parametrize("line,correct", [
    ("17 + 25 = 42", True), ("17 + 25 = 43", False), ("3/4 + 1/4 = 1", True), ("3/4 + 1/8 = 7/8", True),
    ("1/2 x 2/3 = 1/3", True), ("1/2 + 1/3 = 2/5", False), ("6 x 7 = 42", True), ("6 × 7 = 48", False),
    ("7 * 8 = 56", True), ("144 / 12 = 12", True), ("144 ÷ 12 = 11", False), ("56 : 8 = 7", True),
    ("100 - 37 = 63", True), ("12.50 + 3.25 = 15.75", True), ("12.50 + 3.25 = 15.57", False),
    ("10 / 3 = 3.33", True), ("2 + 3 x 4 = 14", True), ("(2 + 3) x 4 = 20", True), ("3. 9 + 9 = 18", True),
    ("b) 9 - 10 = -1", True), ("2x + 3 = 13, x = 5", True), ("2x + 3 = 13, x = 6", False), ("3x - 4 = 11, x = 5", True),
])
def test_grade_arithmetic(line, correct):
    g = D.grade_line(line)
    assert g is not None, line
    assert g["correct"] is correct, (line, g)


def test_non_arithmetic_lines_are_not_graded():
    for line in ["The cat sat on the mat.", "because friend people", "x = y", "1. Name: Tom", "Date 12/03/2024", ""]:
        assert D.grade_line(line) is None, line


def test_homework_page_score():
    page = ["Maths homework", "1. 17 + 25 = 42", "2. 6 x 7 = 48", "3. 3/4 + 1/4 = 1", "My dog likes to run."]
    r = D.check_page(page, "homework")
    assert r["summary"]["graded"] == 3 and r["summary"]["score"] == pytest.approx(2 / 3)
    wrong = [f for f in r["findings"] if f["status"] == "error"]
    assert len(wrong) == 1 and wrong[0]["line"] == 2 and wrong[0]["details"]["expected"] == "42"
    assert D.check_page(["14 + 1 = 15"], "homework")["ok"]
    assert D.check_page(["anything"], "hanzi") == {"domain": "hanzi", "checked": False, "ok": True, "findings": [],
                                                  "summary": {}}


def test_synthetic_ground_truth_always_passes():
    """The synth helper's own texts (correct by construction) never raise a false alarm."""
    texts = pytest.importorskip("htr_ray.data.synth.texts")
    rng = np.random.default_rng(7)
    for _ in range(100):
        c = texts.random_cents(rng)
        for style in range(6):
            assert D.parse_amount_figures(texts.amount_in_figures(c, style))["cents"] == c
        for style in range(4):
            assert D.parse_amount_words(texts.amount_in_words(c, style))["cents"] == c
        assert D.grade_line(texts.arithmetic(rng))["correct"]
        f = texts.prescription_fields(rng)
        rx = D.check_page([x for item in f["items"] for x in item], "prescription")
        assert rx["ok"] and rx["summary"]["warning"] == 0, rx


def test_inference_takes_word_lists_from_lexicons_not_the_generator():
    """Decoding and the domain checks read htr_ray.data.lexicons; none of recognition/ or evaluation/
    imports the synthetic-data generator, and the generator draws from the same lists."""
    import ast
    from pathlib import Path

    from htr_ray.data import lexicons
    from htr_ray.data.synth import texts
    from htr_ray.recognition.decode import Lexicon

    root = Path(D.__file__).resolve().parents[1]
    offenders = []
    for sub in ("recognition", "evaluation"):
        for py in sorted((root / sub).glob("*.py")):
            for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{py.name}: {n}" for n in names if "synth" in n]
    assert offenders == []
    assert texts.DRUGS is lexicons.DRUGS and texts.FREQS is lexicons.FREQS
    assert D.default_drug_lexicon() == sorted(lexicons.DRUGS)
    assert "Amoxicillin".lower() in Lexicon.from_file("builtin:drugs")
    cheque = Lexicon.from_file("builtin:cheque")
    assert all(w in cheque for w in ("twenty", "thousand", "March", "dollars")) and "aspirin" not in cheque
    assert D.parse_amount_words(lexicons.int_to_words(90_019).capitalize() + " and 05/100")["cents"] == 9_001_905
    with pytest.raises(ValueError, match="unknown built-in lexicon"):
        lexicons.builtin("nope")


def test_domain_texts_are_deterministic_and_pass_the_checks():
    """The LM's domain text (lexicons.domain_texts): same lines for a seed; its arithmetic is right and
    its amounts in words parse."""
    from htr_ray.data import lexicons

    a, b = lexicons.domain_texts(seed=3), lexicons.domain_texts(seed=3)
    assert a == b and len(a) > 1500 and a != lexicons.domain_texts(seed=4)
    graded = [D.grade_line(t) for t in a]
    graded = [g for g in graded if g is not None]
    assert len(graded) >= 500 and all(g["correct"] for g in graded)
    words = [t for t in a if t.endswith("/100") or t.endswith("/100 dollars")]
    assert len(words) >= 500 and all(D.parse_amount_words(t) is not None for t in words)
