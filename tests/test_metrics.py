"""Every metric against values computed by hand."""

from __future__ import annotations

import pytest

from htr_ray.evaluation import metrics as M


def test_cer_wer_accuracy_by_hand():
    refs = ["kitten", "the cat sat"]
    hyps = ["sitting", "the bat sat down"]
    # kitten->sitting: 3 edits over 6 chars; "the cat sat"->"the bat sat down": c->b (1) + " down" (5) = 6 over 11
    assert M.cer(refs, hyps) == pytest.approx((3 + 6) / (6 + 11))
    # words: [kitten]->[sitting] 1/1; [the cat sat]->[the bat sat down] 2/3
    assert M.wer(refs, hyps) == pytest.approx((1 + 2) / (1 + 3))
    assert M.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75
    assert M.cer([""], ["ab"]) == 2.0 and M.cer([], []) == 0.0
    with pytest.raises(ValueError):
        M.cer(["a"], [])


def test_line_report_and_groups():
    refs = ["abcd", "xy", "hello world", "ok"]
    hyps = ["abed", "xy", "hello word", "ok!"]
    groups = ["cheque", "cheque", "homework", "homework"]
    per = M.by_group(refs, hyps, groups)
    assert list(per) == ["cheque", "homework"]
    assert per["cheque"]["cer"] == pytest.approx(1 / 6)
    assert per["cheque"]["line_accuracy"] == 0.5
    assert per["homework"]["cer"] == pytest.approx(2 / 13)  # 'l' deleted + '!' inserted over 11 + 2
    assert per["homework"]["wer"] == pytest.approx(2 / 3)  # world->word, ok->ok!
    whole = M.line_report(refs, hyps)
    assert whole["char_errors"] == 3 and whole["chars"] == 19 and whole["cer"] == pytest.approx(3 / 19)
    # group counts sum to the whole
    assert sum(g["char_errors"] for g in per.values()) == whole["char_errors"]


def test_alignment_and_confusions():
    ops = M.align_chars("kitten", "sitting")
    assert "".join(op for op, _, _ in ops) == "S===S=I"
    assert ops[0] == ("S", "k", "s") and ops[4] == ("S", "e", "i") and ops[6] == ("I", "", "g")
    assert [op for op, _, _ in M.align_chars("abc", "ac")] == ["=", "D", "="]
    refs = ["rn rn", "cat", "ab"]
    hyps = ["m m", "cot", "abc"]
    c = M.char_confusions(refs, hyps)
    # rn -> m: one substitution and one deletion each time
    assert sum(c["substitutions"].values()) == 3  # r->m twice (or n->m), a->o
    assert c["substitutions"][("a", "o")] == 1
    assert sum(c["deletions"].values()) == 2
    assert c["insertions"]["c"] == 1
    top = M.top_confusions(refs, hyps, k=1)
    assert top["substitutions"][0]["count"] == 2
    # the counted edits always equal the edit distance
    total = sum(sum(v.values()) for v in c.values())
    assert total == sum(M.edit_distance(r, h) for r, h in zip(refs, hyps))


def test_confusion_matrix_and_per_class_report():
    labels = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "c", "c"]
    classes, m = M.confusion_matrix(labels, preds)
    assert classes == ["a", "b", "c"]
    assert m == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rep = M.per_class_report(labels, preds)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    a, b, c = rep["classes"]["a"], rep["classes"]["b"], rep["classes"]["c"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0) and c["f1"] == pytest.approx(2 / 3)
    assert rep["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert rep["weighted"]["recall"] == pytest.approx(4 / 6)  # weighted recall is accuracy
    # a class that is never predicted: precision 0, no division error
    rep2 = M.per_class_report(["x", "y"], ["x", "x"], classes=["x", "y", "z"])
    assert rep2["classes"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rep2["classes"]["z"]["support"] == 0
    with pytest.raises(ValueError):
        M.confusion_matrix(["x"], ["q"], classes=["x"])
    assert M.top_class_confusions(labels, preds) == [{"label": "a", "predicted": "b", "count": 1},
                                                   {"label": "b", "predicted": "c", "count": 1}]


def test_calibration_deciles_and_review_table():
    # 4 lines, 2 bins: the two low-confidence lines are wrong, the two high ones right
    confs = [0.9, 0.2, 0.95, 0.1]
    refs = ["abcd", "abcd", "abcd", "abcd"]
    hyps = ["abcd", "abxx", "abcd", "a"]
    cal = M.calibration(confs, refs, hyps, bins=2)
    low, high = cal["bins"]
    assert (low["conf_min"], low["conf_max"], low["lines"]) == (0.1, 0.2, 2)
    assert low["cer"] == pytest.approx((3 + 2) / 8) and low["line_accuracy"] == 0.0
    assert high["cer"] == 0.0 and high["line_accuracy"] == 1.0
    assert cal["monotonic_violations"] == 0 and cal["spearman"] == pytest.approx(-1.0)
    # review nothing: CER over all; review the lower half: what is left is perfect
    assert cal["review_table"][0] == {"threshold": 0.1, "review_share": 0.0, "cer_accepted": pytest.approx(5 / 16)}
    assert cal["review_table"][1] == {"threshold": 0.9, "review_share": 0.5, "cer_accepted": 0.0}
    # badly calibrated: confident lines are the wrong ones
    bad = M.calibration([0.1, 0.2, 0.9, 0.95], refs, ["abcd", "abcd", "x", "y"], bins=2)
    assert bad["monotonic_violations"] == 1 and bad["spearman"] == pytest.approx(1.0)
    assert M.calibration([], [], [])["lines"] == 0


def test_review_thresholds():
    confs = [0.95, 0.9, 0.8, 0.5, 0.3]
    refs = ["abcd"] * 5
    hyps = ["abcd", "abcd", "abcx", "xxcd", "x"]
    # accepted from the top: 0/4, 0/8, 1/12, 3/16, 6/20
    out = M.review_thresholds(confs, refs, hyps, targets=(0.0, 0.1, 0.2, 0.01))
    assert out[0] == {"target_cer": 0.0, "threshold": 0.9, "review_share": 0.6, "cer_accepted": 0.0}
    assert out[1]["threshold"] == 0.8 and out[1]["review_share"] == pytest.approx(0.4)
    assert out[1]["cer_accepted"] == pytest.approx(1 / 12)
    assert out[2]["threshold"] == 0.5 and out[2]["cer_accepted"] == pytest.approx(3 / 16)
    assert out[3]["threshold"] == 0.9
    # nothing reaches the target: everything goes to review
    none = M.review_thresholds([0.9], ["ab"], ["xy"], targets=(0.05,))
    assert none == [{"target_cer": 0.05, "threshold": None, "review_share": 1.0, "cer_accepted": None}]
