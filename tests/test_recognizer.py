"""The recogniser: checkpoint from any URI, training pre-processing, order and batch independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htr_ray.models import checkpoint
from htr_ray.io import images
from htr_ray.models.charset import Charset
from htr_ray.models import build_model
from htr_ray.recognition.recognizer import CharResult, LineResult, Recognizer

torch.set_num_threads(1)
CHARS = "abcdefghijklmnopqrstuvwxyz .,"


def line_images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        h, w = int(rng.integers(30, 90)), int(rng.integers(60, 600))
        g = np.full((h, w), 235, np.uint8)
        for _ in range(int(rng.integers(3, 12))):  # some dark strokes
            y, x = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 20))
            g[y:y + 4, x:x + int(rng.integers(5, 20))] = int(rng.integers(0, 60))
        out.append(g)
    return out


@pytest.fixture(scope="module")
def line_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cs = Charset(CHARS)
    model = build_model("crnn_small", num_classes=cs.num_ctc_classes)
    uri = str(tmp_path_factory.mktemp("ckpt") / "line")
    checkpoint.save(uri, model, {"charset": cs.to_json(), "metrics": {"note": "random weights"}})
    return uri


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cs = Charset("0123456789")
    model = build_model("char_cnn", num_classes=len(cs))
    uri = str(tmp_path_factory.mktemp("ckpt") / "char")
    checkpoint.save(uri, model, {"charset": cs.to_json()})
    return uri


def test_results_in_input_order_and_independent_of_batching(line_ckpt):
    rec = Recognizer.from_uri(line_ckpt, batch_size=4)
    imgs = line_images(12)
    together = rec.recognize(imgs)
    assert len(together) == 12 and all(isinstance(r, LineResult) for r in together)
    alone = [rec.recognize([g])[0] for g in imgs]
    reverse = rec.recognize(imgs[::-1])[::-1]
    for a, b, c in zip(together, alone, reverse):
        assert a.text == b.text == c.text
        assert a.confidence == pytest.approx(b.confidence, rel=1e-4, abs=1e-7)
    for r in together:
        assert len(r.char_confidences) == len(r.text)
        assert 0.0 <= r.confidence <= 1.0 and all(0.0 <= c <= 1.0 for c in r.char_confidences)
        assert set(r.text) <= set(CHARS)


def test_preprocessing_is_the_training_one(line_ckpt):
    rec = Recognizer.from_uri(line_ckpt)
    model, meta = checkpoint.load(line_ckpt)
    g = line_images(1, seed=3)[0]
    x = images.normalize_line(g, meta["input"]["height"])
    arr, widths = images.pad_batch([x], width_multiple=rec.width_multiple)
    with torch.inference_mode():
        expected = model(torch.from_numpy(arr)).log_softmax(-1)[0, : int(model.output_lengths(widths)[0])].numpy()
    got, errors = rec.log_probs([g])
    assert errors == [None]
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-5)


def test_bad_images_are_results_not_exceptions(line_ckpt):
    rec = Recognizer.from_uri(line_ckpt)
    good = line_images(2)
    out = rec.recognize([good[0], None, np.zeros((1, 7), np.uint8), good[1], np.zeros((0, 0), np.uint8)])
    assert [r.error is None for r in out] == [True, False, False, True, False]
    assert out[1].text == "" and out[1].confidence == 0.0 and "empty" in out[1].error
    assert out[0].text == rec.recognize([good[0]])[0].text
    # colour and 16-bit images are converted to gray first
    colour = np.stack([good[0]] * 3, axis=-1)
    assert rec.recognize([colour])[0].text == out[0].text


def test_beam_decoder_with_lexicon_and_lm(line_ckpt, tmp_path):
    from htr_ray.recognition.lm import CharNgramLM

    words = tmp_path / "words.txt"
    words.write_text("aspirin\nibuprofen\ntake\n")
    lm_path = str(tmp_path / "lm.json")
    CharNgramLM.train(["take aspirin daily", "take ibuprofen"], order=3).save(lm_path)
    rec = Recognizer.from_uri(line_ckpt, decoder="beam", lexicon=str(words), lm=lm_path,
                              beam_options={"beam_width": 4})
    assert rec.decoder_kind == "beam"
    out = rec.recognize(line_images(3))
    assert len(out) == 3 and all(len(r.char_confidences) == len(r.text) for r in out)


def test_checkpoint_from_s3(line_ckpt, s3_bucket):
    model, meta = checkpoint.load(line_ckpt)
    uri = f"{s3_bucket}/models/line"
    checkpoint.save(uri, model, {"charset": meta["charset"]})
    imgs = line_images(3)
    assert [r.text for r in Recognizer.from_uri(uri).recognize(imgs)] == \
        [r.text for r in Recognizer.from_uri(line_ckpt).recognize(imgs)]


def test_classifier_checkpoint(char_ckpt):
    rec = Recognizer.from_uri(char_ckpt)
    assert rec.kind == "char"
    rng = np.random.default_rng(0)
    digits = [np.where(rng.random((28, 28)) < 0.2, 0, 255).astype(np.uint8) for _ in range(5)]
    out = rec.classify(digits + [None], top_k=3)
    assert all(isinstance(r, CharResult) for r in out)
    for r in out[:5]:
        assert r.label in "0123456789" and len(r.top) == 3
        assert r.top[0] == (r.label, pytest.approx(r.confidence))
        assert r.top[0][1] >= r.top[1][1] >= r.top[2][1] and sum(p for _, p in r.top) <= 1 + 1e-6
    assert out[5].error and out[5].label == ""
    # recognize on a classifier reads each image as one character; classify refuses line models
    assert [r.text for r in rec.recognize(digits)] == [r.label for r in out[:5]]
    assert rec(digits)[0].label == out[0].label
    with pytest.raises(TypeError):
        rec.log_probs(digits)
