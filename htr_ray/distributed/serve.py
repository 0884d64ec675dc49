"""Ray Serve application: an HTTP ingress (FastAPI) in front of a batching, autoscaling recognizer.

    POST /v1/recognize   one line image  -> text, confidence, per-character confidences
    POST /v1/transcribe  one page image  -> lines with text, confidence and box (the bulk job's code path)
    GET  /healthz        liveness of the app (model replicas have their own check_health)
    GET  /docs, /openapi.json   API docs

Images come as the raw request body (``Content-Type: image/...`` or ``application/octet-stream``)
or as a multipart upload (field ``file``). With ``HTR_API_KEY`` set (env var or a Kubernetes secret),
requests need ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, else 401.

The line images of every request, single lines and page lines alike, go to one batched method on the
recognizer replicas (``@serve.batch``), so concurrent requests share model calls. When the replicas'
queues are full (``max_queued_requests``) the request is answered 503 with ``Retry-After``.

Build with :func:`build_app` (the ``import_path`` of serve_config.yaml is ``htr_ray.distributed.serve:build_app``).
"""

# No `from __future__ import annotations` here: FastAPI must see the real Request annotation.
import asyncio
import hmac
import logging
import os
import time
from collections import Counter

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError

from htr_ray.io import images
from htr_ray.pages import reader as pages
from htr_ray.layout import segment

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = int(os.environ.get("HTR_MAX_UPLOAD_BYTES", 20 * 1024 * 1024))
MAX_PIXELS = int(os.environ.get("HTR_SERVE_MAX_PIXELS", 40_000_000))
IMAGE_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


# --------------------------------------------------------------------------------------- the model


@serve.deployment(
    name="Recognizer",
    max_ongoing_requests=64,  # >= max_batch_size x max_concurrent_batches, or batches never fill
    max_queued_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=10,
)
class RecognizerDeployment:
    """Loads the recognizer once per replica; recognises line images in batches across requests."""

    def __init__(self, model: str, device: str = "cpu", decoder: str = "greedy", lexicon: str | None = None,
                 lm: str | None = None, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.01,
                 width_bucket: int = 32):
        from htr_ray.recognition.recognizer import Recognizer

        # width_bucket must match the bulk job's (both default to 32) for the same image to give the same text
        self.recognizer = Recognizer.from_uri(model, device=device, decoder=decoder, lexicon=lexicon, lm=lm,
                                              width_bucket=width_bucket)
        self.model = model
        self.batch_sizes: Counter = Counter()
        self.recognize_line.set_max_batch_size(max_batch_size)
        self.recognize_line.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def reconfigure(self, config: dict) -> None:
        """``user_config`` of the deployment: change batching without restarting replicas."""
        if "max_batch_size" in config:
            self.recognize_line.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self.recognize_line.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def recognize_line(self, lines: list[np.ndarray]) -> list[dict]:
        self.batch_sizes[len(lines)] += 1
        return [r.to_dict() for r in self.recognizer.recognize(lines)]

    def stats(self) -> dict:
        return {"batch_sizes": dict(self.batch_sizes), "model": self.model, "pid": os.getpid()}

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it. A real
        forward pass, so a wedged model or a broken device is caught, not only a dead process."""
        probe = np.full((32, 64), 255, np.uint8)
        probe[12:20, 8:56] = 0
        result = self.recognizer.recognize([probe])[0]
        if result.error:
            raise RuntimeError(f"recognizer health probe failed: {result.error}")


# ------------------------------------------------------------------------------------------ ingress

api = FastAPI(
    title="htr-ray",
    version="0.1.0",
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


def _decode(data: bytes) -> list[np.ndarray]:
    try:
        return images.decode_pages(data, max_pixels=MAX_PIXELS, min_side=2)
    except images.ImageError as exc:
        status = 413 if exc.kind == "too_large" else 422
        raise ApiError(status, str(exc), exc.kind) from exc


class _Known:
    """Adapter: results already computed by the batched replicas, handed to pages.recognize_pages so
    the page assembly stays the single function the bulk job uses too."""

    def __init__(self, results):
        self.results = results

    def recognize(self, crops):
        return self.results


@serve.deployment(name="Ingress", max_ongoing_requests=256, max_queued_requests=512,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 64},
                  ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Ingress:
    def __init__(self, recognizer, model: str = "", api_key: str | None = None, printed_filter: str | None = None):
        from htr_ray.layout.printed import PrintedFilter

        self.recognizer = recognizer
        self.model = model
        # the bulk job's printed-text filter (tiny, CPU): /v1/transcribe splits lines exactly as it does
        self.printed_filter = PrintedFilter.from_uri(printed_filter) if printed_filter else None
        # production: HTR_API_KEY from a secret in the replica's environment; tests may pass it
        self.api_key = api_key or os.environ.get("HTR_API_KEY") or None

    def _authorise(self, request: Request) -> None:
        if not self.api_key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)", "unauthorized")

    async def _recognize_many(self, crops: list[np.ndarray]) -> list:
        from htr_ray.recognition.recognizer import LineResult

        dicts = await asyncio.gather(*[self.recognizer.recognize_line.remote(c) for c in crops])
        return [LineResult(d["text"], d["confidence"], d["char_confidences"], d.get("error")) for d in dicts]

    async def _handle(self, request: Request, work):
        started = time.time()
        try:
            self._authorise(request)
            body = await work(await _image_bytes(request))
            body["seconds"] = round(time.time() - started, 4)
            return JSONResponse(body)
        except ApiError as exc:
            return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=exc.status)
        except BackPressureError:
            return JSONResponse({"error": "the recognizer is overloaded, retry shortly", "kind": "overloaded"},
                                status_code=503, headers={"Retry-After": "1"})

    @api.post("/v1/recognize", summary="Recognise one line image")
    async def recognize(self, request: Request):
        async def work(data: bytes) -> dict:
            gray = _decode(data)[0]
            result = (await self._recognize_many([gray]))[0]
            if result.error:
                raise ApiError(422, result.error, "unreadable")
            return {"text": result.text, "confidence": result.confidence,
                    "char_confidences": result.char_confidences, "model": self.model}
        return await self._handle(request, work)

    @api.post("/v1/transcribe", summary="Find and recognise the lines of a page image")
    async def transcribe(self, request: Request):
        async def work(data: bytes) -> dict:
            decoded = _decode(data)
            rows = []
            for i, gray in enumerate(decoded):
                seg = segment.segment_page(gray)
                job = pages.PageJob("upload", i, len(decoded), seg.page, seg.boxes, seg.angle,
                                    (gray.shape[1], gray.shape[0]))
                if self.printed_filter is not None:
                    pages.split_printed(job, self.printed_filter)
                crops = [segment.crop(job.gray, b) for b in job.boxes]
                results = await self._recognize_many(crops) if crops else []
                row = pages.recognize_pages([job], _Known(results), self.model)[0]
                rows.append({k: row[k] for k in ("page", "text", "lines", "width", "height", "angle")})
            return {"pages": rows, "model": self.model}
        return await self._handle(request, work)

    @api.get("/healthz", summary="Liveness")
    async def healthz(self):
        return {"status": "ok", "model": self.model}

    @api.get("/v1/stats", summary="Batch sizes seen by one recognizer replica")
    async def stats(self):
        return await self.recognizer.stats.remote()


def build_app(args: dict | None = None):
    """Application builder for ``serve run`` / ``serve deploy`` / RayService (``args`` from the
    config file): model URI, device, decoder, lexicon, lm, max_batch_size, batch_wait_timeout_s,
    width_bucket, printed_filter (checkpoint URI; default the shipped one, "none" to read lines whole)."""
    from htr_ray.layout.printed import DEFAULT_FILTER
    from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL

    args = dict(args or {})
    model = args.pop("model", None) or DEFAULT_LINE_MODEL
    api_key = args.pop("api_key", None)
    printed_filter = args.pop("printed_filter", DEFAULT_FILTER)
    recognizer = RecognizerDeployment.bind(model, **args)
    return Ingress.bind(recognizer, model, api_key, None if printed_filter in (None, "", "none") else printed_filter)
