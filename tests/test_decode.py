"""CTC decoding: greedy, beam search, lexicon, character LM, confidences (all on hand-built log-probs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from htr_ray.recognition.decode import BeamConfig, Lexicon, align, beam_search, decode_batch, greedy, make_decoder
from htr_ray.recognition.lm import CharNgramLM

CHARSET = "abcdefghijklmnopqrstuvwxyz 0123456789.-"


def frames(spec: list[dict[str, float]], charset: str = CHARSET, floor: float = 1e-4) -> np.ndarray:
    """(T, C) log-probs from one dict per frame: {'_': blank prob, 'a': prob, ...}; the rest of the mass
    is spread thinly over the other classes so every class has a finite log-probability."""
    C = len(charset) + 1
    out = np.full((len(spec), C), floor, dtype=np.float64)
    for t, d in enumerate(spec):
        for k, p in d.items():
            out[t, 0 if k == "_" else charset.index(k) + 1] = p
        out[t] /= out[t].sum()
    return np.log(out).astype(np.float32)


def spell(text: str, p: float = 0.9) -> list[dict[str, float]]:
    """A clean rendition: each character on one frame followed by a blank frame."""
    spec = []
    for ch in text:
        spec += [{ch: p, "_": 1 - p}, {"_": p, ch: 1 - p}]
    return spec


def doubled_l_ambiguous(word_before: str, word_after: str) -> list[dict[str, float]]:
    """'...l?l...' where the frame between the two l's is more probably 'l' than blank: greedy merges the
    l's into one, a lexicon that knows the double l should restore it."""
    return spell(word_before)[:-1] + [{"l": 0.6, "_": 0.4}] + [{"l": 0.9, "_": 0.1}, {"_": 0.9}] + spell(word_after)


def test_greedy_merges_repeats_and_removes_blanks():
    lp = frames([{"a": 0.9}, {"a": 0.8}, {"_": 0.9}, {"a": 0.7}, {"b": 0.6}, {"_": 0.99}])
    out = greedy(lp, CHARSET)
    assert out.text == "aab"
    # char confidence = best frame probability of that character (renormalised by frames())
    probs = np.exp(lp)
    assert out.char_confidences == pytest.approx([probs[0, 1], probs[3, 1], probs[4, 2]], rel=1e-5)
    # line confidence = mean of the character confidences; an empty line: geometric mean of the frames
    assert out.confidence == pytest.approx(np.mean(out.char_confidences), rel=1e-5)
    empty = frames([{"_": 0.9}, {"_": 0.8}])
    assert greedy(empty, CHARSET).confidence == pytest.approx(math.exp(np.mean(empty.max(axis=1))), rel=1e-5)


def test_beam_without_lm_agrees_with_greedy_on_a_clean_line():
    lp = frames(spell("take two daily"))
    assert greedy(lp, CHARSET).text == "take two daily"
    out = beam_search(lp, CHARSET, beam_width=8)
    assert out.text == "take two daily"
    assert out.candidates[0][0] == "take two daily"
    # the acoustic confidences of the chosen text are greedy's when both read the same path
    g = greedy(lp, CHARSET)
    assert out.acoustic_confidences == pytest.approx(g.char_confidences, rel=1e-4)
    # the beam's line confidence is the chosen text's posterior among all final beams (<= among the top 5);
    # here every character could be dropped with odds 1:9, so the whole line is only ~60 % sure while
    # each character is ~90 % sure
    scores = np.array([s for _, s in out.candidates])
    assert out.confidence <= float(np.exp(scores[0]) / np.exp(scores).sum()) + 1e-6
    assert 0.5 < out.confidence < 0.7
    assert all(0.85 < c <= 1.0 for c in out.char_confidences)


def test_beam_sums_paths_where_greedy_does_not():
    # the best single path is blank-blank (0.36), but the paths that read 'a' sum to 0.64
    lp = frames([{"_": 0.6, "a": 0.4}, {"_": 0.6, "a": 0.4}])
    assert greedy(lp, CHARSET).text == ""
    out = beam_search(lp, CHARSET, beam_width=8, top_k=3, min_prob=1e-3)
    assert out.text == "a"
    pb, pa = np.exp(lp[0, 0]), np.exp(lp[0, 1])  # the exact (renormalised) frame probabilities
    assert out.candidates[0][1] == pytest.approx(math.log(pa * pa + 2 * pa * pb), abs=1e-4)
    assert out.candidates[1][0] == ""
    assert out.candidates[1][1] == pytest.approx(math.log(pb * pb), abs=1e-4)


def test_lexicon_corrects_a_word_greedy_gets_wrong():
    lp = frames(doubled_l_ambiguous("take amoxicil", "in daily"))
    assert greedy(lp, CHARSET).text == "take amoxicilin daily"  # not a word
    assert beam_search(lp, CHARSET).text == "take amoxicilin daily"  # the CTC evidence alone agrees
    lex = Lexicon(["amoxicillin", "take", "daily", "twice"])
    out = beam_search(lp, CHARSET, lexicon=lex)
    assert out.text == "take amoxicillin daily"
    assert len(out.char_confidences) == len(out.text)
    # without a lexicon the beam is unsure between the two spellings: low posterior there
    plain = beam_search(lp, CHARSET)
    assert plain.confidence < 0.75  # (a missing character shows in the line, not in a character's confidence)
    assert out.confidence > plain.confidence  # the lexicon settles it


def test_lexicon_constrain_mode_and_free_digits():
    spec = spell("take 2 asprin")
    spec[2 * len("take 2 asp") - 1] = {"_": 0.7, "i": 0.2, "p": 0.1}  # faint evidence of the 'i'
    lp = frames(spec)
    assert greedy(lp, CHARSET).text == "take 2 asprin"
    lex = Lexicon(["take", "aspirin"])
    # digits and spaces are outside the lexicon's alphabet: they pass freely in both modes
    assert beam_search(lp, CHARSET, lexicon=lex).text == "take 2 aspirin"
    assert beam_search(lp, CHARSET, lexicon=lex, lexicon_mode="constrain").text == "take 2 aspirin"
    # a word with no lexicon reading nearby: favour keeps it, constrain cannot produce it
    lp2 = frames(spell("take 2 tablets"))
    assert beam_search(lp2, CHARSET, lexicon=lex).text == "take 2 tablets"
    forced = beam_search(lp2, CHARSET, lexicon=lex, lexicon_mode="constrain").text
    assert forced != "take 2 tablets" and forced.startswith("take 2")
    assert all(word.isdigit() or word in lex for word in forced.split())


def test_lexicon_words_case_insensitive_and_nearest():
    lex = Lexicon(["Aspirin", "ibuprofen"])
    assert "ASPIRIN" in lex and "aspirin" in lex and "aspirn" not in lex
    assert lex.nearest("ibuprofin") == ("ibuprofen", 1)
    assert lex.nearest("zzzzzzzzzzzzzzz", max_distance=2)[0] is None


def test_char_lm_steers_an_ambiguous_character():
    lines = ["one two three four five"] * 20 + ["two hundred", "twenty two"] * 10
    lm = CharNgramLM.train(lines, order=4)
    spec = spell("one tw") + [{"a": 0.55, "o": 0.45}, {"_": 0.9}] + spell(" three")
    lp = frames(spec)
    assert greedy(lp, CHARSET).text == "one twa three"
    assert beam_search(lp, CHARSET, lm=lm, lm_weight=0.8).text == "one two three"


def test_lm_is_normalised_and_round_trips(tmp_path):
    lines = ["the cat sat on the mat", "a cat and a hat", "one hundred and twenty"]
    for smoothing in ("kn", "wb"):
        lm = CharNgramLM.train(lines, order=4, smoothing=smoothing)
        vocab = sorted(lm.vocab) + ["\x03"]
        for history in ["", "the c", "zzz", "and a "]:
            total = sum(math.exp(lm.logprob(history, ch)) for ch in vocab)
            assert 0.97 < total <= 1.0 + 1e-9  # what is missing is the unknown-character mass
        assert lm.score("the cat") > lm.score("teh cta")
        path = str(tmp_path / f"lm-{smoothing}.json")
        lm.save(path)
        back = CharNgramLM.load(path)
        assert back.order == 4 and back.smoothing == smoothing and back.vocab == lm.vocab
        for text in ["the mat", "qqq", "one hundred"]:
            assert back.score(text) == pytest.approx(lm.score(text), abs=1e-12)


def test_lm_cli_trains_from_a_file(tmp_path):
    from htr_ray.recognition.lm import main

    text = tmp_path / "amounts.txt"
    text.write_text("one hundred\ntwo hundred and five\nfifty\n")
    out = tmp_path / "lm.json"
    assert main(["--train", str(text), "--order", "3", "--out", str(out)]) == 0
    lm = CharNgramLM.load(str(out))
    assert lm.order == 3 and "h" in lm.vocab


def test_align_reproduces_greedy_confidences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, len(CHARSET) + 1)) * 3
    lp = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)
    g = greedy(lp, CHARSET)
    mean_lp, confs = align(lp, [CHARSET.index(c) + 1 for c in g.text])
    assert mean_lp == pytest.approx(float(lp.max(axis=1).mean()), rel=1e-5)
    assert confs == pytest.approx(g.char_confidences, rel=1e-5)
    # too few frames for the labels: impossible alignment
    assert align(lp[:2], [1, 2, 3])[0] == float("-inf")


def test_make_decoder_and_batch(tmp_path):
    words = tmp_path / "drugs.txt"
    words.write_text("amoxicillin\ntake\ndaily\n")
    lp = frames(doubled_l_ambiguous("take amoxicil", "in daily"))
    batch = np.stack([lp, lp])
    dec = make_decoder("beam", CHARSET, lexicon=str(words))
    outs = decode_batch(batch, [len(lp), len(lp)], dec)
    assert [o.text for o in outs] == ["take amoxicillin daily"] * 2
    assert make_decoder("greedy", CHARSET)(lp).text == "take amoxicilin daily"
    with pytest.raises(ValueError):
        make_decoder("viterbi", CHARSET)
    with pytest.raises(ValueError):
        beam_search(lp[:, :5], CHARSET)  # wrong number of classes
    assert BeamConfig().beam_width == 16


def test_builtin_lexicons():
    drugs = Lexicon.from_file("builtin:drugs")
    assert "amoxicillin" in drugs and "Metformin" in drugs and len(drugs) > 50
    rx = Lexicon.from_file("builtin:prescription")
    assert "bid" in rx and "tablet" in rx and "lisinopril" in rx
    assert not any(rx.is_word_char(ch) for ch in "0123456789.:-/")
    assert "thirty" in Lexicon.from_file("builtin:cheque")
    with pytest.raises(ValueError):
        Lexicon.from_file("builtin:nothing")
