"""The rows of one split of a line dataset, in memory: ``{"id", "image" (encoded bytes), "text"}``.

A data URI is an IAM-style folder (``labels.tsv`` + images, read with :mod:`htr_ray.data.labels`, split
by form with the project's rule) or a folder of Parquet shards (:mod:`htr_ray.io.shards`). Training,
the LM builder and the page composer read their lines here; nothing here needs torch.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging

from htr_ray.data import labels
from htr_ray.io import storage

log = logging.getLogger(__name__)


def _iam_rows(root: str, split: str) -> list[dict]:
    """Rows of an IAM-style folder (:mod:`htr_ray.data.labels`: the one labels.tsv reader, split by
    form with the project's rule), with their images read."""
    rows = labels.read_rows(root, split)
    # read the images (threads: mostly I/O)
    with cf.ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda r: _read_or_none(r.image_uri()), rows))
    out = [{"id": r.line_id, "image": b, "text": r.text} for r, b in zip(rows, blobs)]
    log.info("read %d %s rows from %s (labels.tsv)", len(out), split, root)
    return out


def _read_or_none(uri: str) -> bytes | None:
    try:
        return storage.read_bytes(uri)
    except storage.StorageError as exc:
        log.warning("%s", exc)
        return None


def load_rows(uri: str, split: str) -> list[dict]:
    """All rows (id, image bytes, text) of one split of a data URI, in memory."""
    from htr_ray.io import shards

    if labels.has_labels(uri) and not shards.list_shards(uri, split):
        return _iam_rows(uri, split)
    rows = list(shards.iter_rows(uri, split, columns=["id", "image", "text"]))
    log.info("read %d %s rows from %s", len(rows), split, uri)
    return rows
