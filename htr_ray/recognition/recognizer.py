"""The one recogniser: checkpoint -> batch of images -> text with confidences.

Evaluation, the bulk transcription job and the Serve deployment all call :meth:`Recognizer.recognize`
(or :meth:`Recognizer.classify` for character classifiers), so one image gives one answer everywhere.

    rec = Recognizer.from_uri("s3://bucket/models/line", decoder="beam", lexicon="drugs.txt", lm="lm.json")
    results = rec.recognize([gray1, gray2])        # 2-D uint8 gray images of any size
    results[0].text, results[0].confidence, results[0].char_confidences

Pre-processing is exactly the training one (:func:`htr_ray.io.images.normalize_line` at the checkpoint's
height, :func:`htr_ray.io.images.pad_batch` with zeros on the right; :func:`htr_ray.io.images.normalize_char`
for classifiers). Lines are sorted by width and batched, so a batch wastes little padding (and the
backward LSTM sees little of it); by default a batch holds only lines of one padded width, so that a
line's result does not depend on what it was batched with; results come back in input order. An image that cannot be used
gives a result with ``error`` set (and empty text), never an exception for the whole batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from htr_ray.io import images
from htr_ray.recognition.decode import Decoded, make_decoder

log = logging.getLogger(__name__)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis in float32 (torch's formula: x - max - log(sum(exp(x - max))))."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class LineResult:
    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    error: str | None = None  # why this image could not be read (then text is "")

    def to_dict(self) -> dict:
        return {"text": self.text, "confidence": self.confidence, "char_confidences": self.char_confidences,
                "error": self.error}


@dataclass
class CharResult:
    label: str
    confidence: float
    top: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), best first
    error: str | None = None

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": self.confidence, "top": [list(t) for t in self.top],
                "error": self.error}


class Recognizer:
    """A loaded model with its pre-processing and decoder. Build with :meth:`from_uri`."""

    def __init__(self, model, meta: dict, device: str = "cpu", decoder: str = "greedy", lexicon=None, lm=None,
                 batch_size: int = 32, max_batch_pixels: int = 4_000_000, beam_options: dict | None = None,
                 uri: str | None = None, exact_batches: bool = True, width_bucket: int = 32):
        self.model = model
        self.meta = meta
        self.uri = uri
        # A runner with numpy in and out (ONNX Runtime) is called with numpy arrays, and torch is never
        # imported: a replica or actor that runs ONNX does not pay torch's ~200 MB of RSS.
        self.numpy_io = bool(getattr(model, "numpy_io", False))
        if self.numpy_io:
            self.torch = None
            self.device = device
        else:
            import torch

            self.torch = torch
            self.device = torch.device(device)
        self.kind = meta.get("kind", getattr(model, "kind", "line"))
        self.charset = list(meta["charset"])
        spec = meta.get("input", {})
        if self.kind == "line":
            self.height = int(spec.get("height") or getattr(model, "input_height"))
            self.max_width = int(spec.get("max_width", 2048))
            # Every line is padded to a multiple of ``width_bucket`` pixels whatever batch it lands in, so
            # its result never depends on its neighbours; a coarser bucket lets more lines share a batch
            # (bench/serve_load.py) for a few frames of extra padding (CER effect in docs/decoding.md).
            self.width_multiple = max(8, int(width_bucket))
        else:
            self.size = int(spec.get("size") or getattr(model, "input_size"))
        self.batch_size = max(1, int(batch_size))
        self.max_batch_pixels = max_batch_pixels
        self.exact_batches = exact_batches
        self.decoder_kind = decoder if (lexicon is None and lm is None) else "beam"
        self.decode = make_decoder(decoder, self.charset, lexicon=lexicon, lm=lm, **(beam_options or {})) \
            if self.kind == "line" else None
        self.model.to(self.device).eval()

    @classmethod
    def from_uri(cls, uri: str, device: str = "cpu", decoder: str = "greedy", lexicon=None, lm=None,
                 backend: str | None = None, quantize: str | None = None, threads: int | None = None,
                 **kwargs) -> "Recognizer":
        """Load a checkpoint directory (local path, ``file://`` or ``s3://``). ``lexicon``: list of words
        or URI of a word-per-line file; ``lm``: :class:`htr_ray.recognition.lm.CharNgramLM` or URI of its JSON.

        An exported directory (:mod:`htr_ray.export`: ONNX or TorchScript) is detected and run with its
        own backend; ``backend="onnx"``/``"torchscript"`` runs a checkpoint that way (exported in memory),
        ``quantize="int8"`` quantises dynamically, ``threads`` sets onnxruntime's intra-op threads.
        Pre-processing, batching and decoding are the same for every backend."""
        from htr_ray.recognition import export

        if backend in (None, "torch") and quantize is None and not export.is_exported(uri):
            from htr_ray.models import checkpoint

            model, meta = checkpoint.load(uri, device=device)
        else:
            model, meta = export.load(uri, backend=backend, quantize=quantize, threads=threads, device=device)
        return cls(model, meta, device=device, decoder=decoder, lexicon=lexicon, lm=lm, uri=uri, **kwargs)

    @classmethod
    def from_spec(cls, spec) -> "Recognizer":
        """Build from a :class:`htr_ray.recognition.spec.RecognizerSpec`. Fields left ``None`` take the
        model's own defaults from ``model.json`` ``"decoding"`` (``decoder``, ``lm``: a file beside the
        model, and beam options), then the library's."""
        from htr_ray.recognition import export

        uri = spec.model
        if spec.backend in (None, "torch") and spec.quantize is None and not export.is_exported(uri):
            from htr_ray.models import checkpoint

            model, meta = checkpoint.load(uri, device=spec.device)
        else:
            model, meta = export.load(uri, backend=spec.backend, quantize=spec.quantize, threads=spec.threads,
                                      device=spec.device)
        chosen = spec.resolved(meta)  # the model's decoding defaults, then the library's: one rule
        decoder = chosen.decoder
        lm = None if chosen.lm in (None, "", "none") else chosen.lm
        beam_options = chosen.beam_options()
        if spec.threads and not getattr(model, "numpy_io", False):  # onnxruntime got its threads above
            import torch

            torch.set_num_threads(int(spec.threads))
        return cls(model, meta, device=spec.device, decoder=decoder, lexicon=spec.lexicon, lm=lm, uri=uri,
                   beam_options=beam_options if decoder == "beam" or spec.lexicon or lm else None,
                   width_bucket=spec.width_bucket, batch_size=spec.batch_size)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.meta.get("architecture", "model")

    def describe(self) -> dict:
        return {"uri": self.uri, "architecture": self.meta.get("architecture"), "kind": self.kind,
                "charset_size": len(self.charset), "decoder": self.decoder_kind,
                "input": self.meta.get("input"), "backend": self.meta.get("backend", "torch"),
                "quantize": self.meta.get("quantize")}

    # -------------------------------------------------------------------------------- internals

    def _prepare(self, gray) -> np.ndarray:
        if gray is None:
            raise images.ImageError("empty", "no image")
        g = np.asarray(gray)
        if g.ndim == 3:
            g = images.to_gray(g)
        if g.ndim != 2 or min(g.shape) < images.MIN_SIDE:
            raise images.ImageError("too_small", f"image of shape {g.shape} cannot be read")
        if g.dtype != np.uint8:
            g = images.to_gray(g)
        if self.kind == "line":
            return images.normalize_line(g, self.height, max_width=self.max_width)
        return images.normalize_char(g, self.size)

    def _prepare_all(self, imgs: Sequence) -> tuple[list[np.ndarray | None], list[str | None]]:
        xs: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for g in imgs:
            try:
                xs.append(self._prepare(g))
                errors.append(None)
            except Exception as exc:  # bad input is data: one error result, the batch goes on
                xs.append(None)
                errors.append(f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}")
        return xs, errors

    def _line_batches(self, xs: list[np.ndarray | None]) -> list[list[int]]:
        """Indices of usable lines grouped by width (sorted), each batch within the size limits.

        With ``exact_batches`` (the default) a batch only holds lines of the same padded width (their
        width rounded up to ``width_bucket``), so a line is read exactly as it would be alone: the bulk
        job and Serve, which batch differently, give the same answer for the same image."""
        ok = [i for i, x in enumerate(xs) if x is not None]
        ok.sort(key=lambda i: xs[i].shape[1])
        m = self.width_multiple
        padded = {i: -(-xs[i].shape[1] // m) * m for i in ok}
        batches, cur, cur_w = [], [], 0
        for i in ok:
            w = padded[i]
            if cur and (len(cur) >= self.batch_size or (len(cur) + 1) * max(cur_w, w) * self.height > self.max_batch_pixels
                        or (self.exact_batches and w != cur_w)):
                batches.append(cur)
                cur, cur_w = [], 0
            cur.append(i)
            cur_w = max(cur_w, w)
        if cur:
            batches.append(cur)
        return batches

    def log_probs(self, imgs: Sequence) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Per image the (T, C) CTC log-probabilities (None where the image was unusable) and the
        errors. What :meth:`recognize` decodes; exposed for benchmarks and custom decoders."""
        if self.kind != "line":
            raise TypeError("log_probs is for line (CTC) models")
        xs, errors = self._prepare_all(imgs)
        out: list[np.ndarray | None] = [None] * len(xs)
        if self.numpy_io:
            for batch in self._line_batches(xs):
                arr, widths = images.pad_batch([xs[i] for i in batch], width_multiple=self.width_multiple)
                logits, lengths = self.model.run(arr, widths)
                lp = _log_softmax(logits)
                for k, i in enumerate(batch):
                    out[i] = lp[k, : min(int(lengths[k]), lp.shape[1])]
            return out, errors
        torch = self.torch
        with torch.inference_mode():
            for batch in self._line_batches(xs):
                arr, widths = images.pad_batch([xs[i] for i in batch], width_multiple=self.width_multiple)
                logits = self.model(torch.from_numpy(arr).to(self.device))
                lp = logits.float().log_softmax(-1).cpu().numpy()
                lengths = self.model.output_lengths(widths).tolist()
                for k, i in enumerate(batch):
                    out[i] = lp[k, : min(int(lengths[k]), lp.shape[1])]
        return out, errors

    # ----------------------------------------------------------------------------------- public

    def recognize(self, imgs: Sequence) -> list[LineResult]:
        """Read text lines (2-D uint8 gray, ink dark, any size). For a classifier checkpoint each
        image is read as one character (text = the label)."""
        if self.kind != "line":
            return [LineResult(r.label, r.confidence, [r.confidence] if r.label else [], r.error)
                    for r in self.classify(imgs)]
        lps, errors = self.log_probs(imgs)
        results: list[LineResult] = []
        for lp, err in zip(lps, errors):
            if lp is None:
                results.append(LineResult("", 0.0, [], err or "unusable image"))
                continue
            d: Decoded = self.decode(lp)
            results.append(LineResult(d.text, float(d.confidence), [float(c) for c in d.char_confidences]))
        return results

    def classify(self, imgs: Sequence, top_k: int = 5) -> list[CharResult]:
        """Classify isolated characters (classifier checkpoints)."""
        if self.kind == "line":
            raise TypeError("classify is for character classifier checkpoints; use recognize for lines")
        xs, errors = self._prepare_all(imgs)
        ok = [i for i, x in enumerate(xs) if x is not None]
        results: list[CharResult | None] = [None] * len(xs)
        k = min(top_k, len(self.charset))
        for s in range(0, len(ok), max(self.batch_size, 64)):
            idx = ok[s:s + max(self.batch_size, 64)]
            x = np.stack([xs[i] for i in idx])[:, None]
            if self.numpy_io:
                probs = np.exp(_log_softmax(self.model.run(np.ascontiguousarray(x, np.float32))))
            else:
                torch = self.torch
                with torch.inference_mode():
                    probs = self.model(torch.from_numpy(x).to(self.device)).float().softmax(-1).cpu().numpy()
            top = np.argsort(-probs, axis=1)[:, :k]
            for row, i in enumerate(idx):
                best = [(self.charset[int(c)], float(probs[row, c])) for c in top[row]]
                results[i] = CharResult(best[0][0], best[0][1], best)
        return [r if r is not None else CharResult("", 0.0, [], errors[i] or "unusable image")
                for i, r in enumerate(results)]

    def __call__(self, imgs: Sequence):
        return self.recognize(imgs) if self.kind == "line" else self.classify(imgs)

    def benchmark(self, imgs: Sequence, repeats: int = 1) -> dict:
        """Lines (or characters) per second over ``repeats`` passes."""
        t0 = time.perf_counter()
        for _ in range(repeats):
            self(imgs)
        dt = time.perf_counter() - t0
        return {"items": len(imgs) * repeats, "seconds": dt, "per_second": len(imgs) * repeats / max(dt, 1e-9)}
