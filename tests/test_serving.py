"""The Serve application on the session's local Ray, over real HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import time

import cv2
import numpy as np
import pytest
import requests
import yaml

from htr_ray.io import images, storage
from htr_ray.pages import reader as pages
from htr_ray.data.synth.pages import PageGenerator
from htr_ray.data.synth.render import LineGenerator

from conftest import REPO, free_port


def wait_healthy(base: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base}/healthz never answered 200")


@pytest.fixture(scope="module")
def serve_app(ray_local, line_model):
    from ray import serve

    from htr_ray.distributed.serve import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"model": line_model, "max_batch_size": 8, "batch_wait_timeout_s": 0.05})
    serve.run(app, name="htr", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url
    serve.delete("htr")
    serve.shutdown()


@pytest.fixture(scope="module")
def line_images():
    gen = LineGenerator(seed=5, split="test")
    return [gen.sample(i)[0] for i in range(12)]


def png(gray):
    return images.encode_png(gray)


def test_recognize_same_text_as_recognizer_directly(serve_app, line_images, line_model):
    from htr_ray.recognition.recognizer import Recognizer

    rec = Recognizer.from_uri(line_model)
    for gray in line_images[:4]:
        direct = rec.recognize([gray])[0]
        raw = requests.post(f"{serve_app}/v1/recognize", data=png(gray), headers={"Content-Type": "image/png"}, timeout=60)
        multipart = requests.post(f"{serve_app}/v1/recognize", files={"file": ("line.png", png(gray), "image/png")}, timeout=60)
        for resp in (raw, multipart):
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["text"] == direct.text
            assert body["confidence"] == pytest.approx(direct.confidence, abs=1e-4)
            assert len(body["char_confidences"]) == len(body["text"])


def test_transcribe_page_matches_the_bulk_job_path(serve_app, line_model):
    from htr_ray.recognition.recognizer import Recognizer

    page = PageGenerator(seed=2, split="test").sample(0).image
    resp = requests.post(f"{serve_app}/v1/transcribe", data=png(page), headers={"Content-Type": "image/png"}, timeout=120)
    assert resp.status_code == 200, resp.text
    served = resp.json()["pages"][0]
    from htr_ray.layout.printed import DEFAULT_FILTER, PrintedFilter

    # Serve applies the shipped printed-text filter by default, as the bulk job does
    bulk = pages.transcribe_bytes(png(page), Recognizer.from_uri(line_model),
                                  printed_filter=PrintedFilter.from_uri(DEFAULT_FILTER))[0]
    assert served["text"] == bulk["text"]
    assert [ln["bbox"] for ln in served["lines"]] == [ln["bbox"] for ln in bulk["lines"]]
    assert [ln["printed"] for ln in served["lines"]] == [ln["printed"] for ln in bulk["lines"]]
    assert any(ln["printed"] for ln in served["lines"]) and not all(ln["printed"] for ln in served["lines"])


def test_concurrent_requests_are_batched(serve_app, line_images):
    def one(gray):
        return requests.post(f"{serve_app}/v1/recognize", data=png(gray), headers={"Content-Type": "image/png"}, timeout=120)

    with cf.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, line_images * 3))
    assert all(r.status_code == 200 for r in responses)
    stats = requests.get(f"{serve_app}/v1/stats", timeout=30).json()
    assert max(int(k) for k in stats["batch_sizes"]) > 1, stats


def test_autoscaling_config_is_applied(serve_app):
    from ray import serve

    details = serve.context._get_global_client().get_serve_details()
    deployment = details["applications"]["htr"]["deployments"]["Recognizer"]
    auto = deployment["deployment_config"]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 4, 16)
    assert deployment["deployment_config"]["max_ongoing_requests"] >= 8
    running = [r for r in deployment["replicas"] if r["state"] == "RUNNING"]
    assert 1 <= len(running) <= 4
    status = serve.status().applications["htr"].deployments["Recognizer"]
    assert status.replica_states.get("RUNNING", 0) == len(running)


def malformed_requests(page_png: bytes):
    rng = random.Random(0)
    bodies = [
        ("no body", b"", {"Content-Type": "image/png"}, 400),
        ("json", b'{"image": "abc"}', {"Content-Type": "application/json"}, 415),
        ("text", b"hello", {"Content-Type": "text/plain"}, 415),
        ("not an image", b"GIF89a but not really" * 3, {"Content-Type": "image/png"}, 422),
        ("truncated", page_png[: len(page_png) // 3], {"Content-Type": "image/png"}, 422),
        ("one pixel", png(np.zeros((1, 1), np.uint8)), {"Content-Type": "image/png"}, 422),
        ("too many pixels", png(np.zeros((7000, 7000), np.uint8)), {"Content-Type": "image/png"}, 413),
        ("empty multipart", None, None, 400),
    ]
    for i in range(300):
        name, body, headers, expected = bodies[i % len(bodies)]
        if body is not None and name in ("not an image", "truncated") and i > 50:
            # random corruptions of a real PNG: flipped bytes in the body
            data = bytearray(page_png[: rng.randint(60, len(page_png))])
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(8, len(data))] = rng.randrange(256)
            body = bytes(data)
            expected = None  # 200 if it still decodes, else a 4xx
        yield name, body, headers, expected


def test_fuzz_malformed_requests_never_5xx_and_service_keeps_working(serve_app, line_images):
    page_png = png(line_images[0])
    statuses = []
    for name, body, headers, expected in malformed_requests(page_png):
        if body is None and headers is None:
            r = requests.post(f"{serve_app}/v1/recognize", files={"other": ("x.txt", b"x")}, timeout=60)
        else:
            r = requests.post(f"{serve_app}/v1/recognize", data=body, headers=headers, timeout=60)
        statuses.append(r.status_code)
        assert r.status_code < 500, (name, r.status_code, r.text)
        if expected is not None:
            assert r.status_code == expected, (name, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"], name
    assert len(statuses) == 300
    good = requests.post(f"{serve_app}/v1/recognize", data=page_png, headers={"Content-Type": "image/png"}, timeout=60)
    assert good.status_code == 200 and "text" in good.json()


def test_api_key_and_overload(ray_local, line_model, line_images):
    """A second app: API key required, and a recognizer queue of 1 so that a burst is refused with
    503 + Retry-After rather than left to time out."""
    from ray import serve

    from htr_ray.distributed.serve import Ingress, RecognizerDeployment

    rec = RecognizerDeployment.options(name="TinyQueue", max_ongoing_requests=1, max_queued_requests=1,
                                       autoscaling_config=None, num_replicas=1).bind(line_model, max_batch_size=1)
    app = Ingress.options(name="KeyedIngress").bind(rec, line_model, "s3cret-key")
    serve.run(app, name="keyed", route_prefix="/keyed", blocking=False)
    http = serve.context._get_global_client().get_serve_details()["http_options"]
    base = f"http://{http['host']}:{http['port']}/keyed"
    wait_healthy(base)
    body = png(line_images[1])
    assert requests.post(f"{base}/v1/recognize", data=body, headers={"Content-Type": "image/png"}, timeout=60).status_code == 401
    assert requests.post(f"{base}/v1/recognize", data=body, timeout=60,
                         headers={"Content-Type": "image/png", "X-API-Key": "wrong"}).status_code == 401
    ok = requests.post(f"{base}/v1/recognize", data=body, timeout=60,
                       headers={"Content-Type": "image/png", "Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200, ok.text

    page = png(PageGenerator(seed=4, split="test").sample(1).image)

    def burst(_):
        return requests.post(f"{base}/v1/transcribe", data=page, timeout=120,
                             headers={"Content-Type": "image/png", "X-API-Key": "s3cret-key"})

    with cf.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(burst, range(8)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert refused, f"no request was refused under overload: {codes}"
    assert refused[0].headers.get("Retry-After") and refused[0].json()["kind"] == "overloaded"
    serve.delete("keyed")


def test_serve_config_file_is_valid_for_serve():
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(cfg) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(cfg)
    app = schema.applications[0]
    assert app.import_path == "htr_ray.distributed.serve:build_app"
    names = {d.name for d in app.deployments}
    assert names == {"Recognizer", "Ingress"}
    rec = next(d for d in app.deployments if d.name == "Recognizer")
    assert rec.max_ongoing_requests >= app.args["max_batch_size"]
