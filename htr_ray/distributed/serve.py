"""Ray Serve application: the batching recognizer is itself the HTTP ingress; pages are found by a
second deployment.

    POST /v1/recognize   one line image  -> text, confidence (per-character confidences on request)
    POST /v1/transcribe  one page image  -> PageResult rows (JSON), or ALTO / PAGE-XML / hOCR
    GET  /healthz        liveness of the replica that answers
    GET  /v1/stats       batch sizes, threads and peak memory of one Recognizer replica and one Pages replica
    GET  /docs, /openapi.json   API docs

Two deployments:

- ``Recognizer`` (FastAPI ingress): loads the line model (a :class:`RecognizerSpec`) once per replica.
  ``/v1/recognize`` is answered here, with no further hop: HAProxy -> replica -> model (the replica
  answers HTTP itself when Ray starts with ``htr_ray.distributed.runtime.SERVE_ENVIRONMENT``; else
  Serve's Python proxy passes requests on). Every line
  image, single lines and the lines of pages alike, goes to one ``@serve.batch`` method, so concurrent
  requests share model calls.
- ``Pages``: the page reader's ``prepare`` (decode, find lines, deskew, crop; the bulk job's own
  :class:`~htr_ray.pages.reader.PageReader`), the CPU-heavy part of a page, in replicas of its own so
  that it never holds up line requests. Only the crops and their geometry come back; the recognizer
  reads the crops through the same batches and ``PageReader.assemble`` makes the
  :class:`~htr_ray.pages.results.PageResult`, exactly as in the bulk job.

Images come as the raw request body (``Content-Type: image/...`` or ``application/octet-stream``)
or as a multipart upload (field ``file``). With ``HTR_API_KEY`` set (env var or a Kubernetes secret),
requests need ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, else 401.

Overload: each deployment's ``max_queued_requests`` (for ``Recognizer``: in the replica behind HAProxy,
at each proxy with Serve's Python proxy) bounds the wait; beyond it a 503 with ``Retry-After`` comes at once
(``backpressure_config``), and a page whose ``Pages`` queue is full gets the same from the ingress.

Tuning lives in ONE place, ``serve_config.yaml`` (the file ``serve run``/``serve deploy``/``python
jobs/serve.py`` deploy and k8s/rayservice.yaml embeds): replicas, queue limits, autoscaling, CPUs,
and the batching (``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``). The decorators below
carry none; :func:`make_app` applies the file's per-deployment settings when an app is built in
Python (tests, benchmarks), so both ways run with the same values.
"""

# No `from __future__ import annotations` here: FastAPI must see the real Request annotation.
import asyncio
import dataclasses
import hmac
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError

from htr_ray import config, paths
from htr_ray.io import images
from htr_ray.layout.printed import DEFAULT_FILTER
from htr_ray.pages.reader import PageReader, PreparedPage
from htr_ray.pages.results import PageResult
from htr_ray.recognition.spec import PAGE_READING_DEFAULT, RecognizerSpec

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = int(os.environ.get("HTR_MAX_UPLOAD_BYTES", 20 * 1024 * 1024))
MAX_PIXELS = int(os.environ.get("HTR_SERVE_MAX_PIXELS", 40_000_000))
IMAGE_TYPES = ("image/", "application/octet-stream")
SERVE_CONFIG = Path(os.environ.get("HTR_SERVE_CONFIG", paths.REPO_ROOT / "serve_config.yaml"))
APP_NAME = "htr"
RETRY_AFTER_S = 1


# The bulk job's recogniser (spec.PAGE_READING_DEFAULT): the same line reads the same over HTTP and in
# the bulk job, and the replica never imports torch.
DEFAULT_RECOGNIZER = PAGE_READING_DEFAULT


@dataclass
class ServeAppConfig:
    """The application's ``args`` in serve_config.yaml: how lines are read and how pages are cut."""

    recognizer: RecognizerSpec = config.field(DEFAULT_RECOGNIZER, help="the line recognizer (model, backend, "
                                                                        "decoder, LM ...); the bulk job's default")
    line_finder: str = config.field("auto", help="auto (learned if shipped, else opencv), learned, opencv")
    printed_filter: str = config.field(DEFAULT_FILTER, help="printed-text filter of the opencv finder; 'none': lines whole")
    api_key: str = config.field(None, help="require this key (default: HTR_API_KEY from the environment, else open)")

    @classmethod
    def from_args(cls, args: dict | None) -> "ServeAppConfig":
        args = dict(args or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(args) - known
        if unknown:
            raise ValueError(f"unknown Serve app args {sorted(unknown)}; known: {sorted(known)} "
                             f"(recognizer options go under 'recognizer:', as RecognizerSpec fields)")
        spec = args.pop("recognizer", None) or {}
        if not isinstance(spec, RecognizerSpec):
            bad = set(spec) - {f.name for f in dataclasses.fields(RecognizerSpec)}
            if bad:
                raise ValueError(f"unknown recognizer options {sorted(bad)}")
            spec = dict(spec)
            if spec.get("backend", "onnx") != "onnx" and "quantize" not in spec:
                spec["quantize"] = None  # int8 is the default of the onnx backend only
            spec = DEFAULT_RECOGNIZER.replace(**spec)  # unset fields: the bulk job's defaults
        return cls(recognizer=spec, **args)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


def _overloaded(what: str) -> ApiError:
    return ApiError(503, f"the {what} is overloaded, retry shortly", "overloaded",
                    {"Retry-After": str(RETRY_AFTER_S)})


def process_memory() -> dict:
    """Memory of this process (MB), from /proc (Linux): peak and current RSS, current RSS split into
    private (anonymous), file-backed (shared libraries, shared with other processes) and shared memory
    (Ray's object store), and PSS (shared pages divided among the processes that map them)."""
    names = {"VmHWM": "peak_rss_mb", "VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb",
             "RssShmem": "shmem_mb", "Pss": "pss_mb"}
    out = {}
    for source in ("/proc/self/status", "/proc/self/smaps_rollup"):
        try:
            for line in Path(source).read_text().splitlines():
                key, _, value = line.partition(":")
                if key in names and value.strip().endswith("kB"):
                    out[names[key]] = round(int(value.split()[0]) / 1024, 1)
        except OSError:
            pass
    return out


# ------------------------------------------------------------------------------------------ pages


@serve.deployment(name="Pages")
class PagesDeployment:
    """``PageReader.prepare``: page bytes -> line crops with their geometry (or an error result)."""

    def __init__(self, line_finder: str = "auto", printed_filter: str | None = DEFAULT_FILTER):
        self.reader = PageReader(line_finder, printed_filter=printed_filter, max_pixels=MAX_PIXELS)
        self.reader.finder  # load the line finder now, not on the first request  # noqa: B018
        self.pages = 0

    def prepare(self, data: bytes, uri: str = "upload") -> list:
        self.pages += 1
        return self.reader.prepare(uri, data)

    def stats(self) -> dict:
        return {"pid": os.getpid(), "pages": self.pages, "finder": self.reader.finder_name, **process_memory()}


# ------------------------------------------------------------------------------------------ ingress

api = FastAPI(
    title="htr-ray",
    version="0.2.0",
    description="Handwriting recognition: line images and whole pages to text, with confidences.",
)


async def _image_bytes(request: Request) -> bytes:
    """The uploaded image from a raw body or a multipart form (field ``file``), with size checks."""
    ctype = (request.headers.get("content-type") or "").lower()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"upload of {int(length):,} bytes is over the limit of {MAX_UPLOAD_BYTES:,}", "too_large")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form()
        except Exception as exc:
            raise ApiError(400, f"could not parse the multipart form: {exc}", "bad_form") from exc
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise ApiError(400, "multipart upload needs a file field named 'file'", "no_file")
        data = await upload.read()
    elif not ctype or ctype.startswith(IMAGE_TYPES):
        data = await request.body()
    else:
        raise ApiError(415, f"unsupported content type {ctype!r}: send image/* or application/octet-stream, "
                            "or a multipart form with a 'file' field", "unsupported_media_type")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"upload of {len(data):,} bytes is over the limit of {MAX_UPLOAD_BYTES:,}", "too_large")
    if not data:
        raise ApiError(400, "empty request: no image bytes in the body", "empty")
    return data


def _error_status(kind: str) -> int:
    return 413 if kind == "too_large" else 422


def _decode_line(data: bytes) -> np.ndarray:
    try:
        return images.decode_pages(data, max_pixels=MAX_PIXELS, min_side=2)[0]
    except images.ImageError as exc:
        raise ApiError(_error_status(exc.kind), str(exc), exc.kind) from exc


def _ingress() -> str:
    """What brings HTTP requests to this replica, as Serve decided from the environment Ray started with
    (htr_ray.distributed.runtime.SERVE_ENVIRONMENT): ``haproxy`` (the replica answers HTTP itself, behind
    HAProxy) or ``serve-proxy`` (Serve's Python proxy passes each request on)."""
    try:
        from ray.serve._private import constants
    except ImportError:  # pragma: no cover - a Ray without it has the Python proxy only
        return "serve-proxy"
    return "haproxy" if getattr(constants, "RAY_SERVE_ENABLE_HA_PROXY", False) else "serve-proxy"


def _page_format(request: Request, fmt: str | None) -> str:
    """``json`` or a page format of :mod:`htr_ray.pages.formats`, from ``?format=`` or the Accept header."""
    try:
        from htr_ray.pages import formats
        known = dict(formats.MEDIA_TYPES)
    except ImportError:  # no page formats in this build: JSON only
        known = {}
    if fmt:
        fmt = fmt.lower()
        if fmt != "json" and fmt not in known:
            raise ApiError(400, f"unknown format {fmt!r}: one of json, {', '.join(sorted(known))}", "bad_format")
        return fmt
    accept = [a.split(";")[0].strip().lower() for a in (request.headers.get("accept") or "").split(",") if a.strip()]
    if not accept:
        return "json"
    by_type = {media.lower(): name for name, media in known.items()}
    for media in accept:
        if media in by_type:
            return by_type[media]
        if media in ("application/json", "*/*", "application/*"):
            return "json"
    raise ApiError(406, f"cannot answer in {', '.join(accept)}: send Accept: application/json or one of "
                        f"{', '.join(sorted(by_type))} (or ?format=json|{'|'.join(sorted(known))})", "not_acceptable")


@serve.deployment(name="Recognizer")
@serve.ingress(api)
class RecognizerDeployment:
    """The line model, once per replica, answering HTTP itself; lines of all requests share batches."""

    def __init__(self, pages, spec: RecognizerSpec | dict | None = None, api_key: str | None = None):
        from htr_ray.recognition import export

        spec = spec if isinstance(spec, RecognizerSpec) else DEFAULT_RECOGNIZER.replace(**(spec or {}))
        if export.is_exported(spec.model):  # an exported directory runs with its own backend (as in the bulk job)
            spec = spec.replace(backend=None, quantize=None)
        self.spec = spec
        self.recognizer = spec.build()
        # one CPU per replica: OpenCV (PNG decode, line resize) gets as many threads as the model, not a
        # pool of one per core that spins against the model and the other replicas
        import cv2

        cv2.setNumThreads(int(spec.threads or 1))
        self.model = spec.model
        self.pages = pages
        self.reader = PageReader(model=self.model)  # assembling loads no line finder
        self.batch_sizes: Counter = Counter()
        # production: HTR_API_KEY from a secret in the replica's environment; tests may pass it
        self.api_key = api_key or os.environ.get("HTR_API_KEY") or None

    def reconfigure(self, user_config: dict) -> None:
        """``user_config`` (serve_config.yaml): the batching, changed without restarting replicas."""
        if "max_batch_size" in user_config:
            self._recognize_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._recognize_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    # The model call runs on the replica's event loop on purpose: while it runs, new requests queue,
    # and the next batch takes all of them at once (with batch_wait_timeout_s 0, a request that finds
    # the queue empty is read at once instead of waiting for company that is not coming).
    @serve.batch
    async def _recognize_batch(self, lines: list[np.ndarray]) -> list:
        self.batch_sizes[len(lines)] += 1
        started = time.perf_counter()
        results = self.recognizer.recognize(lines)
        span = (started, time.perf_counter())
        return [(r, span) for r in results]

    async def recognize_lines(self, line: np.ndarray):
        """One line through the shared batches: its LineResult."""
        return (await self._recognize_batch(line))[0]

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it. A real
        forward pass, so a wedged model or a broken device is caught, not only a dead process."""
        probe = np.full((32, 64), 255, np.uint8)
        probe[12:20, 8:56] = 0
        result = self.recognizer.recognize([probe])[0]
        if result.error:
            raise RuntimeError(f"recognizer health probe failed: {result.error}")

    def _authorise(self, request: Request) -> None:
        if not self.api_key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)", "unauthorized")

    async def _handle(self, request: Request, work, timing: dict | None = None):
        """Run ``work`` on the uploaded bytes and answer JSON (or its Response); ``timing`` collects the
        stages ``work`` marks, answered as a ``Server-Timing`` header (ms) beside ``read`` and ``total``."""
        started = time.perf_counter()
        try:
            self._authorise(request)
            data = await _image_bytes(request)
            if timing is not None:
                timing["read"] = time.perf_counter() - started
            body = await work(data)
            if isinstance(body, Response):
                return body
            elapsed = time.perf_counter() - started
            body["seconds"] = round(elapsed, 4)
            headers = None
            if timing is not None:
                timing["total"] = elapsed
                headers = {"Server-Timing": ", ".join(f"{k};dur={v * 1000:.2f}" for k, v in timing.items())}
            return JSONResponse(body, headers=headers)
        except ApiError as exc:
            return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=exc.status, headers=exc.headers)
        except BackPressureError:
            exc = _overloaded("page reader")
            return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=503, headers=exc.headers)

    @api.post("/v1/recognize", summary="Recognise one line image")
    async def recognize(self, request: Request, char_confidences: bool = False):
        """``?char_confidences=true`` adds each character's confidence."""
        timing: dict[str, float] = {}

        async def work(data: bytes) -> dict:
            t0 = time.perf_counter()
            line = _decode_line(data)
            queued = time.perf_counter()
            result, (model_started, model_ended) = await self._recognize_batch(line)
            # decode: the PNG; queue: waiting for a batch to start; model: the batch (shared with its
            # other lines); answer: from the batch's end until this request's coroutine ran again
            timing.update(decode=queued - t0, queue=model_started - queued, model=model_ended - model_started,
                          answer=time.perf_counter() - model_ended)
            if result.error:
                raise ApiError(422, result.error, "unreadable")
            body = {"text": result.text, "confidence": result.confidence, "model": self.model}
            if char_confidences:
                body["char_confidences"] = result.char_confidences
            return body
        return await self._handle(request, work, timing)

    @api.post("/v1/transcribe", summary="Find and recognise the lines of a page image")
    async def transcribe(self, request: Request, format: str | None = None, char_confidences: bool = False):
        """JSON: ``{"pages": [PageResult row, ...]}`` (one per page of the file). ``?format=alto|page|hocr``
        or ``Accept: application/alto+xml`` ... answers in that page format instead."""
        fmt = None

        async def work(data: bytes):
            nonlocal fmt
            fmt = _page_format(request, format)
            prepared = await self.pages.prepare.remote(data)
            if len(prepared) == 1 and isinstance(prepared[0], PageResult) and not prepared[0].ok:
                failed = prepared[0]
                raise ApiError(_error_status(failed.error_kind), failed.error, failed.error_kind)
            results = await asyncio.gather(*[self._read_page(p) for p in prepared])
            if fmt != "json":
                from htr_ray.pages import formats

                if len(results) != 1:
                    raise ApiError(400, f"{fmt} answers one page; this file has {len(results)} (ask for JSON)",
                                   "multi_page")
                return Response(formats.render(results[0], fmt), media_type=formats.MEDIA_TYPES[fmt])
            return {"pages": [r.to_row(char_confidences) for r in results], "model": self.model}
        return await self._handle(request, work)

    async def _read_page(self, prepared) -> PageResult:
        if not isinstance(prepared, PreparedPage):
            return prepared  # an error result for this page of the file
        t0 = time.perf_counter()
        lines = await asyncio.gather(*[self.recognize_lines(c) for c in prepared.crops])
        if self.reader.unsure(prepared, lines):  # perhaps fed in upside down: read it turned as well
            turned = prepared.turned()
            turned_lines = await asyncio.gather(*[self.recognize_lines(c) for c in turned.crops])
            prepared, lines = self.reader.pick_orientation(prepared, lines, turned, turned_lines)
        return self.reader.assemble(prepared, lines, time.perf_counter() - t0)

    @api.get("/healthz", summary="Liveness")
    async def healthz(self):
        return {"status": "ok", "model": self.model}

    def _runtime(self) -> dict:
        """What runs the model: backend, quantisation, intra-op threads, and whether torch is loaded."""
        info = self.recognizer.describe()
        torch = sys.modules.get("torch")
        threads = getattr(self.recognizer.model, "threads", None) if self.recognizer.numpy_io else None
        return {"backend": info["backend"], "quantize": info["quantize"], "decoder": info["decoder"],
                "threads": threads or (torch.get_num_threads() if torch else None),
                "torch_loaded": torch is not None, "ingress": _ingress()}

    @api.get("/v1/stats", summary="Batch sizes, threads and memory of one replica of each deployment")
    async def stats(self):
        try:
            pages = await self.pages.stats.remote()
        except Exception as exc:  # stats must not fail because the page side is busy or down
            pages = {"error": f"{type(exc).__name__}: {exc}"}
        return {"recognizer": {"pid": os.getpid(), "batch_sizes": dict(self.batch_sizes), "model": self.model,
                               **self._runtime(),
                               "max_batch_size": self._recognize_batch._get_max_batch_size(),
                               "batch_wait_timeout_s": self._recognize_batch._get_batch_wait_timeout_s(),
                               **process_memory()},
                "pages": pages}


# ------------------------------------------------------------------------------------------ building


def config_deployments(path: Path | str | None = None, app: str = APP_NAME) -> dict[str, dict]:
    """Per-deployment settings of ``app`` in the Serve config file (the one place they are written),
    as ``Deployment.options`` keywords, by deployment name. {} if the file is not there."""
    import yaml

    path = Path(path or SERVE_CONFIG)
    if not path.is_file():
        log.warning("no Serve config at %s: deployments run with Ray's defaults", path)
        return {}
    cfg = yaml.safe_load(path.read_text()) or {}
    for application in cfg.get("applications") or []:
        if application.get("name") == app:
            return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in application.get("deployments") or []}
    return {}


def config_args(path: Path | str | None = None, app: str = APP_NAME) -> dict:
    """The ``args`` of ``app`` in the Serve config file."""
    import yaml

    path = Path(path or SERVE_CONFIG)
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    for application in cfg.get("applications") or []:
        if application.get("name") == app:
            return dict(application.get("args") or {})
    return {}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_app(args: dict):
    """Application builder for ``serve run`` / ``serve deploy`` / RayService: ``args`` from the config
    file (see :class:`ServeAppConfig`). Ray requires a builder to take exactly this one argument."""
    return make_app(args)


def make_app(args: dict | None = None, overrides: dict[str, dict] | None = None, config_file: str | None = None):
    """The application from ``args`` (:class:`ServeAppConfig`), its deployments set up as the Serve config
    file says; ``overrides`` (by deployment name, merged over the file's settings) are for tests and
    benchmarks."""
    cfg = ServeAppConfig.from_args(args)
    options = config_deployments(config_file)
    for name, extra in (overrides or {}).items():
        options[name] = _merge(options.get(name, {}), extra)
    printed = None if cfg.printed_filter in (None, "", "none") else cfg.printed_filter
    pages = PagesDeployment.options(**options.get("Pages", {})).bind(cfg.line_finder, printed)
    return RecognizerDeployment.options(**options.get("Recognizer", {})).bind(
        pages, dataclasses.asdict(cfg.recognizer), cfg.api_key)
