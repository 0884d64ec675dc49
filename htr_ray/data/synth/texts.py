"""Text sources with ground truth, one per domain: cheque, prescription, homework, hanzi, generic.

Every function takes a ``numpy.random.Generator`` and returns the exact string to draw, so a seed fixes
the text. Page layouts call the field-level functions (``cheque_fields``, ``prescription_fields``) and
lines call :func:`line_text`.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from htr_ray import paths
# the word lists live in htr_ray.data.lexicons (shared with decoding, the domain checks and the LM);
# they are re-exported here for the generators' users
from htr_ray.data.lexicons import (  # noqa: F401
    COMMON_WORDS, COMPANIES, DRUGS, FIRST_NAMES, FORMS, FREQS, HANZI, HANZI_WORDS, HOMEWORK_SENTENCES, LAST_NAMES,
    MEMOS, MONTHS, PUNCT_END, ROUTES, SPELLING, int_to_words,
)

log = logging.getLogger(__name__)

LINE_DOMAINS = ("cheque", "prescription", "homework", "hanzi", "generic")


def _choice(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


# -------------------------------------------------------------------------------- numbers as words


def amount_in_words(cents: int, style: int = 0) -> str:
    """Cheque wording: 123456 -> 'One thousand two hundred thirty-four and 56/100'."""
    dollars, c = divmod(cents, 100)
    words = int_to_words(dollars)
    words = words[0].upper() + words[1:]
    if style == 1:
        return f"{words} dollars and {c:02d}/100"
    if style == 2:
        return f"{words} and {c:02d}/100 dollars"
    if style == 3:
        return f"{words.upper()} AND {c:02d}/100"
    return f"{words} and {c:02d}/100"


def amount_in_figures(cents: int, style: int = 0) -> str:
    """'$1,234.56' (0), '1,234.56' (1), '1 234,56' (2), '1.234,56' (3), '€ 1 234,56' (4), '**1,234.56' (5)."""
    dollars, c = divmod(cents, 100)
    us = f"{dollars:,}"
    eu_space = us.replace(",", " ")
    if style == 0:
        return f"${us}.{c:02d}"
    if style == 1:
        return f"{us}.{c:02d}"
    if style == 2:
        return f"{eu_space},{c:02d}"
    if style == 3:
        return f"{us.replace(',', '.')},{c:02d}"
    if style == 4:
        return f"€ {eu_space},{c:02d}"
    return f"**{us}.{c:02d}"


def random_cents(rng: np.random.Generator) -> int:
    magnitude = int(rng.choice([100, 1000, 10000, 100000, 1000000], p=[0.3, 0.35, 0.25, 0.08, 0.02]))
    cents = int(rng.integers(100, magnitude * 100))
    if rng.random() < 0.3:
        cents -= cents % 100  # round dollars: "and 00/100"
    return cents


def date_text(rng: np.random.Generator) -> str:
    y = int(rng.integers(1995, 2031))
    m = int(rng.integers(1, 13))
    d = int(rng.integers(1, 29))
    style = int(rng.integers(9))
    if style == 0:
        return f"{m:02d}/{d:02d}/{y}"
    if style == 1:
        return f"{m}/{d}/{y % 100:02d}"
    if style == 2:
        return f"{d:02d}.{m:02d}.{y}"
    if style == 3:
        return f"{y}-{m:02d}-{d:02d}"
    if style == 4:
        return f"{MONTHS[m - 1]} {d}, {y}"
    if style == 5:
        return f"{d} {MONTHS[m - 1][:3]} {y}"
    if style == 6:
        return f"{MONTHS[m - 1][:3]}. {d}, {y}"
    if style == 7:
        return f"{d}/{m}/{y}"
    return f"{d}-{MONTHS[m - 1][:3]}-{y % 100:02d}"


def person_name(rng: np.random.Generator) -> str:
    first, last = _choice(rng, FIRST_NAMES), _choice(rng, LAST_NAMES)
    style = int(rng.integers(6))
    if style == 0:
        return f"{first[0]}. {last}"
    if style == 1:
        return f"{last}, {first}"
    if style == 2:
        return f"{first} {_choice(rng, FIRST_NAMES)[0]}. {last}"
    return f"{first} {last}"


# ---------------------------------------------------------------------------------------- cheques


def payee(rng: np.random.Generator) -> str:
    return _choice(rng, COMPANIES) if rng.random() < 0.4 else person_name(rng)


def memo(rng: np.random.Generator) -> str:
    m = _choice(rng, MEMOS)
    return m.format(n=int(rng.integers(100, 99999)), q=int(rng.integers(1, 5)), y=int(rng.integers(2000, 2031)))


def cheque_fields(rng: np.random.Generator) -> dict[str, str]:
    cents = random_cents(rng)
    return {
        "date": date_text(rng),
        "payee": payee(rng),
        "amount": amount_in_figures(cents, int(rng.choice(6, p=[0.15, 0.55, 0.1, 0.05, 0.05, 0.1]))).lstrip("$€ "),
        "words": amount_in_words(cents, int(rng.choice(4, p=[0.6, 0.2, 0.1, 0.1]))),
        "memo": memo(rng),
        "signature": person_name(rng),
    }


def cheque_line(rng: np.random.Generator) -> str:
    f = cheque_fields(rng)
    kind = int(rng.integers(6))
    if kind == 0:
        return f["date"]
    if kind == 1:
        return f["payee"]
    if kind == 2:
        return amount_in_figures(random_cents(rng), int(rng.integers(6)))
    if kind == 3:
        return f["words"]
    if kind == 4:
        return f["memo"]
    return f"Pay {f['payee']} {amount_in_figures(random_cents(rng), 0)}"


# ---------------------------------------------------------------------------------- prescriptions


def drug_line(rng: np.random.Generator) -> str:
    name = _choice(rng, sorted(DRUGS))
    strength = _choice(rng, DRUGS[name])
    if rng.random() < 0.25:
        name = name.lower()
    if rng.random() < 0.4:
        return f"{name} {strength} #{int(rng.integers(1, 13)) * 10 if rng.random() < 0.7 else int(rng.integers(5, 100))}"
    return f"{name} {strength}"


def sig_line(rng: np.random.Generator) -> str:
    n = _choice(rng, ("1", "1", "2", "1/2", "1-2", "one", "two", "5", "10"))
    form = _choice(rng, FORMS)
    route = _choice(rng, ROUTES)
    freq = _choice(rng, FREQS)
    s = f"{n} {form} {route} {freq}" if rng.random() < 0.85 else f"Sig: {n} {form} {route} {freq}"
    if rng.random() < 0.5:
        s += f" x {int(rng.integers(3, 31))} {_choice(rng, ('days', 'days', 'd', 'wks', 'weeks'))}"
    if rng.random() < 0.15:
        s += _choice(rng, (" with food", " for pain", " prn", " for infection", " for BP", " as directed"))
    return s


def prescription_fields(rng: np.random.Generator, n_drugs: int | None = None) -> dict:
    n = n_drugs if n_drugs is not None else int(rng.integers(1, 4))
    return {
        "patient": person_name(rng),
        "date": date_text(rng),
        "age": f"{int(rng.integers(1, 95))}" + (" y" if rng.random() < 0.3 else ""),
        "items": [(drug_line(rng), sig_line(rng)) for _ in range(n)],
        "refills": _choice(rng, ("0", "1", "2", "3", "5", "none", "NR", "x2")),
        "signature": "Dr. " + _choice(rng, LAST_NAMES) if rng.random() < 0.6 else person_name(rng),
    }


def prescription_line(rng: np.random.Generator) -> str:
    kind = int(rng.integers(7))
    if kind in (0, 1):
        return drug_line(rng)
    if kind in (2, 3):
        return sig_line(rng)
    if kind == 4:
        return f"{drug_line(rng)} {sig_line(rng)}"
    if kind == 5:
        return person_name(rng) if rng.random() < 0.5 else date_text(rng)
    return f"Refills: {_choice(rng, ('0', '1', '2', '3', 'none'))}"


# ---------------------------------------------------------------------------------------- homework


def arithmetic(rng: np.random.Generator) -> str:
    """An exercise WITH its correct answer: '17 + 25 = 42', '3/4 + 1/8 = 7/8', '144 / 12 = 12'."""
    from fractions import Fraction

    kind = int(rng.integers(7))
    big = int(rng.choice([10, 100, 1000], p=[0.3, 0.5, 0.2]))
    a, b = int(rng.integers(0, big)), int(rng.integers(0, big))
    if kind == 0:
        return f"{a} + {b} = {a + b}"
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"
    if kind == 2:
        a, b = int(rng.integers(0, 13)), int(rng.integers(0, 13))
        return f"{a} {_choice(rng, ('x', '×', '*'))} {b} = {a * b}"
    if kind == 3:
        b, q = int(rng.integers(1, 13)), int(rng.integers(0, 13))
        return f"{b * q} {_choice(rng, ('÷', '/', ':'))} {b} = {q}"
    if kind == 4:
        d1, d2 = int(rng.integers(2, 13)), int(rng.integers(2, 13))
        f1, f2 = Fraction(int(rng.integers(1, d1)), d1), Fraction(int(rng.integers(1, d2)), d2)
        op = _choice(rng, ("+", "-", "x"))
        if op == "-" and f2 > f1:
            f1, f2 = f2, f1
        r = f1 + f2 if op == "+" else f1 - f2 if op == "-" else f1 * f2
        rs = f"{r.numerator}/{r.denominator}" if r.denominator != 1 else str(r.numerator)
        return f"{f1.numerator}/{f1.denominator} {op} {f2.numerator}/{f2.denominator} = {rs}"
    if kind == 5:
        x = int(rng.integers(1, 20))
        c, k = int(rng.integers(1, 10)), int(rng.integers(0, 30))
        return f"{c}x + {k} = {c * x + k}, x = {x}"
    a10, b10 = round(float(rng.integers(0, 10000)) / 100, 2), round(float(rng.integers(0, 10000)) / 100, 2)
    return f"{a10:.2f} + {b10:.2f} = {a10 + b10:.2f}"


def homework_line(rng: np.random.Generator) -> str:
    kind = int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))
    prefix = f"{int(rng.integers(1, 21))}. " if rng.random() < 0.3 else (f"{'abcdef'[int(rng.integers(6))]}) " if rng.random() < 0.1 else "")
    if kind == 0:
        return prefix + arithmetic(rng)
    if kind == 1:
        return prefix + _choice(rng, HOMEWORK_SENTENCES)
    if kind == 2:
        k = int(rng.integers(2, 6))
        words = [str(_choice(rng, SPELLING)) for _ in range(k)]
        return prefix + _choice(rng, (", ", "  ", " ")).join(words)
    return prefix + generic_line(rng, max_words=8)


def hanzi_line(rng: np.random.Generator, allowed: set[str] | None = None) -> str:
    """A short line of common characters (and words); ``allowed`` restricts to what a font covers."""
    n = int(rng.integers(3, 13))
    out = ""
    while len(out) < n:
        if rng.random() < 0.4:
            w = _choice(rng, HANZI_WORDS)
        else:
            w = _choice(rng, HANZI)
        if allowed is None or all(c in allowed for c in w):
            out += w
    if rng.random() < 0.3:
        out += _choice(rng, ("。", "，", "！", "？", ""))
        if allowed is not None and out[-1:] and out[-1] not in allowed:
            out = out[:-1]
    return out


# ---------------------------------------------------------------------------------------- generic


def iam_form_split(line_id: str) -> str:
    """The split of an IAM line under htr_ray.data.datasets' rule (by form), so that synthetic data never
    reuses text or strokes from held-out forms."""
    from htr_ray.data.labels import form_of, split_by_group

    return split_by_group(form_of(line_id))


def _iam_dir() -> Path:
    return paths.shared_data() / "iam_ondb_lines"


@functools.lru_cache(maxsize=1)
def iam_train_lines() -> tuple[tuple[str, str], ...]:
    """(line_id, transcription) of the IAM-OnDB lines of TRAIN forms only (empty if the data is absent)."""
    from htr_ray.data import labels

    if not labels.has_labels(str(_iam_dir())):
        return ()
    return tuple((r.line_id, r.text) for r in labels.read_rows(str(_iam_dir()), "train") if r.text.strip())


@functools.lru_cache(maxsize=1)
def _bigrams() -> dict[str, tuple[str, ...]]:
    """Word bigram model over the train-form IAM transcriptions (LOB tokenisation kept: 'Mr . Foot')."""
    table: dict[str, list[str]] = {}
    for _, text in iam_train_lines():
        words = ["<s>"] + text.split() + ["</s>"]
        for a, b in zip(words, words[1:]):
            table.setdefault(a, []).append(b)
    return {k: tuple(v) for k, v in table.items()}


@functools.lru_cache(maxsize=1)
def _bigram_keys() -> tuple[str, ...]:
    return tuple(sorted(k for k in _bigrams() if k not in ("<s>", "</s>")))


def _markov_line(rng: np.random.Generator, max_chars: int) -> str:
    table = _bigrams()
    if not table:
        return ""
    w = _choice(rng, table["<s>"]) if rng.random() < 0.5 else _choice(rng, _bigram_keys())
    out: list[str] = []
    while w != "</s>" and len(" ".join(out + [w])) <= max_chars:
        out.append(w)
        nxt = table.get(w)
        if not nxt:
            break
        w = _choice(rng, nxt)
    return " ".join(out)


def _word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.04:
        return str(int(rng.integers(0, 2000)))
    if r < 0.08:
        return _choice(rng, FIRST_NAMES + LAST_NAMES)
    w = _choice(rng, COMMON_WORDS)
    if rng.random() < 0.04:
        w = w.upper()
    return w


def generic_line(rng: np.random.Generator, max_words: int = 11) -> str:
    """English-looking text with varied vocabulary and punctuation; ~40 % follows the IAM LOB style."""
    r = rng.random()
    if r < 0.4:
        s = _markov_line(rng, max_chars=int(rng.integers(15, 60)))
        if s:
            return s
    n = int(rng.integers(2, max_words + 1))
    words = [_word(rng) for _ in range(n)]
    lob = rng.random() < 0.3  # LOB tokenisation: detached punctuation, "M Ps"
    out = []
    for i, w in enumerate(words):
        if i == 0 and rng.random() < 0.6:
            w = w[:1].upper() + w[1:]
        out.append(w)
        if i < n - 1 and rng.random() < 0.12:
            p = _choice(rng, (",", ",", ";", ":", " -", "'s"))
            if lob and p in (",", ";", ":"):
                out.append(p)
            else:
                out[-1] += p
        if rng.random() < 0.02:
            out[-1] = f'"{out[-1]}"'
        if rng.random() < 0.015:
            out[-1] = f"({out[-1]})"
    end = _choice(rng, PUNCT_END) if rng.random() < 0.6 else ""
    s = " ".join(out)
    if end:
        s = s + (" " + end.strip() if lob else end)
    return s


SOURCES: dict[str, Callable[[np.random.Generator], str]] = {
    "cheque": cheque_line,
    "prescription": prescription_line,
    "homework": homework_line,
    "hanzi": hanzi_line,
    "generic": generic_line,
}


def line_text(domain: str, rng: np.random.Generator) -> str:
    if domain not in SOURCES:
        raise ValueError(f"unknown text domain {domain!r}; choose from {sorted(SOURCES)}")
    return " ".join(SOURCES[domain](rng).split())  # one space between words: what a reader can tell apart
