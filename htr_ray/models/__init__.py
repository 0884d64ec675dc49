"""Model registry: every architecture is built by name with JSON-serialisable parameters, so a
checkpoint's ``model.json`` (``{"architecture": name, "params": {...}}``) is enough to rebuild it.

    from htr_ray.models import build_model
    model = build_model("crnn_small", num_classes=charset.num_ctc_classes)

Three kinds of model (``model.kind``):

- ``"line"``: CTC text-line recognizers (:mod:`.crnn`). Input ``(N, 1, H, W)`` float32, ink = 1, exactly
  :func:`htr_ray.io.images.normalize_line` at ``model.input_height`` padded by
  :func:`htr_ray.io.images.pad_batch`; ``forward`` returns logits ``(N, T, C)`` with class 0 = blank;
  ``model.output_lengths(widths)`` maps true input widths to valid frame counts.
- ``"char"``: isolated-character classifiers (:mod:`.char_cnn`). Input ``(N, 1, S, S)`` from
  :func:`htr_ray.io.images.normalize_char` at ``model.input_size``; ``forward`` returns logits ``(N, C)``.
- ``"word_kind"``: the printed-vs-handwritten word classifier of :mod:`htr_ray.layout.printed` (input from
  :func:`htr_ray.layout.printed.word_input`, ``(N, 1, input_height, input_width)``; logits ``(N, 2)``).

Every model built here carries ``model.architecture`` (its registry name) and ``model.params`` (the
keyword arguments it was built with), which :mod:`htr_ray.checkpoint` writes out.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}


def register(name: str, **defaults):
    """Register ``fn(**params) -> nn.Module`` under ``name`` with default parameters."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        _DEFAULTS[name] = dict(defaults)
        return fn

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, **params) -> nn.Module:
    """Build a registered model. ``params`` override the registered defaults; ``num_classes`` is
    required. The resulting module records ``architecture`` and the full ``params``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}")
    full = {**_DEFAULTS[name], **params}
    if "num_classes" not in full:
        raise ValueError("build_model needs num_classes")
    model = _REGISTRY[name](**full)
    model.architecture = name
    model.params = full
    return model


def output_layer(model: nn.Module) -> nn.Linear:
    return model.classifier


def grow_output(model: nn.Module, num_classes: int) -> nn.Module:
    """Extend the output layer to ``num_classes`` rows, keeping the trained rows (old classes keep
    their indices); new rows start small and random, their bias slightly below the mean so that new
    classes do not swamp the old ones at first. No-op if already that size."""
    old: nn.Linear = model.classifier
    if num_classes == old.out_features:
        return model
    if num_classes < old.out_features:
        raise ValueError(f"cannot shrink the output layer from {old.out_features} to {num_classes} classes")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=0.01)
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features:] = old.bias.mean() - 1.0
    model.classifier = new
    model.params = {**model.params, "num_classes": num_classes}
    return model


from htr_ray.models import char_cnn, crnn, line_finder  # noqa: E402,F401  (registers the architectures)
