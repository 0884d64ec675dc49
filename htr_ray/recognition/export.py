"""Export a checkpoint for fast inference without Ray: ONNX (onnxruntime), TorchScript, dynamic int8.

    from htr_ray.recognition import export
    export.export("models/line_en", "work/line_en.onnx", "onnx")                    # fp32 ONNX
    export.export("models/line_en", "work/line_en.int8.onnx", "onnx", quantize="int8")
    export.export("models/line_en", "work/line_en.ts", "torchscript", quantize="int8")
    rec = Recognizer.from_uri("work/line_en.onnx")     # the recogniser detects an exported directory

An exported model is a directory, self-describing like a checkpoint (:mod:`htr_ray.checkpoint`)::

    model.json   the checkpoint's meta (charset, kind, input spec, architecture, metrics, ...) with
                 "format": "htr-ray-export/1", "backend": "onnx" | "torchscript", "quantize": null | "int8",
                 "file", "source" (the checkpoint it came from), "graph" (inputs/outputs) and
                 "output_lengths" (the frame-count formula)
    model.onnx   (backend onnx)         or
    model.ts     (backend torchscript, torch.jit.save of a scripted module)

Graph of a line (CTC) model, the same for ONNX and TorchScript::

    inputs   images  float32 (N, 1, H, W)  htr_ray.io.images.normalize_line at H = input.height, ink = 1,
                                           zero padded on the right (htr_ray.io.images.pad_batch); N and W dynamic
             widths  int64   (N,)          each line's true width before padding
    outputs  logits  float32 (N, T, C)     T = W // width_stride, class 0 = CTC blank, class k = charset[k-1]
             lengths int64   (N,)          valid frames per line = max(1, widths // width_stride)

A character classifier has one input ``images`` (N, 1, S, S) and one output ``logits`` (N, C).

Quantisation is dynamic int8 (weights int8, activations quantised on the fly) of the LSTM and the
linear layers; the convolutions stay fp32. Torch: :func:`torch.ao.quantization.quantize_dynamic`
(TorchScript export of the quantised module). ONNX: :func:`onnxruntime.quantization.quantize_dynamic`
on the exported fp32 graph, restricted to the LSTM / MatMul / Gemm nodes (``DynamicQuantizeLSTM``,
``MatMulInteger``); quantising the convolutions too (``ConvInteger``) is possible with
``onnx_quant_ops`` but slower on CPU.

:func:`load` turns an exported directory (or a checkpoint plus ``backend=``) into an object that
behaves like the torch module for :class:`htr_ray.recognition.recognizer.Recognizer` (``__call__`` on a torch
tensor returns logits, ``output_lengths``, ``kind``, ``input_height``...), so the recogniser's
pre-processing, batching and decoding are unchanged whatever runs the network.

A checkpoint run with ``backend="onnx"``/``"torchscript"`` is exported once and kept in the **export
cache** (:func:`cached_export`): a directory per checkpoint content (hash of its ``model.json`` and
weights) and export settings, under ``HTR_EXPORT_CACHE`` (default ``~/.cache/htr-ray/exports``). A
process that has not imported torch exports in a child process, so that a Serve replica or a bulk
actor running ONNX never loads torch (about 200 MB of RSS): with the export cached, the ONNX path
imports onnxruntime and numpy only (tests/test_export.py checks ``"torch" not in sys.modules``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from htr_ray.io import storage

log = logging.getLogger(__name__)

FORMAT = "htr-ray-export/1"
BACKENDS = ("onnx", "torchscript")
FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
QUANTIZE = (None, "int8")
DEFAULT_OPSET = 17
ONNX_QUANT_OPS = ("LSTM", "MatMul", "Gemm")
LENGTHS_FORMULA = "max(1, width // width_stride)"
# the checkpoint's files (htr_ray.models.checkpoint.META_FILE / WEIGHTS_FILE, which imports torch; a
# test checks they agree): the ONNX path reads model.json without torch, the cache key hashes both
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"


class ExportError(ValueError):
    pass


# ------------------------------------------------------------------------------------- graphs


def _graph_module(model):
    """The module that is exported: (images, widths) -> (logits, lengths) for line models (the frame
    count logic travels inside the graph), images -> logits for classifiers."""
    import torch
    from torch import nn

    class LineGraph(nn.Module):
        def __init__(self, net: nn.Module, width_stride: int):
            super().__init__()
            self.net = net
            self.width_stride = width_stride

        def forward(self, images: torch.Tensor, widths: torch.Tensor):
            logits = self.net(images)
            lengths = torch.clamp(torch.div(widths, self.width_stride, rounding_mode="floor"), min=1)
            return logits, lengths

    class CharGraph(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor):
            return self.net(images)

    if getattr(model, "kind", "line") == "line":
        return LineGraph(model, int(model.width_stride)).eval()
    return CharGraph(model).eval()


def _example_inputs(model):
    import torch

    if getattr(model, "kind", "line") == "line":
        h = int(model.input_height)
        return (torch.rand(2, 1, h, 8 * h), torch.tensor([8 * h, 5 * h], dtype=torch.long))
    s = int(model.input_size)
    return (torch.rand(2, 1, s, s),)


def graph_spec(meta: dict) -> dict:
    if meta.get("kind", "line") == "line":
        return {
            "inputs": {"images": "float32 (N, 1, H, W): normalize_line at input.height, ink = 1, zero padded on the right",
                       "widths": "int64 (N,): true widths before padding"},
            "outputs": {"logits": "float32 (N, T, C), T = W // width_stride, class 0 = blank, class k = charset[k-1]",
                        "lengths": f"int64 (N,): valid frames = {LENGTHS_FORMULA}"},
        }
    return {"inputs": {"images": "float32 (N, 1, S, S): normalize_char at input.size, ink = 1"},
            "outputs": {"logits": "float32 (N, C), class k = charset[k]"}}


def quantize_torch(model):
    """Dynamic int8 quantisation of the LSTM and linear layers (a new module; ``model`` is untouched)."""
    import copy

    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.LSTM, nn.Linear},
                                                   dtype=torch.qint8)
    for attr in ("architecture", "params", "kind", "input_height", "input_size", "width_stride"):
        if hasattr(model, attr):
            setattr(q, attr, getattr(model, attr))
    return q


def to_onnx_bytes(model, opset: int = DEFAULT_OPSET) -> bytes:
    """fp32 ONNX of a checkpoint's model (eval mode) with dynamic batch and width."""
    import torch

    if opset < 17:
        raise ExportError("opset must be >= 17")
    graph = _graph_module(model)
    line = getattr(model, "kind", "line") == "line"
    if line:
        names_in, names_out = ["images", "widths"], ["logits", "lengths"]
        axes = {"images": {0: "batch", 3: "width"}, "widths": {0: "batch"},
                "logits": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    else:
        names_in, names_out = ["images"], ["logits"]
        axes = {"images": {0: "batch"}, "logits": {0: "batch"}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter: the dynamo one needs onnxscript, which is not a dependency
        torch.onnx.export(graph, _example_inputs(model), buf, dynamo=False, opset_version=opset,
                          input_names=names_in, output_names=names_out, dynamic_axes=axes,
                          do_constant_folding=True)
    return buf.getvalue()


def quantize_onnx_bytes(data: bytes, op_types: Sequence[str] = ONNX_QUANT_OPS, reduce_range: bool = True) -> bytes:
    """Dynamic int8 quantisation of an ONNX model with onnxruntime (weights int8, per tensor).

    ``reduce_range`` (7-bit weights) avoids the u8 x s8 saturation of CPUs without VNNI (AVX2 only,
    like this project's machines): measured on the CRNN it cuts the logit error about 10x (max |diff|
    0.009 -> 0.001, the same as torch's fbgemm, which reduces the range too)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="htr-onnx-q-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(data)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                             reduce_range=reduce_range)
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            return f.read()


def to_torchscript_bytes(model) -> bytes:
    """torch.jit.script of the graph module (variable batch and width; the LSTM is scripted, not
    traced), frozen (weights become constants, BatchNorm folded into the convolutions)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.freeze(torch.jit.script(_graph_module(model)))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return buf.getvalue()


def export_model(model, meta: dict, backend: str, quantize: str | None = None, opset: int = DEFAULT_OPSET,
                 onnx_quant_ops: Sequence[str] = ONNX_QUANT_OPS, source: str | None = None) -> tuple[bytes, dict]:
    """(file bytes, exported meta) for a loaded checkpoint model; nothing is written."""
    import torch

    if backend not in BACKENDS:
        raise ExportError(f"unknown export format {backend!r} (one of {', '.join(BACKENDS)})")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantisation {quantize!r} (none or int8)")
    model = model.cpu().eval()
    if backend == "onnx":
        data = to_onnx_bytes(model, opset)
        if quantize == "int8":
            data = quantize_onnx_bytes(data, onnx_quant_ops)
    else:
        data = to_torchscript_bytes(quantize_torch(model) if quantize == "int8" else model)
    out = {k: v for k, v in meta.items()}
    out.update({
        "format": FORMAT,
        "backend": backend,
        "file": FILES[backend],
        "quantize": quantize,
        "source": {"uri": source, "format": meta.get("format"), "created": meta.get("created")},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"torch": torch.__version__},
        "graph": graph_spec(meta),
    })
    if backend == "onnx":
        import onnx

        out["exporter"].update({"onnx": onnx.__version__, "opset": int(opset)})
        if quantize == "int8":
            import onnxruntime

            out["exporter"].update({"onnxruntime": onnxruntime.__version__, "quantized_ops": list(onnx_quant_ops),
                                    "reduce_range": True})
    if out.get("kind", "line") == "line":
        out["output_lengths"] = {"formula": LENGTHS_FORMULA, "width_stride": int(model.width_stride)}
    return data, out


def export(src: str, dst: str, backend: str, quantize: str | None = None, opset: int = DEFAULT_OPSET,
           onnx_quant_ops: Sequence[str] = ONNX_QUANT_OPS) -> dict:
    """Export the checkpoint at ``src`` into the directory ``dst`` (any URI); returns its meta.
    ``model.json`` is written last, so a directory with it is complete."""
    from htr_ray.models import checkpoint

    if quantize in ("", "none", "fp32"):
        quantize = None
    model, meta = checkpoint.load(src)
    data, out = export_model(model, meta, backend, quantize, opset, onnx_quant_ops, source=src)
    storage.write_bytes(storage.join(dst, out["file"]), data)
    lm = (meta.get("decoding") or {}).get("lm")
    if lm and storage.exists(storage.join(src, lm)):  # the LM the model names travels with it
        storage.write_bytes(storage.join(dst, lm), storage.read_bytes(storage.join(src, lm)))
    storage.write_text(storage.join(dst, META_FILE), json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    log.info("exported %s -> %s (%s%s, %.1f MB)", src, dst, backend, f" {quantize}" if quantize else "",
             len(data) / 1e6)
    return out


# ------------------------------------------------------------------------------------ loading


def read_meta(uri: str) -> dict:
    meta = json.loads(storage.read_text(storage.join(uri, META_FILE)))
    if meta.get("format") != FORMAT:
        raise ExportError(f"{uri}: not an exported htr-ray model (format {meta.get('format')!r})")
    return meta


def is_exported(uri: str) -> bool:
    """Whether ``uri`` is an exported model directory (not a training checkpoint)."""
    try:
        meta = json.loads(storage.read_text(storage.join(uri, META_FILE)))
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT


# ------------------------------------------------------------------------------- export cache


def cache_root() -> Path:
    """Where exported checkpoints are kept: ``HTR_EXPORT_CACHE``, else ``~/.cache/htr-ray/exports``."""
    return Path(os.environ.get("HTR_EXPORT_CACHE") or Path.home() / ".cache" / "htr-ray" / "exports")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def cache_key(uri: str, backend: str, quantize: str | None) -> str:
    """Hash of what decides the exported file: the checkpoint's meta and weights (their bytes, so a
    retrained checkpoint at the same URI gets a new entry), the backend, the quantisation, the export
    settings and the exporters' versions (read from package metadata: nothing is imported)."""
    h = hashlib.sha256()
    for name in (META_FILE, WEIGHTS_FILE):
        data = storage.read_bytes(storage.join(uri, name))
        h.update(f"{name}:{len(data)}:".encode())
        h.update(data)
    settings = {"format": FORMAT, "backend": backend, "quantize": quantize, "opset": DEFAULT_OPSET,
                "onnx_quant_ops": list(ONNX_QUANT_OPS), "reduce_range": True,
                "versions": [_version(p) for p in ("torch", "onnx", "onnxruntime")]}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _export_in_child(src: str, dst: str, backend: str, quantize: str | None) -> None:
    """:func:`export` in a child Python, so that torch is imported there and not here."""
    code = ("import sys\nfrom htr_ray.recognition.export import export\n"
            "export(sys.argv[1], sys.argv[2], sys.argv[3], quantize=sys.argv[4] or None)\n")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run([sys.executable, "-c", code, src, dst, backend, quantize or ""], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ExportError(f"exporting {src} to {backend} failed in a child process: " + " | ".join(tail))


def cached_export(uri: str, backend: str, quantize: str | None = None) -> str:
    """The exported directory of the checkpoint at ``uri`` for ``backend``/``quantize``, from the export
    cache (:func:`cache_root`), exported into it first if it is not there. The export runs in this process
    if torch is already imported here, else in a child process (torch never enters this one). Entries are
    written to a temporary directory and renamed into place, so concurrent processes (replicas, actors)
    never see half an entry; the first rename wins."""
    if backend not in BACKENDS:
        raise ExportError(f"unknown export format {backend!r} (one of {', '.join(BACKENDS)})")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantisation {quantize!r} (none or int8)")
    try:
        key = cache_key(uri, backend, quantize)
    except OSError as exc:
        raise ExportError(f"{uri}: not a readable checkpoint ({META_FILE} and {WEIGHTS_FILE}): {exc}") from exc
    root = cache_root()
    final = root / f"{backend}-{quantize or 'fp32'}-{key}"
    if (final / META_FILE).is_file():
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        if "torch" in sys.modules:
            export(uri, str(tmp), backend, quantize=quantize)
        else:
            _export_in_child(uri, str(tmp), backend, quantize)
        try:
            os.rename(tmp, final)
            log.info("export cache: %s %s of %s -> %s", backend, quantize or "fp32", uri, final)
        except OSError:
            if not (final / META_FILE).is_file():  # not a lost race with another process: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


class _Runtime:
    """Common part of the exported-model runners: what the recogniser reads off a torch model."""

    def __init__(self, meta: dict):
        self.meta = meta
        self.kind = meta.get("kind", "line")
        spec = meta.get("input", {})
        self.architecture = meta.get("architecture")
        self.params = meta.get("params", {})
        self.backend = meta.get("backend")
        self.quantize = meta.get("quantize")
        if self.kind == "line":
            self.input_height = int(spec["height"])
            self.width_stride = int(meta.get("output_lengths", {}).get("width_stride") or spec.get("width_stride"))
        else:
            self.input_size = int(spec["size"])
            self.input_height = self.input_size

    def output_lengths(self, widths) -> np.ndarray:
        return np.maximum(np.asarray(widths, dtype=np.int64) // self.width_stride, 1)

    # module-like no-ops, so code written for a torch model accepts a runner
    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self

    def __call__(self, images):
        """Logits for a batch (torch tensor or numpy array, (N, 1, H, W)); a torch tensor back."""
        import torch

        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.kind == "line":
            widths = np.full((x.shape[0],), x.shape[3], dtype=np.int64)
            logits, _ = self.run(x, widths)
        else:
            logits = self.run(x)
        return torch.from_numpy(logits)

    def run(self, images: np.ndarray, widths: np.ndarray | None = None):
        raise NotImplementedError


def process_threads() -> int:
    """The process's intra-op thread setting, without importing torch: torch's when torch is already
    loaded, else OMP_NUM_THREADS (Ray workers get their CPUs there), else 0 (onnxruntime: one a core)."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() else 0


class OnnxModel(_Runtime):
    """An ONNX model run by onnxruntime (CPUExecutionProvider; CUDA when asked and available).
    ``numpy_io``: the recogniser calls :meth:`run` with numpy arrays, and no torch is needed."""

    numpy_io = True

    def __init__(self, data: bytes, meta: dict, threads: int | None = None, device: str = "cpu"):
        super().__init__(meta)
        import onnxruntime as ort

        so = ort.SessionOptions()
        if not threads:
            threads = process_threads()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("onnxruntime has no CUDA provider here; running the ONNX model on CPU")
        self.session = ort.InferenceSession(data, so, providers=providers)
        self.threads = threads

    def run(self, images: np.ndarray, widths: np.ndarray | None = None):
        """Numpy in, numpy out: (logits, lengths) for line models, logits for classifiers."""
        feed: dict[str, Any] = {"images": np.ascontiguousarray(images, dtype=np.float32)}
        if self.kind == "line":
            if widths is None:
                widths = np.full((images.shape[0],), images.shape[3], dtype=np.int64)
            feed["widths"] = np.asarray(widths, dtype=np.int64)
            logits, lengths = self.session.run(["logits", "lengths"], feed)
            return logits, lengths
        return self.session.run(["logits"], feed)[0]


class TorchScriptModel(_Runtime):
    """A TorchScript module (saved by :func:`to_torchscript_bytes`)."""

    def __init__(self, data: bytes, meta: dict, threads: int | None = None, device: str = "cpu"):
        super().__init__(meta)
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.module = torch.jit.load(io.BytesIO(data), map_location=self.device).eval()
        if threads:
            torch.set_num_threads(int(threads))  # process-wide in torch

    def __call__(self, images):
        torch = self.torch
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images, np.float32))
        x = x.to(self.device)
        with torch.inference_mode():
            if self.kind == "line":
                widths = torch.full((x.shape[0],), x.shape[3], dtype=torch.long, device=self.device)
                return self.module(x, widths)[0]
            return self.module(x)

    def run(self, images: np.ndarray, widths: np.ndarray | None = None):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        with torch.inference_mode():
            if self.kind == "line":
                if widths is None:
                    widths = np.full((images.shape[0],), images.shape[3], dtype=np.int64)
                logits, lengths = self.module(x, torch.as_tensor(np.asarray(widths), dtype=torch.long, device=self.device))
                return logits.cpu().numpy(), lengths.cpu().numpy()
            return self.module(x).cpu().numpy()


RUNTIMES = {"onnx": OnnxModel, "torchscript": TorchScriptModel}


def load(uri: str, backend: str | None = None, quantize: str | None = None, threads: int | None = None,
         device: str = "cpu"):
    """(model-like object, meta) for the recogniser, from an exported directory or a checkpoint.

    - exported directory: runs its own file with its own backend (``backend``/``quantize``, when given,
      must agree with it);
    - checkpoint and ``backend`` ``None``/``"torch"``: the torch module itself (dynamically quantised
      to int8 when ``quantize="int8"``);
    - checkpoint and ``backend`` ``"onnx"``/``"torchscript"``: exported once into the export cache
      (:func:`cached_export`), then run like an exported directory.
    ``threads``: onnxruntime's intra-op threads (default: :func:`process_threads`, which follows
    OMP_NUM_THREADS); for torch backends torch.set_num_threads (process-wide) when given.
    """
    if quantize in ("", "none", "fp32"):
        quantize = None
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantisation {quantize!r} (none or int8)")
    if backend not in (None, "torch", *BACKENDS):
        raise ExportError(f"unknown backend {backend!r} (torch, onnx or torchscript)")
    if is_exported(uri):
        meta = read_meta(uri)
        if backend not in (None, meta["backend"]):
            raise ExportError(f"{uri} is a {meta['backend']} export, not {backend}")
        if quantize is not None and quantize != meta.get("quantize"):
            raise ExportError(f"{uri} is exported with quantize={meta.get('quantize')}, not {quantize}")
        data = storage.read_bytes(storage.join(uri, meta["file"]))
        return RUNTIMES[meta["backend"]](data, meta, threads=threads, device=device), meta
    if backend in BACKENDS:
        return load(cached_export(uri, backend, quantize), threads=threads, device=device)
    from htr_ray.models import checkpoint

    model, meta = checkpoint.load(uri, device="cpu")
    if backend in (None, "torch"):
        if quantize == "int8":
            if not str(device).startswith("cpu"):
                raise ExportError("dynamic int8 quantisation runs on CPU only")
            model = quantize_torch(model)
            meta = {**meta, "backend": "torch", "quantize": "int8"}
        if threads:
            import torch

            torch.set_num_threads(int(threads))
    return model.to(device).eval(), meta


# ------------------------------------------------------------------------------------- checks


def compare_logits(reference, candidate, images: np.ndarray, widths: np.ndarray | None = None) -> dict:
    """Run one padded batch through two models (torch modules or runners) and compare: max absolute
    logit difference over the valid frames, frame-level argmax agreement, equal frame counts."""
    import torch

    with torch.inference_mode():
        ref = reference(torch.from_numpy(images)).float().cpu().numpy()
    got = candidate(torch.from_numpy(images))
    got = got.float().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    if ref.shape != got.shape:
        return {"ok": False, "error": f"shape {got.shape} != {ref.shape}"}
    if ref.ndim == 3:
        w = widths if widths is not None else np.full((images.shape[0],), images.shape[3])
        n_ref = reference.output_lengths(w).tolist()
        n_got = candidate.output_lengths(w).tolist()
        diffs, agree, frames = [], 0, 0
        for i, n in enumerate(n_ref):
            diffs.append(float(np.abs(ref[i, :n] - got[i, :n]).max()))
            agree += int((ref[i, :n].argmax(-1) == got[i, :n].argmax(-1)).sum())
            frames += n
        return {"ok": n_ref == n_got, "max_abs_diff": max(diffs), "argmax_agreement": agree / max(frames, 1),
                "lengths_equal": n_ref == n_got}
    return {"ok": True, "max_abs_diff": float(np.abs(ref - got).max()),
            "argmax_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean())}


def verify(src: str, dst: str, seed: int = 0) -> dict:
    """Compare an exported directory with its checkpoint on a synthetic padded batch (random strokes
    of three widths); the same check the export job prints."""
    from htr_ray.models import checkpoint

    model, _ = checkpoint.load(src)
    runner, meta = load(dst)
    rng = np.random.default_rng(seed)
    if meta.get("kind", "line") == "line":
        h = int(meta["input"]["height"])
        widths = np.array([4 * h, 9 * h, 15 * h], dtype=np.int64)
        x = np.zeros((3, 1, h, int(widths.max())), np.float32)
        for i, w in enumerate(widths):
            x[i, 0, :, :w] = (rng.random((h, w)) > 0.85).astype(np.float32)
    else:
        s = int(meta["input"]["size"])
        widths = None
        x = (rng.random((3, 1, s, s)) > 0.85).astype(np.float32)
    out = compare_logits(model, runner, x, widths)
    out.update({"backend": meta["backend"], "quantize": meta.get("quantize")})
    return out
