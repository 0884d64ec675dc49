"""Training data: rows in memory (shards by URI or an IAM-style folder with ``labels.tsv``), how many
samples each source gives an epoch, width-bucketed batches, and the row -> model-input
:class:`Preprocessor` (decode, augment, normalise: the same normalisation inference applies), run ahead
of the model in worker threads (:func:`prefetch`) or worker processes (:class:`ProcessLoader`).

Images that cannot be decoded are counted in :attr:`Batch.bad`, never dropped silently.

Rows of a training pack (:mod:`htr_ray.training.pack`) carry ``pixels`` instead of ``image``: the line
already normalised at model height (uint8, ink = 255); they are only scaled and padded here, with no
OpenCV, and augmented on the training device (:mod:`htr_ray.data.augment_torch`, in ``fit``). OpenCV and
pyarrow are imported where encoded images and shards are read, so the pack path needs torch and numpy
only (the GPU recipe, ``scripts/train-gpu``).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import random
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from htr_ray.data.rows import load_rows  # noqa: F401  (the training data's rows: one reader, in data/)
from htr_ray.models.charset import Charset

log = logging.getLogger(__name__)


def png_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from a PNG header without decoding; None for other formats."""
    if data and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def estimated_width(row: dict, height: int) -> int:
    if row.get("pixels") is not None:  # a pack row: already at model height
        return int(row["pixels"].shape[1])
    size = png_size(row.get("image"))
    if not size:
        return 0
    w, h = size
    return int(w * height / max(h, 1))


def bucketed_batches(rows: Iterable[dict], batch_size: int, height: int, buffer: int = 2048,
                     rng: random.Random | None = None) -> Iterator[list[dict]]:
    """Group a stream of rows into batches of similar width: fill a buffer, sort it by the width the
    image will have at ``height``, cut into batches, shuffle the batches. Works on any iterator
    (an in-memory list or a Ray Data shard)."""
    rng = rng or random.Random(0)
    buf: list[dict] = []

    def flush():
        buf.sort(key=lambda r: estimated_width(r, height))
        batches = [buf[i:i + batch_size] for i in range(0, len(buf), batch_size)]
        rng.shuffle(batches)
        return batches

    for row in rows:
        buf.append(row)
        if len(buf) >= buffer:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def plain_batches(rows: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Batch:
    x: torch.Tensor
    widths: torch.Tensor | None
    targets: list[list[int]] | torch.Tensor
    texts: list[str]
    bad: int  # rows of the source batch that could not be used (undecodable image, unknown label)


class Preprocessor:
    """Row -> model input, for one model kind; the same normalisation as inference."""

    def __init__(self, kind: str, charset: Charset, size: int, train: bool, strength: float, seed: int,
                 distort: float = 0.0):
        self.kind, self.charset, self.size, self.train, self.strength = kind, charset, size, train, strength
        self.seed, self.distort = seed, distort

    def _packed(self, rows: list[dict]) -> Batch:
        """Pack rows (line models): uint8 at model height -> float ink = 1, padded like
        :func:`htr_ray.io.images.pad_batch` (zeros on the right, width a multiple of 8). Not augmented
        here: ``fit`` augments the batch on the training device."""
        if self.kind != "line":
            raise ValueError("pack rows are text lines; a classifier cannot train on them")
        keep, texts, targets, bad = [], [], [], 0
        for row in rows:
            px = row.get("pixels")
            if px is None or px.ndim != 2 or px.shape[0] != self.size or px.shape[1] < 1:
                raise ValueError(f"pack line {row.get('id')}: shape {None if px is None else px.shape}, the model "
                                 f"needs lines {self.size} px high (rebuild the pack with --height {self.size})")
            target = self.charset.encode(row["text"], unknown="skip")
            if self.train and not target:
                bad += 1
                log.debug("skipping %s: label %r not in the charset", row.get("id"), row["text"])
                continue
            keep.append(px)
            texts.append(row["text"])
            targets.append(target)
        if not keep:
            return Batch(torch.zeros(0), None, [], [], bad)
        widths = np.array([p.shape[1] for p in keep], dtype=np.int64)
        w_max = int(-(-widths.max() // 8) * 8)
        arr = np.zeros((len(keep), 1, self.size, w_max), dtype=np.uint8)
        for i, p in enumerate(keep):
            arr[i, 0, :, : p.shape[1]] = p
        x = torch.from_numpy(arr).float().div_(255.0)
        return Batch(x, torch.from_numpy(widths), targets, texts, bad)

    def __call__(self, rows: list[dict], batch_seed: int = 0) -> Batch:
        if rows and rows[0].get("pixels") is not None:
            return self._packed(rows)
        from htr_ray.data import augment
        from htr_ray.io import images

        rng = np.random.default_rng((self.seed, batch_seed))
        xs, texts, targets, bad = [], [], [], 0
        for row in rows:
            try:
                if row.get("image") is None:
                    raise images.ImageError("empty", "no image")
                gray = images.decode_gray(row["image"])
                text = row["text"] if isinstance(row["text"], str) else str(row["text"])
                if self.kind == "line":
                    target = self.charset.encode(text, unknown="skip")
                    if self.train and self.strength > 0:
                        gray = augment.augment_gray(gray, rng, self.strength, distort=self.distort)
                    x = images.normalize_line(gray, self.size)
                else:
                    target = self.charset.index(text) if text in self.charset else -1
                    if self.train and self.strength > 0:
                        gray = augment.augment_char_gray(gray, rng, self.strength)
                    x = images.normalize_char(gray, self.size)
                if self.train and self.strength > 0:
                    x = augment.augment_normalized(x, rng, self.strength)
                if self.train and (target == -1 or (self.kind == "line" and not target)):
                    raise KeyError(f"label {text!r} not in the charset")
            except (images.ImageError, KeyError, ValueError, cv2_error()) as exc:
                bad += 1
                log.debug("skipping %s: %s", row.get("id"), exc)
                continue
            xs.append(x)
            texts.append(text)
            targets.append(target)
        if not xs:
            return Batch(torch.zeros(0), None, [], [], bad)
        if self.kind == "line":
            arr, widths = images.pad_batch(xs, width_multiple=8)
            return Batch(torch.from_numpy(arr), torch.from_numpy(widths), targets, texts, bad)
        return Batch(torch.from_numpy(np.stack(xs)[:, None]), None, torch.tensor(targets), texts, bad)


def cv2_error():
    import cv2

    return cv2.error


def prefetch(fn: Callable, items: Iterable, threads: int, depth: int = 4) -> Iterator:
    """``map(fn, items)`` computed ahead in a thread pool (OpenCV and numpy release the GIL)."""
    if threads <= 0:
        for i, it in enumerate(items):
            yield fn(it, i)
        return
    with cf.ThreadPoolExecutor(threads) as pool:
        pending = []
        for i, it in enumerate(items):
            pending.append(pool.submit(fn, it, i))
            if len(pending) >= depth:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


def _worker_init() -> None:
    # one worker process = one core's worth of decoding and augmentation; no nested thread pools
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass


def _prepare_numpy(prep: "Preprocessor", rows: list[dict], seed: int) -> Batch:
    b = prep(rows, seed)
    # tensors travel between processes by value as numpy arrays (torch's own reducers would pass
    # shared-memory handles, one file descriptor per batch)
    return Batch(b.x.numpy(), None if b.widths is None else b.widths.numpy(),
                 b.targets.numpy() if isinstance(b.targets, torch.Tensor) else b.targets, b.texts, b.bad)


def _to_torch(b: Batch) -> Batch:
    as_t = (lambda a: torch.from_numpy(a) if isinstance(a, np.ndarray) else a)
    return Batch(as_t(b.x), as_t(b.widths), as_t(b.targets), b.texts, b.bad)


class ProcessLoader:
    """Decoding and augmentation in worker processes, off the training process: ``loader.map(prep,
    batches)`` yields ``prep(rows, seed)`` for each batch of rows, in order, ``depth`` batches ahead.

    The pool is started once (``spawn``: safe inside a multi-threaded Ray worker) and reused every
    epoch; rows travel to the workers pickled (PNG bytes, a few KiB a line) and batches come back as
    numpy arrays. Close it with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, processes: int, depth: int = 0):
        import multiprocessing as mp

        self.processes = max(1, int(processes))
        self.depth = depth or 3 * self.processes + 1
        self._pool = cf.ProcessPoolExecutor(self.processes, mp_context=mp.get_context("spawn"),
                                            initializer=_worker_init)

    def map(self, prep: "Preprocessor", batches: Iterable[list[dict]], seed_of: Callable[[int], int]) -> Iterator[Batch]:
        pending: list[cf.Future] = []
        for i, rows in enumerate(batches):
            pending.append(self._pool.submit(_prepare_numpy, prep, rows, seed_of(i)))
            if len(pending) >= self.depth:
                yield _to_torch(pending.pop(0).result())
        for f in pending:
            yield _to_torch(f.result())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mixing_plan(sizes: Sequence[int], weights: Sequence[float], epoch_size: int) -> list[int]:
    """Samples per source for one epoch. Without weights: each source once (or proportionally to its
    size when ``epoch_size`` is given). With weights: ``epoch_size`` split by weight; by default the
    epoch is sized so that the first source is seen once."""
    sizes = list(sizes)
    if not weights:
        if not epoch_size:
            return sizes
        weights = sizes
    if len(weights) != len(sizes):
        raise ValueError(f"{len(weights)} weights for {len(sizes)} data sources")
    total_w = float(sum(weights))
    w = [x / total_w for x in weights]
    if not epoch_size:
        epoch_size = int(round(sizes[0] / w[0])) if w[0] > 0 else sum(sizes)
    return [int(round(epoch_size * x)) if s else 0 for x, s in zip(w, sizes)]

