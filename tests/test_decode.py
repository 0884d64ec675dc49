"""CTC decoding: greedy, beam search, lexicon, character LM, confidences (all on hand-built log-probs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import os

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


# ------------------------------------------------------------------- compiled search and LM tables


def _peaky(rng: np.random.Generator, text: str, charset: str, confuse: float = 0.3) -> np.ndarray:
    """CTC-like outputs for ``text``: blank frames between 1-2 character frames; some characters have
    a look-alike nearly as probable, some frames are noisy (so the beam has real choices to make)."""
    C = len(charset) + 1
    rows = []
    for ch in text:
        z = rng.normal(0, 1.0, C)
        z[charset.index(ch) + 1] += rng.uniform(3, 8)
        if rng.random() < confuse:
            z[int(rng.integers(1, C))] += rng.uniform(3, 7)
        rows += [z] * int(rng.integers(1, 3))
        b = rng.normal(0, 1.0, C)
        b[0] += rng.uniform(2, 9)
        rows.append(b)
    z = np.stack(rows)
    return (z - np.logaddexp.reduce(z, axis=1, keepdims=True)).astype(np.float32)


def test_compiled_search_decodes_as_the_python_one():
    """The numba search (engine "auto") and the Python reference return the same n-best lists, scores,
    line, character and acoustic confidences, with and without an LM, across beam settings."""
    from htr_ray.recognition import fast_beam

    if not fast_beam.AVAILABLE:
        pytest.skip("numba is not installed")
    lines = ["take two tablets daily", "one hundred and twenty five", "the cat sat on the mat",
             "amoxicillin 500 mg three times a day", "twenty two dollars and 10 cents"]
    lm = CharNgramLM.train(lines * 3, order=4)
    rng = np.random.default_rng(1)
    texts = lines + ["take one tablet", "the mat sat on a cat", "five hundred mg", "zq 9.9 - x"]
    n_differ = 0
    for text in texts:
        lp = _peaky(rng, text, CHARSET)
        for opts in ({}, {"lm": lm}, {"lm": lm, "beam_width": 4, "histogram_prune": False},
                     {"lm": lm.compile(), "lm_weight": 1.2, "char_bonus": 1.0, "blank_skip": 0.9},
                     {"beam_width": 32, "top_k": 3, "prune": 5.0}):
            py = beam_search(lp, CHARSET, engine="python", **opts)
            fast = beam_search(lp, CHARSET, **opts)
            assert [c for c, _ in fast.candidates] == [c for c, _ in py.candidates], (text, opts)
            assert [s for _, s in fast.candidates] == pytest.approx([s for _, s in py.candidates], abs=1e-9)
            assert fast.text == py.text and fast.confidence == pytest.approx(py.confidence, abs=1e-9)
            assert fast.char_confidences == pytest.approx(py.char_confidences, abs=1e-9)
            assert fast.acoustic_confidences == pytest.approx(py.acoustic_confidences, abs=1e-9)
            n_differ += fast.text != greedy(lp, CHARSET).text
    assert n_differ >= 5  # the outputs are ambiguous enough for the search to matter
    with pytest.raises(ValueError, match="engine"):
        beam_search(lp, CHARSET, engine="gpu")


def test_ahead_of_time_kernels_decode_as_numba_without_loading_it():
    """scripts/setup builds the kernels ahead of time (fast_beam.main): a fresh process decodes the
    shipped model's lines with beam + LM through the extension, imports neither numba nor LLVM, and
    gets what the numba kernels give (HTR_BEAM_ENGINE=jit)."""
    import json as _json
    import subprocess
    import sys

    from htr_ray.recognition import fast_beam

    assert fast_beam._load_aot() is not None, ("the ahead-of-time beam search is missing or stale: run "
                                               "`python -m htr_ray.recognition.fast_beam` (scripts/setup does)")
    code = """
import json, sys
import numpy as np
from htr_ray.recognition import fast_beam
from htr_ray.recognition.decode import beam_search
from htr_ray.recognition.lm import CharNgramLM
charset = "abcdefghijklmnopqrstuvwxyz ."
rng = np.random.default_rng(3)
lm = CharNgramLM.train(["take two tablets daily", "the cat sat on the mat"] * 3, order=4).compile()
out = []
for _ in range(6):
    z = rng.normal(0, 2.0, (40, len(charset) + 1))
    z[:, 0] += rng.uniform(0, 4, 40)
    lp = (z - np.logaddexp.reduce(z, axis=1, keepdims=True)).astype(np.float32)
    for opts in ({}, {"lm": lm, "beam_width": 8}):
        d = beam_search(lp, charset, **opts)
        out.append([d.candidates, d.char_confidences, d.acoustic_confidences])
print(json.dumps({"engine": fast_beam.ENGINE, "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules,
                  "out": out}))
"""
    runs = {}
    for engine in ("auto", "jit"):
        env = {**os.environ, "HTR_BEAM_ENGINE": engine}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[engine] = _json.loads(proc.stdout.strip().splitlines()[-1])
    assert (runs["auto"]["engine"], runs["auto"]["numba"], runs["auto"]["llvmlite"]) == ("aot", False, False)
    assert runs["jit"]["engine"] == "jit" and runs["jit"]["numba"]
    for (cands_a, chars_a, ac_a), (cands_j, chars_j, ac_j) in zip(runs["auto"]["out"], runs["jit"]["out"], strict=True):
        assert [t for t, _ in cands_a] == [t for t, _ in cands_j]
        assert [sc for _, sc in cands_a] == pytest.approx([sc for _, sc in cands_j], abs=1e-9)
        assert chars_a == pytest.approx(chars_j, abs=1e-9) and ac_a == pytest.approx(ac_j, abs=1e-9)


def test_a_stale_ahead_of_time_build_is_not_used(monkeypatch):
    """After fast_beam.py changes, the extension built from the old file is ignored until rebuilt."""
    from htr_ray.recognition import fast_beam

    monkeypatch.setattr(fast_beam, "source_id", lambda: -1)
    assert fast_beam._load_aot() is None


def test_compiled_lm_scores_as_the_counts_and_round_trips(tmp_path):
    from htr_ray.recognition.lm import CompiledLM, load_lm

    lines = ["the cat sat on the mat", "a cat and a hat", "one hundred and twenty", "Pay $42.10 only"]
    probes = ["the mat", "qqq", "one hundred", "", "Ünïcode?", "a cat and a hat and a cat"]
    for order in (1, 2, 4, 6):
        for smoothing in ("kn", "wb"):
            lm = CharNgramLM.train(lines, order=order, smoothing=smoothing)
            compiled = lm.compile()
            back = CompiledLM.from_bytes(compiled.to_bytes())
            for text in probes:
                assert compiled.score(text) == pytest.approx(lm.score(text), abs=1e-9), (order, smoothing, text)
                assert back.score(text) == pytest.approx(lm.score(text), rel=1e-6)  # float32 on disk
    lm.save(str(tmp_path / "lm.json"))
    compiled.save(str(tmp_path / "lm.npz"))
    for name in ("lm.json", "lm.npz"):
        loaded = load_lm(str(tmp_path / name))
        assert loaded.order == 6 and loaded.score("the cat") == pytest.approx(lm.score("the cat"), rel=1e-6)


def test_lm_file_missing_or_corrupt_fails_naming_it(tmp_path):
    from htr_ray.recognition.lm import LMError, load_lm

    good = tmp_path / "good.npz"
    CharNgramLM.train(["one two three"], order=3).compile().save(str(good))
    bad_cases = {"missing.npz": None, "truncated.npz": good.read_bytes()[:200], "garbage.json": b"{not json",
                 "other.json": b'{"format": "something-else/1"}', "empty.npz": b""}
    for name, data in bad_cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(LMError, match=str(path)):
            load_lm(str(path))
        with pytest.raises(LMError, match=str(path)):
            make_decoder("beam", CHARSET, lm=str(path))


def _copy_model(tmp_path, name="model"):
    import shutil

    from htr_ray import paths

    src = paths.shipped_model("en_line_crnn_small")
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_a_model_whose_lm_is_missing_or_corrupt_fails_at_load_naming_the_file(tmp_path):
    from htr_ray.recognition.lm import LMError
    from htr_ray.recognition.spec import RecognizerSpec

    model = _copy_model(tmp_path)
    lm_name = json.loads((model / "model.json").read_text())["decoding"]["lm"]
    (model / lm_name).write_bytes((model / lm_name).read_bytes()[:1000])  # a broken download
    with pytest.raises(LMError, match=str(model / lm_name)):
        RecognizerSpec(model=str(model), decoder="beam").build()
    (model / lm_name).unlink()
    with pytest.raises(LMError, match=f"{model / lm_name}.*cannot be read"):
        RecognizerSpec(model=str(model), decoder="beam").build()
    # greedy decoding does not read the LM, so it still loads
    assert RecognizerSpec(model=str(model), decoder="greedy").build().decoder_kind == "greedy"


def test_bad_checkpoints_fail_at_load_naming_the_file(tmp_path):
    from htr_ray.models.checkpoint import CheckpointError
    from htr_ray.recognition.spec import RecognizerSpec

    def edited(name, change):
        model = _copy_model(tmp_path, name)
        meta = json.loads((model / "model.json").read_text())
        change(meta)
        (model / "model.json").write_text(json.dumps(meta))
        return model

    unknown = edited("unknown", lambda m: m.update(architecture="crnn_gigantic"))
    with pytest.raises(CheckpointError, match=f"{unknown / 'model.json'}.*unknown model 'crnn_gigantic'"):
        RecognizerSpec(model=str(unknown), decoder="greedy").build()
    short = edited("short", lambda m: m.update(charset=m["charset"][:-3]))
    with pytest.raises(CheckpointError, match=f"{short / 'model.json'}.*charset has 84 characters.*88"):
        RecognizerSpec(model=str(short), decoder="greedy").build()
    wider = edited("wider", lambda m: m["params"].update(lstm_hidden=64))
    with pytest.raises(CheckpointError, match=f"{wider / 'weights.pt'}: the weights do not fit"):
        RecognizerSpec(model=str(wider), decoder="greedy").build()


def _iam_folder(root, lines: dict[str, str]):
    """An IAM-style folder (labels.tsv + one small PNG per line)."""
    import cv2

    (root / "images").mkdir(parents=True)
    rows = ["line_id\timage\ttranscription"]
    for line_id, text in lines.items():
        img = np.full((20, 60), 255, np.uint8)
        cv2.putText(img, "ab", (2, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1)
        cv2.imwrite(str(root / "images" / f"{line_id}.png"), img)
        rows.append(f"{line_id}\timages/{line_id}.png\t{text}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n")


def test_lm_build_reads_train_forms_only_and_adds_domain_texts(tmp_path):
    """python -m htr_ray.recognition.lm --iam DIR --domain: the text of train forms (the training
    loader's split rule), without a line sharing a word trigram with a val/test line, plus lexicons'
    domain texts; written as compiled tables that record what they were built from."""
    import zlib

    from htr_ray.recognition.lm import load_lm, main

    forms = {"train": [], "test": []}
    for i in range(1000):  # the split rule: crc32(form) % 100 < 5 test, < 10 val, else train
        f = f"z{i:03d}-000"
        v = zlib.crc32(f.encode()) % 100
        forms["test" if v < 5 else "val" if v < 10 else "train"].append(f) if v < 5 or v >= 10 else None
    tr1, tr2, te = forms["train"][0], forms["train"][1], forms["test"][0]
    _iam_folder(tmp_path / "iam", {f"{tr1}-01": "quick brown foxes jump", f"{tr1}-02": "the held out sentence here",
                                   f"{tr2}-01": "quick brown foxes jump again", f"{te}-01": "a held out sentence is secret"})
    out = tmp_path / "lm.npz"
    assert main(["--iam", str(tmp_path / "iam"), "--domain", "--order", "4", "--out", str(out)]) == 0
    lm = load_lm(str(out))
    assert lm.source["iam"]["train_lines"] == 3 and lm.source["iam"]["kept_lines"] == 2
    assert lm.source["domain_texts"]["lines"] > 1000
    def per_char(text):
        return lm.score(text) / (len(text) + 1)

    # train text in; the train line that shares a trigram with a test line out, and the test line too
    assert per_char("quick brown foxes jump") > per_char("the held out sentence here") + 0.5
    assert per_char("quick brown foxes jump") > per_char("a held out sentence is secret") + 0.5
    assert lm.score("Amoxicillin 500 mg") > lm.score("Amoxicilin 500 mg")  # the domain texts are in


def test_shipped_model_ships_its_lm_and_beam_finds_it():
    """models/en_line_crnn_small names its LM and the beam options it was tuned with; asking for beam
    search is enough to get them."""
    from htr_ray import paths
    from htr_ray.recognition.lm import load_lm
    from htr_ray.recognition.spec import RecognizerSpec

    model = Path(paths.shipped_model("en_line_crnn_small"))
    meta = json.loads((model / "model.json").read_text())
    dec = meta["decoding"]
    assert dec["decoder"] in ("greedy", "beam") and set(dec["beam_options"]) >= {"beam_width", "lm_weight", "char_bonus"}
    lm_file = model / dec["lm"]
    assert lm_file.stat().st_size < 4_000_000  # downloads in seconds
    lm = load_lm(str(lm_file))
    assert lm.order >= 5 and set(meta["charset"]) - lm.vocab <= set("#&*+")
    assert lm.source["iam"]["exclude_heldout_trigrams"] and lm.source["domain_texts"]["lines"] > 0
    rec = RecognizerSpec(model=str(model), decoder="beam").build()
    rng = np.random.default_rng(0)
    lp = _peaky(rng, "the cat sat on the mat", "".join(meta["charset"]))
    expected = beam_search(lp, "".join(meta["charset"]), lm=lm, **dec["beam_options"])
    assert rec.decode(lp).text == expected.text and rec.decode(lp).candidates == expected.candidates


def test_a_configs_beam_width_is_kept():
    """beam_search(config=BeamConfig(beam_width=2)) searches 2 beams (it used to be reset to 16)."""
    lp = frames([{"a": 0.4, "b": 0.35, "c": 0.25}, {"_": 0.9}, {"a": 0.4, "b": 0.35, "c": 0.25}])
    for engine in ("python", "auto"):
        assert len(beam_search(lp, CHARSET, config=BeamConfig(beam_width=2, engine=engine, nbest=99)).candidates) == 2
        assert len(beam_search(lp, CHARSET, config=BeamConfig(beam_width=2, engine=engine, nbest=99),
                               beam_width=5).candidates) == 5
