"""Self-describing checkpoints on any URI (local folder or ``s3://``), see DESIGN.md.

A checkpoint is a directory::

    model.json     architecture + params, kind, charset, input (height / size, normalisation),
                   training data URIs, metrics, epoch, training command, created (UTC)
    weights.pt     the model's state_dict, loadable with torch.load(weights_only=True)
    train_state.pt (optional) optimizer state, step, early-stopping state: only for resuming

Use::

    from htr_ray.models import checkpoint
    checkpoint.save("s3://bucket/models/line", model, {"charset": cs.to_json(), "metrics": {...}})
    model, meta = checkpoint.load("s3://bucket/models/line")   # eval mode, on CPU
    meta["charset"], meta["input"]["height"]

``load`` needs nothing but the directory: the registry name and params in ``model.json`` rebuild the
architecture, and the charset and the pre-processing to apply come with it.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Any

import torch

from htr_ray.io import storage
from htr_ray.models import build_model

log = logging.getLogger(__name__)

FORMAT = "htr-ray-checkpoint/1"
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
STATE_FILE = "train_state.pt"


def input_spec(model) -> dict:
    """How to turn an image into this model's input (what the recognizer must do)."""
    if hasattr(model, "input_spec"):  # a model that says so itself (the line finder)
        return model.input_spec()
    if getattr(model, "kind", "line") == "word_kind":
        return {"function": "htr_ray.layout.printed.word_input", "height": int(model.input_height),
                "width": int(model.input_width), "ink": 1.0, "dtype": "float32", "layout": "N1HW"}
    if getattr(model, "kind", "line") == "char":
        return {"function": "htr_ray.io.images.normalize_char", "size": int(model.input_size), "ink": 1.0,
                "dtype": "float32", "layout": "N1HW"}
    return {"function": "htr_ray.io.images.normalize_line", "height": int(model.input_height), "ink": 1.0,
            "dtype": "float32", "layout": "N1HW", "pad": "htr_ray.io.images.pad_batch (zeros on the right)",
            "width_stride": int(getattr(model, "width_stride", 1))}


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel


def _tensor_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(uri: str, model, meta: dict | None = None, train_state: dict | None = None) -> dict:
    """Write a checkpoint directory at ``uri``. ``meta`` must include ``charset`` (list or string);
    any other keys (metrics, data, command, epoch, ...) are stored as given. Returns the written meta.
    ``model.json`` is written last, so a directory with it is complete."""
    model = _unwrap(model)
    meta = dict(meta or {})
    if "charset" not in meta:
        raise ValueError("checkpoint meta needs the charset")
    full = {
        "format": FORMAT,
        "architecture": model.architecture,
        "params": model.params,
        "kind": getattr(model, "kind", "line"),
        "input": input_spec(model),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    full["charset"] = list(meta["charset"])
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    storage.write_bytes(storage.join(uri, WEIGHTS_FILE), _tensor_bytes(state))
    if train_state is not None:
        storage.write_bytes(storage.join(uri, STATE_FILE), _tensor_bytes(train_state))
    storage.write_text(storage.join(uri, META_FILE), json.dumps(full, indent=1, ensure_ascii=False) + "\n")
    return full


def read_meta(uri: str) -> dict:
    meta = json.loads(storage.read_text(storage.join(uri, META_FILE)))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{uri}: not an htr-ray checkpoint (format {meta.get('format')!r})")
    return meta


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file at fault."""


def load(uri: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, meta) from a checkpoint directory. An unknown architecture, weights that do
    not fit it, or a charset whose size does not match the output classes raise :class:`CheckpointError`."""
    meta = read_meta(uri)
    meta_uri, weights_uri = storage.join(uri, META_FILE), storage.join(uri, WEIGHTS_FILE)
    try:
        model = build_model(meta["architecture"], **meta["params"])
    except KeyError as exc:
        raise CheckpointError(f"{meta_uri}: {exc.args[0] if exc.args else exc}") from exc
    state = torch.load(io.BytesIO(storage.read_bytes(weights_uri)), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_uri}: the weights do not fit the architecture in {meta_uri}: "
                              f"{str(exc).splitlines()[-1].strip()}") from exc
    n_out = meta["params"].get("num_classes")
    kind = meta.get("kind", getattr(model, "kind", "line"))
    want = {"line": len(meta.get("charset", [])) + 1, "char": len(meta.get("charset", []))}.get(kind)
    if n_out is not None and want is not None and int(n_out) != want:
        raise CheckpointError(f"{meta_uri}: the charset has {len(meta.get('charset', []))} characters, so a "
                              f"{kind} model needs {want} output classes, but the weights have {n_out}")
    model.to(device).eval()
    return model, meta


def load_train_state(uri: str) -> dict | None:
    state_uri = storage.join(uri, STATE_FILE)
    if not storage.exists(state_uri):
        return None
    return torch.load(io.BytesIO(storage.read_bytes(state_uri)), map_location="cpu", weights_only=True)


def is_checkpoint(uri: str) -> bool:
    try:
        return storage.exists(storage.join(uri, META_FILE))
    except storage.StorageError:
        return False


def copy(src: str, dst: str, include_train_state: bool = False) -> None:
    """Copy a checkpoint (e.g. the best of a run into ``models/<name>``), by default without the
    optimizer state, which only resuming needs."""
    for name in (WEIGHTS_FILE, STATE_FILE, META_FILE):
        if name == STATE_FILE and not include_train_state:
            continue
        u = storage.join(src, name)
        if storage.exists(u):
            storage.write_bytes(storage.join(dst, name), storage.read_bytes(u))


def to_local_dir(uri: str) -> str:
    """A local folder holding the checkpoint (the folder itself when local, else a temp copy)."""
    if not storage.is_s3(uri):
        return storage.parse(uri).path
    tmp = tempfile.mkdtemp(prefix="htr-ckpt-")
    copy(uri, tmp, include_train_state=True)
    return tmp
