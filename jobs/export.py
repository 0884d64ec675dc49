"""Export a checkpoint for fast inference without Ray (ONNX Runtime or TorchScript, optionally int8).

    python jobs/export.py --model models/line_en --format onnx --output work/export/line_en.onnx
    python jobs/export.py --model models/line_en --format onnx --quantize int8 --output s3://bucket/models/line_en.int8.onnx
    python jobs/export.py --model models/line_en --format torchscript --output work/export/line_en.ts

The output directory is self-describing (model.json + model.onnx / model.ts): pass it wherever a model
URI is taken (``Recognizer.from_uri``, ``jobs/transcribe.py --model``, Serve's ``model``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

from htr_ray import config
from htr_ray.recognition.export import BACKENDS, DEFAULT_OPSET, export, verify


@dataclass
class ExportConfig:
    """Export a checkpoint directory to ONNX or TorchScript (dynamic batch and width), optionally with
    dynamic int8 quantisation of the LSTM and linear layers, and check it against the original."""

    model: str = config.field(help="checkpoint URI (local folder or s3://)")
    format: str = config.field(help=f"export format: {' or '.join(BACKENDS)}")
    output: str = config.field(help="output directory URI for the exported model")
    quantize: str = config.field("none", help="none or int8 (dynamic int8 of the LSTM and linear layers)")
    opset: int = config.field(DEFAULT_OPSET, help="ONNX opset (>= 17)")
    check: bool = config.field(True, help="compare the exported model with the checkpoint on synthetic input")


def build_parser():
    return config.build_parser(ExportConfig)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config.from_args(ExportConfig, argv)
    quantize = None if cfg.quantize in ("", "none", "fp32") else cfg.quantize
    meta = export(cfg.model, cfg.output, cfg.format, quantize=quantize, opset=cfg.opset)
    print(f"exported {cfg.model} -> {cfg.output} ({meta['backend']}, quantize={meta['quantize']})")
    if cfg.check:
        report = verify(cfg.model, cfg.output)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
