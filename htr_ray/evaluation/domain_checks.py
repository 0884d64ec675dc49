"""Checks that only make sense once you know what a page is: things a general OCR engine does not do.

- **cheque**: read the amount in figures ("$1,234.56", "1 234,56", "1.234,56") and the amount in words
  ("One thousand two hundred thirty-four and 56/100") and flag a mismatch (or a missing/unreadable one);
- **prescription**: match every drug name against a lexicon (default: the generic-drug list of
  :mod:`htr_ray.data.lexicons`), with fuzzy matching to suggest the likely drug and a flag for unknown ones;
- **homework**: find arithmetic lines ("17 + 25 = 42", "3/4 + 1/4 = 1", "6 x 7 = 42", "2x + 3 = 13, x = 5")
  and mark each right or wrong (automatic grading).

One entry point: :func:`check_page` ``(lines, domain) -> dict`` with ``findings`` (one dict per finding:
``check``, ``status`` in ok / warning / error, ``line`` index, ``text``, ``message`` and details) and a
``summary``. Lines may be strings or dicts with ``text`` (and optionally ``confidence``), as the
transcription results carry them. Pure Python; no Ray, no torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Sequence

import editdistance

from htr_ray.data import lexicons

DOMAINS = ("cheque", "prescription", "homework")


@dataclass
class Finding:
    check: str
    status: str  # ok | warning | error
    line: int | None
    text: str
    message: str
    details: dict = field(default_factory=dict)


def _texts(lines: Sequence[Any]) -> list[str]:
    out = []
    for ln in lines:
        if isinstance(ln, dict):
            out.append(str(ln.get("text", "")))
        else:
            out.append(str(ln))
    return out


# ================================================================================== cheque amounts

_ONES = {w: i for i, w in enumerate(lexicons.NUMBER_ONES)}
_TENS = {w: 10 * i for i, w in enumerate(lexicons.NUMBER_TENS) if w != "_"}
_SCALES = dict(lexicons.NUMBER_SCALES)
_NUMBER_WORDS = set(_ONES) | set(_TENS) | set(_SCALES) | {"hundred"}
_FILLER = {"and", "dollars", "dollar", "only", "exactly", "cents", "cent", "usd", "eur", "euros", "euro", "no", "xx",
           "pounds", "pound", "sterling", "&"}
_COMMON_MISSPELLINGS = {"fourty": "forty", "ninty": "ninety", "nintey": "ninety", "twelf": "twelve", "thousend": "thousand",
                        "hundered": "hundred", "hundert": "hundred", "fivety": "fifty", "eighty": "eighty"}


def _fix_number_word(w: str) -> tuple[str | None, bool]:
    """(number word, was corrected). Fuzzy: one edit for words of up to 5 letters, two for longer."""
    if w in _NUMBER_WORDS:
        return w, False
    if w in _COMMON_MISSPELLINGS:
        return _COMMON_MISSPELLINGS[w], True
    best, best_d = None, 99
    for cand in sorted(_NUMBER_WORDS):
        d = editdistance.eval(w, cand)
        if d < best_d:
            best, best_d = cand, d
    if best is not None and best_d <= (1 if len(w) <= 5 else 2) and len(w) >= 3:
        return best, True
    return None, False


def words_to_int(words: Sequence[str]) -> tuple[int | None, list[tuple[str, str]]]:
    """English number words to an integer: ['one', 'thousand', 'two', 'hundred', 'thirty', 'four'] ->
    1234. Returns (value or None, [(read, corrected)]). Fillers ("and", "dollars") are skipped."""
    total = current = 0
    seen = False
    corrections: list[tuple[str, str]] = []
    for raw in words:
        w = raw.lower().strip(".,;:*-")
        if not w or w in _FILLER:
            continue
        fixed, corrected = _fix_number_word(w)
        if fixed is None:
            return None, corrections
        if corrected:
            corrections.append((raw, fixed))
        seen = True
        if fixed in _ONES:
            current += _ONES[fixed]
        elif fixed in _TENS:
            current += _TENS[fixed]
        elif fixed == "hundred":
            current = (current or 1) * 100
        else:
            total += (current or 1) * _SCALES[fixed]
            current = 0
    return (total + current if seen else None), corrections


_CENTS_RE = re.compile(r"(?:and\s+)?(\d{1,2}|xx|no|--)\s*/\s*100\b", re.I)
_CENTS_WORDS_RE = re.compile(r"\band\s+([a-z\- ]+?)\s+cents?\b", re.I)


def parse_amount_words(text: str) -> dict | None:
    """The amount in words in cents: 'One thousand two hundred thirty-four and 56/100' -> 123456.
    Returns {'cents', 'corrections'} or None when the text holds no amount in words."""
    t = text.replace("—", "-").replace("–", "-")
    cents = 0
    m = _CENTS_RE.search(t)
    if m:
        g = m.group(1).lower()
        cents = int(g) if g.isdigit() else 0
        t = t[: m.start()] + " " + t[m.end():]
    else:
        m2 = _CENTS_WORDS_RE.search(t)
        if m2:
            v, _ = words_to_int(re.split(r"[\s\-]+", m2.group(1)))
            if v is not None and v < 100:
                cents = v
                t = t[: m2.start()] + " " + t[m2.end():]
    tokens = [w for w in re.split(r"[\s\-]+", t) if w.strip(".,;:*")]
    if not tokens:
        return None
    # the number words are the longest run of tokens that parse; stray words around them are dropped
    words = [w for w in tokens if w.lower().strip(".,;:*") not in _FILLER]
    if not words:
        return None
    value, corrections = words_to_int(words)
    if value is None:
        # drop leading/trailing words that are not numbers (e.g. "Pay", "only")
        keep = [w for w in words if _fix_number_word(w.lower().strip(".,;:*"))[0] is not None]
        if len(keep) < max(1, len(words) // 2):
            return None
        value, corrections = words_to_int(keep)
        if value is None:
            return None
    return {"cents": value * 100 + cents, "corrections": corrections}


_FIG_RE = re.compile(r"(?<![\w/.,\-])([$€£]\s*|\*+\s*)?(\d{1,3}(?:[,. '’]\d{3})+(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)(?![\w/]|[.,]\d)")
_DATE_RE = re.compile(r"\b\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}\b")


def parse_amount_figures(text: str) -> dict | None:
    """The amount in figures in cents: '$1,234.56', '1,234.56', '1 234,56', '1.234,56', '**1,234.56',
    '1234' -> {'cents', 'currency', 'figures'}; None when the text has no amount (dates are skipped)."""
    t = _DATE_RE.sub(" ", text)
    best = None
    for m in _FIG_RE.finditer(t):
        prefix, num = m.group(1) or "", m.group(2)
        compact = num.replace(" ", "").replace("'", "").replace("’", "")
        # a final separator followed by exactly two digits is the decimal point; the others group thousands
        dec = 0
        mm = re.search(r"[.,](\d{2})$", compact)
        if mm:
            dec = int(mm.group(1))
            whole = compact[: mm.start()]
        else:
            whole = compact
        whole = whole.replace(",", "").replace(".", "")
        if not whole.isdigit():
            continue
        cents = int(whole) * 100 + dec
        score = (2 if prefix.strip() else 0) + (1 if mm else 0) + len(compact) / 100
        cand = {"cents": cents, "currency": prefix.strip().strip("*") or None, "figures": (prefix + num).strip(), "score": score}
        if best is None or cand["score"] > best["score"]:
            best = cand
    if best is None:
        return None
    best.pop("score")
    return best


def _fmt(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}"


def check_cheque(lines: Sequence[Any]) -> list[Finding]:
    texts = _texts(lines)
    words_cands, fig_cands = [], []
    for i, t in enumerate(texts):
        w = parse_amount_words(t)
        n_number_words = sum(1 for tok in re.split(r"[\s\-]+", t.lower()) if tok.strip(".,") in _NUMBER_WORDS)
        if w is not None and (n_number_words >= 1 or "/100" in t):
            words_cands.append((n_number_words + ("/100" in t) * 2, i, w))
        f = parse_amount_figures(t)
        if f is not None:
            letters = sum(ch.isalpha() for ch in t)
            fig_cands.append(((2 if f["currency"] else 0) + (1 if "." in f["figures"] or "," in f["figures"] else 0)
                              - letters / 10, i, f))
    findings: list[Finding] = []
    if not words_cands:
        findings.append(Finding("cheque_amount", "warning", None, "", "no amount in words found on the cheque"))
    if not fig_cands:
        findings.append(Finding("cheque_amount", "warning", None, "", "no amount in figures found on the cheque"))
    if findings:
        return findings
    _, wi, w = max(words_cands, key=lambda x: x[0])
    fig_cands = [c for c in fig_cands if c[1] != wi] or fig_cands
    _, fi, f = max(fig_cands, key=lambda x: x[0])
    details = {"words_line": wi, "figures_line": fi, "words_cents": w["cents"], "figures_cents": f["cents"],
               "words_amount": _fmt(w["cents"]), "figures_amount": _fmt(f["cents"])}
    if w["corrections"]:
        details["word_corrections"] = [list(c) for c in w["corrections"]]
    if w["cents"] == f["cents"]:
        findings.append(Finding("cheque_amount", "ok", fi, texts[fi],
                                f"amount in figures {f['figures']} matches the amount in words", details))
    else:
        findings.append(Finding("cheque_amount", "error", fi, texts[fi],
                                f"amount mismatch: figures say {_fmt(f['cents'])}, words say {_fmt(w['cents'])} "
                                f"({texts[wi]!r})", details))
    return findings


# =================================================================================== prescriptions


def default_drug_lexicon() -> list[str]:
    """The generic-drug names of :mod:`htr_ray.data.lexicons` (real INN/USAN names)."""
    return lexicons.builtin("drugs")


_STRENGTH_RE = re.compile(r"\b\d+(?:[.,]\d+)?(?:/\d+(?:[.,]\d+)?)?\s*(?:mg|mcg|µg|g|ml|mL|units?|IU|%)", re.I)
_NOT_DRUG = {"sig", "take", "refills", "refill", "rx", "dr", "patient", "date", "tab", "tabs", "cap", "caps", "tablet",
             "tablets", "capsule", "capsules", "by", "mouth", "daily", "once", "twice", "with", "for", "as", "directed",
             "every", "apply", "inhale", "drops", "drop", "puff", "puffs", "one", "two", "x", "days", "weeks", "prn"}


class DrugMatcher:
    def __init__(self, names: Iterable[str] | None = None):
        names = list(names) if names is not None else default_drug_lexicon()
        self.names = {n.lower(): n for n in names}
        # each component of combination or multi-word names also counts ("Sulfamethoxazole/Trimethoprim")
        self.parts: dict[str, str] = {}
        for low, orig in self.names.items():
            for p in re.split(r"[/\s]+", low):
                if len(p) >= 4:
                    self.parts.setdefault(p, orig)

    def match(self, word: str) -> tuple[str | None, int]:
        """(lexicon name, edit distance) of the nearest name or component."""
        w = word.lower()
        if w in self.names:
            return self.names[w], 0
        if w in self.parts:
            return self.parts[w], 0
        best, best_d = None, 99
        for cand, orig in list(self.names.items()) + list(self.parts.items()):
            d = editdistance.eval(w, cand)
            if d < best_d:
                best, best_d = orig, d
        return best, best_d


def check_prescription(lines: Sequence[Any], lexicon: Iterable[str] | None = None) -> list[Finding]:
    """Every line with a strength ("500 mg") names a drug in the words before it: the name must be in
    the lexicon. Exact (case-insensitive) -> ok; within about 25 % edits of a known name -> warning with
    the suggestion; otherwise error (unknown drug)."""
    matcher = DrugMatcher(lexicon)
    texts = _texts(lines)
    findings: list[Finding] = []
    for i, t in enumerate(texts):
        m = _STRENGTH_RE.search(t)
        head = t[: m.start()] if m else ""
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z/\-]+", head) if w.lower() not in _NOT_DRUG]
        if not m or not words:
            continue
        name = " ".join(words)
        # try the whole name, then each word, and keep the best match
        cands = [name] + words
        scored = []
        for c in cands:
            hit, d = matcher.match(c)
            scored.append((d / max(len(c), 1), d, c, hit))
        rel, d, read, hit = min(scored, key=lambda x: (x[0], -len(x[2])))
        details = {"read": read, "match": hit, "edits": d}
        if d == 0:
            findings.append(Finding("drug_name", "ok", i, t, f"{hit} is a known drug", details))
        elif rel <= 0.25 and hit is not None:
            findings.append(Finding("drug_name", "warning", i, t, f"{read!r} is not in the lexicon; probably {hit} "
                                    f"({d} edit{'s' if d != 1 else ''})", details))
        else:
            findings.append(Finding("drug_name", "error", i, t, f"unknown drug {read!r} (nearest: {hit}, {d} edits)",
                                    details))
    if not findings:
        findings.append(Finding("drug_name", "warning", None, "", "no drug line (name + strength) found"))
    return findings


# ====================================================================================== homework

_PREFIX_RE = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[a-hA-H]\)|Q\d+[.:)]?)\s+")
_VAR_RE = re.compile(r"^\s*(-?\d*)\s*x\s*([+\-])\s*(\d+)\s*=\s*(-?\d+)\s*[,;]\s*x\s*=\s*(-?\d+(?:/\d+)?)\s*$")
_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d+)?(?:/\d+(?![\d.]))?|[()+\-*/×x÷:·])")


def _number(tok: str) -> Fraction:
    if "/" in tok:
        a, b = tok.split("/")
        return Fraction(Fraction(a), Fraction(b))
    return Fraction(tok)


def _tokens(expr: str) -> list[str] | None:
    """Split an expression; '3/4' (no spaces) is one fraction token, '12 / 4' a division."""
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            return None
        out.append(m.group(1))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def evaluate(expr: str) -> Fraction | None:
    """Exact value of + - × ÷ expressions over integers, decimals and fractions; None if not one."""
    toks = _tokens(expr)
    if not toks:
        return None
    ops = {"+": (1, lambda a, b: a + b), "-": (1, lambda a, b: a - b), "*": (2, lambda a, b: a * b),
           "x": (2, lambda a, b: a * b), "×": (2, lambda a, b: a * b), "·": (2, lambda a, b: a * b),
           "÷": (2, lambda a, b: a / b), ":": (2, lambda a, b: a / b), "/": (2, lambda a, b: a / b)}
    out: list[Fraction] = []
    stack: list[str] = []
    expect_number = True

    def apply() -> bool:
        op = stack.pop()
        if len(out) < 2:
            return False
        b, a = out.pop(), out.pop()
        try:
            out.append(ops[op][1](a, b))
        except ZeroDivisionError:
            return False
        return True

    for tok in toks:
        if tok[0].isdigit():
            if not expect_number:
                return None
            out.append(_number(tok))
            expect_number = False
        elif tok == "(":
            stack.append(tok)
        elif tok == ")":
            while stack and stack[-1] != "(":
                if not apply():
                    return None
            if not stack:
                return None
            stack.pop()
        elif tok in ops:
            if expect_number:
                if tok == "-":  # unary minus
                    out.append(Fraction(0))
                else:
                    return None
            while stack and stack[-1] != "(" and ops[stack[-1]][0] >= ops[tok][0]:
                if not apply():
                    return None
            stack.append(tok)
            expect_number = True
        else:
            return None
    while stack:
        if stack[-1] == "(" or not apply():
            return None
    return out[0] if len(out) == 1 and not expect_number else None


def _show(v: Fraction) -> str:
    if v.denominator == 1:
        return str(v.numerator)
    dec = v.numerator / v.denominator
    return f"{v.numerator}/{v.denominator}" if len(f"{dec}") > 8 else f"{v.numerator}/{v.denominator} ({dec:g})"


def grade_line(text: str) -> dict | None:
    """Grade one homework line. None when it is not arithmetic; else {'correct', 'expected', 'given'}."""
    body = _PREFIX_RE.sub("", text.strip())
    m = _VAR_RE.match(body)
    if m:  # 2x + 3 = 13, x = 5 : substitute the answer
        c = int(m.group(1)) if m.group(1) not in ("", "-") else (-1 if m.group(1) == "-" else 1)
        k = int(m.group(3)) * (1 if m.group(2) == "+" else -1)
        rhs, given = int(m.group(4)), _number(m.group(5))
        expected = Fraction(rhs - k, c) if c else None
        if expected is None:
            return None
        return {"correct": given == expected, "expected": _show(expected), "given": _show(given), "kind": "equation"}
    if body.count("=") != 1:
        return None
    lhs, rhs = body.split("=")
    if not re.search(r"\d", lhs) or not re.search(r"[+\-*/×x÷:·]", lhs):
        return None
    left, right = evaluate(lhs), evaluate(rhs)
    if left is None or right is None:
        return None
    correct = left == right
    # a decimal answer rounded to the shown decimals also counts ("10 / 3 = 3.33")
    dm = re.fullmatch(r"\s*-?\d+\.(\d+)\s*", rhs)
    if not correct and dm:
        places = len(dm.group(1))
        correct = abs(float(left) - float(right)) <= 0.5 * 10 ** -places + 1e-12
    return {"correct": bool(correct), "expected": _show(left), "given": _show(right), "kind": "arithmetic"}


def check_homework(lines: Sequence[Any]) -> list[Finding]:
    findings: list[Finding] = []
    for i, t in enumerate(_texts(lines)):
        g = grade_line(t)
        if g is None:
            continue
        if g["correct"]:
            findings.append(Finding("arithmetic", "ok", i, t, "correct", g))
        else:
            findings.append(Finding("arithmetic", "error", i, t, f"wrong: expected {g['expected']}, written {g['given']}", g))
    return findings


# ===================================================================================== front door


def check_page(lines: Sequence[Any], domain: str, drug_lexicon: Iterable[str] | None = None) -> dict:
    """Run the checks of ``domain`` on a page's recognised lines (strings or ``{text, ...}`` dicts).

    Returns ``{"domain", "ok", "findings": [...], "summary": {...}}``; ``ok`` is False when any finding
    is an error. Other domains return no findings (and ``checked: False``)."""
    if domain == "cheque":
        findings = check_cheque(lines)
    elif domain == "prescription":
        findings = check_prescription(lines, drug_lexicon)
    elif domain == "homework":
        findings = check_homework(lines)
    else:
        return {"domain": domain, "checked": False, "ok": True, "findings": [], "summary": {}}
    # carry each line's recognition confidence into its findings: a reviewer sees at once whether a
    # flagged error may be a misreading
    for f in findings:
        if f.line is not None and f.line < len(lines) and isinstance(lines[f.line], dict) \
                and lines[f.line].get("confidence") is not None:
            f.details["confidence"] = float(lines[f.line]["confidence"])
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("ok", "warning", "error")}
    summary: dict[str, Any] = dict(counts)
    if domain == "homework":
        graded = counts["ok"] + counts["error"]
        summary.update(graded=graded, score=(counts["ok"] / graded) if graded else None)
    return {"domain": domain, "checked": True, "ok": counts["error"] == 0, "findings": [asdict(f) for f in findings],
            "summary": summary}
