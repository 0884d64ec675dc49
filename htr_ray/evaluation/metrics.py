"""Recognition metrics: character and word error rates, accuracy, per-group breakdowns, character
confusions from the edit alignment, classifier confusion matrices with precision/recall/F1, and
confidence calibration.

CER = (substitutions + deletions + insertions) / reference characters, summed over the corpus (not
averaged per line, so long lines weigh more, as in the IAM literature). WER likewise on
whitespace-separated words.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Hashable, Sequence

try:  # C implementation when installed; the pure-Python one below gives the same distances
    import editdistance as _editdistance
except ImportError:  # e.g. the GPU recipe's bare Python + torch (scripts/train-gpu)
    _editdistance = None


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (unit-cost insertions, deletions, substitutions) of two sequences of hashable
    items, in pure Python: two rows of the dynamic-programming table."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i]
        for j, y in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_distance(a: Sequence, b: Sequence) -> int:
    if _editdistance is None:
        return levenshtein(a, b)
    return int(_editdistance.eval(a, b))


def char_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance, reference length) in characters."""
    return edit_distance(ref, hyp), len(ref)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.split(), hyp.split()
    return edit_distance(r, h), len(r)


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER. An empty reference set gives 0.0; an empty reference with a non-empty hypothesis
    counts its insertions against a denominator of at least 1."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = total = 0
    for r, h in zip(refs, hyps):
        e, n = char_errors(r, h)
        errors, total = errors + e, total + n
    return errors / max(total, 1) if (errors or total) else 0.0


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = total = 0
    for r, h in zip(refs, hyps):
        e, n = word_errors(r, h)
        errors, total = errors + e, total + n
    return errors / max(total, 1) if (errors or total) else 0.0


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        return 0.0
    return sum(1 for a, b in zip(labels, predictions) if a == b) / len(labels)


# ----------------------------------------------------------------------------- per-group figures


def line_report(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    """CER, WER and the counts behind them (so groups can be summed exactly)."""
    ce = cn = we = wn = exact = 0
    for r, h in zip(refs, hyps):
        e, n = char_errors(r, h)
        ce, cn = ce + e, cn + n
        e, n = word_errors(r, h)
        we, wn = we + e, wn + n
        exact += r == h
    return {
        "lines": len(refs),
        "cer": ce / max(cn, 1) if (ce or cn) else 0.0,
        "wer": we / max(wn, 1) if (we or wn) else 0.0,
        "char_errors": ce,
        "chars": cn,
        "word_errors": we,
        "words": wn,
        "line_accuracy": exact / len(refs) if refs else 0.0,
    }


def by_group(refs: Sequence[str], hyps: Sequence[str], groups: Sequence[Hashable]) -> dict[str, dict]:
    """:func:`line_report` per group value (e.g. per domain or per source), sorted by group name."""
    if not (len(refs) == len(hyps) == len(groups)):
        raise ValueError("refs, hyps and groups must have the same length")
    idx: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        idx[str(g)].append(i)
    return {g: line_report([refs[i] for i in ii], [hyps[i] for i in ii]) for g, ii in sorted(idx.items())}


# ------------------------------------------------------------------------- character confusions


def align_chars(ref: str, hyp: str) -> list[tuple[str, str, str]]:
    """A minimal edit alignment as a list of (op, ref_char, hyp_char) with op one of ``=`` (match),
    ``S`` (substitution), ``D`` (deletion: ref char missing from hyp; hyp_char ``""``) and ``I``
    (insertion: ref_char ``""``). Ties prefer substitution, then deletion, then insertion."""
    n, m = len(ref), len(hyp)
    # Levenshtein table; O(n*m) is fine for text lines
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        row, prev = d[i], d[i - 1]
        for j in range(1, m + 1):
            cost = 0 if ri == hyp[j - 1] else 1
            row[j] = min(prev[j - 1] + cost, prev[j] + 1, row[j - 1] + 1)
    ops: list[tuple[str, str, str]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], ""))
            i -= 1
        else:
            ops.append(("I", "", hyp[j - 1]))
            j -= 1
    ops.reverse()
    return ops


def char_confusions(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Counter]:
    """Counters of substitutions ``(ref, hyp)``, deletions ``ref`` and insertions ``hyp`` over a corpus."""
    subs, dels, ins = Counter(), Counter(), Counter()
    for r, h in zip(refs, hyps):
        if r == h:
            continue
        for op, a, b in align_chars(r, h):
            if op == "S":
                subs[(a, b)] += 1
            elif op == "D":
                dels[a] += 1
            elif op == "I":
                ins[b] += 1
    return {"substitutions": subs, "deletions": dels, "insertions": ins}


def top_confusions(refs: Sequence[str], hyps: Sequence[str], k: int = 20) -> dict[str, list[dict]]:
    """The ``k`` most frequent substitutions, deletions and insertions, JSON-ready."""
    c = char_confusions(refs, hyps)
    return {
        "substitutions": [{"ref": a, "hyp": b, "count": n} for (a, b), n in c["substitutions"].most_common(k)],
        "deletions": [{"ref": a, "count": n} for a, n in c["deletions"].most_common(k)],
        "insertions": [{"hyp": b, "count": n} for b, n in c["insertions"].most_common(k)],
    }


# ---------------------------------------------------------------------------------- classifiers


def confusion_matrix(labels: Sequence, predictions: Sequence, classes: Sequence | None = None) -> tuple[list, list[list[int]]]:
    """(classes, matrix) with ``matrix[i][j]`` = how many samples of true class ``classes[i]`` were
    predicted as ``classes[j]``. Classes default to the sorted union of labels and predictions."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if classes is None:
        classes = sorted(set(labels) | set(predictions), key=str)
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = {p for p in list(labels) + list(predictions) if p not in index}
    if unknown:
        raise ValueError(f"labels/predictions outside the class list: {sorted(map(str, unknown))[:5]}")
    m = [[0] * len(classes) for _ in classes]
    for a, b in zip(labels, predictions):
        m[index[a]][index[b]] += 1
    return classes, m


def per_class_report(labels: Sequence, predictions: Sequence, classes: Sequence | None = None) -> dict:
    """Per-class precision, recall, F1 and support, plus accuracy and macro/weighted averages.
    A class never predicted has precision 0 (and F1 0), as in scikit-learn with zero_division=0."""
    classes, m = confusion_matrix(labels, predictions, classes)
    n = len(classes)
    rows = {}
    macro = [0.0, 0.0, 0.0]
    weighted = [0.0, 0.0, 0.0]
    total = sum(sum(r) for r in m)
    for i, c in enumerate(classes):
        tp = m[i][i]
        support = sum(m[i])
        predicted = sum(m[k][i] for k in range(n))
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if (p + r) else 0.0
        rows[str(c)] = {"precision": p, "recall": r, "f1": f, "support": support}
        for acc, v in ((macro, 1.0), (weighted, support)):
            acc[0] += p * v
            acc[1] += r * v
            acc[2] += f * v
    return {
        "accuracy": sum(m[i][i] for i in range(n)) / total if total else 0.0,
        "samples": total,
        "classes": rows,
        "macro": {"precision": macro[0] / max(n, 1), "recall": macro[1] / max(n, 1), "f1": macro[2] / max(n, 1)},
        "weighted": {k: v / max(total, 1) for k, v in zip(("precision", "recall", "f1"), weighted)},
    }


def top_class_confusions(labels: Sequence, predictions: Sequence, k: int = 20) -> list[dict]:
    c = Counter((a, b) for a, b in zip(labels, predictions) if a != b)
    return [{"label": str(a), "predicted": str(b), "count": n} for (a, b), n in c.most_common(k)]


# ---------------------------------------------------------------------------------- calibration


def calibration(confidences: Sequence[float], refs: Sequence[str], hyps: Sequence[str], bins: int = 10) -> dict:
    """Error rate per confidence bin, so a user can choose a review threshold.

    Lines are sorted by confidence and cut into ``bins`` equal-count bins (deciles by default), lowest
    confidence first. Per bin: the confidence range, the lines, CER, the share of lines read exactly.
    ``review_table`` answers "if I send every line below threshold t to a human, what CER is left in
    the rest and what share do I review": one row per bin edge. ``monotonic_violations`` counts adjacent
    bins where the more confident bin has the *higher* CER, and ``spearman`` is the rank correlation
    between bin order and bin CER (-1 = perfectly calibrated ordering).
    """
    n = len(confidences)
    if not (n == len(refs) == len(hyps)):
        raise ValueError("confidences, refs and hyps must have the same length")
    if n == 0:
        return {"bins": [], "review_table": [], "monotonic_violations": 0, "spearman": None, "lines": 0}
    order = sorted(range(n), key=lambda i: confidences[i])
    errs = [char_errors(refs[i], hyps[i]) for i in range(n)]
    bins = max(1, min(bins, n))
    out_bins = []
    for b in range(bins):
        lo, hi = b * n // bins, (b + 1) * n // bins
        ii = order[lo:hi]
        if not ii:
            continue
        e = sum(errs[i][0] for i in ii)
        c = sum(errs[i][1] for i in ii)
        out_bins.append({
            "bin": b,
            "conf_min": float(confidences[ii[0]]),
            "conf_max": float(confidences[ii[-1]]),
            "lines": len(ii),
            "cer": e / max(c, 1) if (e or c) else 0.0,
            "line_accuracy": sum(refs[i] == hyps[i] for i in ii) / len(ii),
        })
    # review table: threshold at each bin's lower edge; lines below go to review
    total_e = sum(e for e, _ in errs)
    total_c = sum(c for _, c in errs)
    review = []
    cum_e = cum_c = cum_n = 0
    for b in out_bins:
        kept_e, kept_c = total_e - cum_e, total_c - cum_c
        review.append({
            "threshold": b["conf_min"],
            "review_share": cum_n / n,
            "cer_accepted": kept_e / max(kept_c, 1) if (kept_e or kept_c) else 0.0,
        })
        ii = order[cum_n:cum_n + b["lines"]]
        cum_e += sum(errs[i][0] for i in ii)
        cum_c += sum(errs[i][1] for i in ii)
        cum_n += b["lines"]
    cers = [b["cer"] for b in out_bins]
    violations = sum(1 for a, b in zip(cers, cers[1:]) if b > a)
    return {
        "lines": n,
        "bins": out_bins,
        "review_table": review,
        "monotonic_violations": violations,
        "spearman": _spearman(list(range(len(cers))), cers),
    }


def review_thresholds(confidences: Sequence[float], refs: Sequence[str], hyps: Sequence[str],
                      targets: Sequence[float] = (0.01, 0.02, 0.05)) -> list[dict]:
    """For each target CER: the lowest confidence threshold such that the lines at or above it have a
    CER at most the target, and the share of lines that then go to human review (those below).
    ``threshold`` is None when no threshold reaches the target (even the most confident line alone)."""
    n = len(confidences)
    if not (n == len(refs) == len(hyps)):
        raise ValueError("confidences, refs and hyps must have the same length")
    order = sorted(range(n), key=lambda i: confidences[i], reverse=True)  # most confident first
    errs = [char_errors(refs[i], hyps[i]) for i in order]
    # accepted set = the k most confident lines; ties in confidence are accepted or rejected together
    prefix = []
    e = c = 0
    for k, i in enumerate(order):
        e, c = e + errs[k][0], c + errs[k][1]
        last_of_tie = k == n - 1 or confidences[order[k + 1]] != confidences[i]
        if last_of_tie:
            prefix.append((k + 1, confidences[i], e / max(c, 1) if (e or c) else 0.0))
    out = []
    for target in targets:
        best = None
        for accepted, thr, cer_acc in prefix:
            if cer_acc <= target:
                best = (accepted, thr, cer_acc)
        if best is None:
            out.append({"target_cer": target, "threshold": None, "review_share": 1.0, "cer_accepted": None})
        else:
            accepted, thr, cer_acc = best
            out.append({"target_cer": target, "threshold": float(thr), "review_share": (n - accepted) / n if n else 0.0,
                        "cer_accepted": cer_acc})
    return out


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if vx == 0 or vy == 0:
        return None
    return cov / (vx * vy)
