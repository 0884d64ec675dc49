"""The one recogniser actor of Ray Data: every job that reads lines in an actor pool uses this class.

``ds.map_batches(RecognizerActor, fn_constructor_kwargs={"spec": spec.as_dict()}, batch_format="pyarrow",
compute=ActorPoolStrategy(...))``: each actor builds its :class:`~htr_ray.recognition.recognizer.Recognizer`
once from a :class:`~htr_ray.recognition.spec.RecognizerSpec` (one intra-op thread by default: one
actor per core), then reads batches of *line rows*.

A line row holds ``crop`` (the raw uint8 bytes of a gray line image), ``h`` and ``w`` (its shape), and
whatever else its producer wants back (ids, ground truth, page keys): those columns pass through
untouched. The actor drops ``crop`` (images do not travel further) and adds ``text``, ``confidence``,
``char_confidences``, ``error`` (``""`` when read; a row whose ``error`` was already set, or whose crop
is empty, is not read) and ``seconds`` (its share of the model time). A model failure on a batch is
not an exception: every row of the batch gets ``error = "recognition_failed: ..."``.

Producers: the bulk job's GPU path (:mod:`htr_ray.distributed.transcribe`, crops from
:meth:`htr_ray.pages.reader.PageReader.prepare`; on CPU its :class:`~htr_ray.distributed.transcribe.PageStage`
subclass reads whole pages with the recogniser built here) and evaluation (:func:`htr_ray.evaluation.evaluate.predict_ray`,
crops of shard samples).
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

RECOGNITION_FAILED = "recognition_failed"  # = htr_ray.pages.reader.RECOGNITION_FAILED
RESULT_COLUMNS = {"text": pa.string(), "confidence": pa.float32(), "char_confidences": pa.list_(pa.float32()),
                  "error": pa.string(), "seconds": pa.float64()}


def crop_columns(crops) -> dict[str, list]:
    """``crop``/``h``/``w`` columns for gray uint8 images (None: an empty crop)."""
    out = {"crop": [], "h": [], "w": []}
    for c in crops:
        if c is None:
            out["crop"].append(b""), out["h"].append(0), out["w"].append(0)
            continue
        c = np.ascontiguousarray(c, dtype=np.uint8)
        out["crop"].append(c.tobytes()), out["h"].append(int(c.shape[0])), out["w"].append(int(c.shape[1]))
    return out


def crop_from(data: bytes, h: int, w: int) -> np.ndarray | None:
    if not h or not w or len(data) != h * w:
        return None
    return np.frombuffer(data, np.uint8).reshape(h, w)


def pin_threads(threads: int = 1) -> None:
    """One actor per core: OpenCV, and torch when this process has imported it (the torch backend, a
    learned line finder), run ``threads`` intra-op threads. ONNX Runtime takes its count from the spec.
    Torch is not imported here for nothing: the ONNX path runs without it."""
    import cv2

    cv2.setNumThreads(int(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))


class RecognizerActor:
    """Ray Data callable class: a recogniser built once per actor from a spec, reading line rows."""

    def __init__(self, spec, threads: int | None = 1):
        from htr_ray.recognition.spec import RecognizerSpec

        if isinstance(spec, dict):
            spec = RecognizerSpec(**spec)
        if threads and not spec.threads:
            spec = spec.replace(threads=int(threads))
        self.spec = spec
        self.recognizer = spec.build()
        if spec.threads:
            pin_threads(int(spec.threads))

    def recognize(self, crops):
        """The recogniser's results for gray line images (what ``__call__`` does per batch)."""
        return self.recognizer.recognize(crops)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        given_err = batch.column("error").to_pylist() if "error" in batch.column_names else [""] * n
        hs, ws = batch.column("h").to_pylist(), batch.column("w").to_pylist()
        raw = batch.column("crop").to_pylist()
        crops, todo = [], []
        for i in range(n):
            c = None if given_err[i] else crop_from(raw[i], hs[i], ws[i])
            if c is not None:
                crops.append(c)
                todo.append(i)
        read = set(todo)
        text, conf, chars = [""] * n, [0.0] * n, [[] for _ in range(n)]
        errors = [e or ("" if i in read else "empty: no image") for i, e in enumerate(given_err)]
        t0 = time.perf_counter()
        try:
            results = self.recognize(crops) if crops else []
        except Exception as exc:  # a model failure on this batch: error rows, not a lost batch
            log.exception("recognition failed for a batch of %d lines", len(crops))
            results = []
            for i in todo:
                errors[i] = f"{RECOGNITION_FAILED}: {type(exc).__name__}: {exc}"
        share = (time.perf_counter() - t0) / max(len(crops), 1)
        for i, r in zip(todo, results):
            text[i], conf[i], chars[i] = r.text, float(r.confidence), [float(c) for c in r.char_confidences]
            errors[i] = r.error or ""
        seconds = [share if i in read else 0.0 for i in range(n)]
        out = batch.drop_columns([c for c in ("crop", "error") if c in batch.column_names])
        for name, values in (("text", text), ("confidence", conf), ("char_confidences", chars), ("error", errors),
                             ("seconds", seconds)):
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, pa.array(values, RESULT_COLUMNS[name]))
        return out
