"""The Serve application on the session's local Ray, over real HTTP; and `python jobs/serve.py` as a
user starts it."""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import requests
import yaml

from htr_ray.data.synth.pages import PageGenerator
from htr_ray.data.synth.render import LineGenerator
from htr_ray.io import images

from conftest import REPO, free_port

SERVE_CONFIG = yaml.safe_load((REPO / "serve_config.yaml").read_text())
# The test session's Ray has 4 CPUs and runs two apps here: half a CPU per replica, everything else as
# serve_config.yaml says.
SMALL = {"Recognizer": {"ray_actor_options": {"num_cpus": 0.5}}, "Pages": {"ray_actor_options": {"num_cpus": 0.5}}}


def file_deployment(name: str) -> dict:
    (app,) = SERVE_CONFIG["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


def wait_healthy(base: str, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
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

    from htr_ray.distributed.serve import make_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = make_app({"recognizer": {"model": line_model}}, overrides=SMALL)
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


def served_spec(line_model):
    """The recogniser spec the app of serve_config.yaml runs, on the test's model."""
    from htr_ray.distributed.serve import ServeAppConfig

    args = dict(SERVE_CONFIG["applications"][0]["args"])
    args["recognizer"] = {**(args.get("recognizer") or {}), "model": line_model}
    return ServeAppConfig.from_args(args).recognizer


def test_serve_reads_with_the_bulk_jobs_recognizer(line_model):
    """One recogniser default for both paths: Serve's spec (as serve_config.yaml leaves it) is the bulk
    job's, so the same line reads the same over HTTP and in the bulk job."""
    from htr_ray.distributed.serve import DEFAULT_RECOGNIZER, ServeAppConfig
    from htr_ray.distributed.transcribe import TranscribeConfig

    bulk = TranscribeConfig(input="unused", output="unused").recognizer
    assert DEFAULT_RECOGNIZER == bulk and ServeAppConfig().recognizer == bulk
    assert (bulk.backend, bulk.quantize) == ("onnx", "int8")
    assert served_spec(line_model) == bulk.replace(model=line_model)
    # a backend other than onnx does not inherit onnx's int8; unknown options are refused
    assert ServeAppConfig.from_args({"recognizer": {"backend": "torch"}}).recognizer.quantize is None
    with pytest.raises(ValueError, match="unknown recognizer options"):
        ServeAppConfig.from_args({"recognizer": {"backnd": "onnx"}})


def test_recognize_same_text_as_recognizer_directly(serve_app, line_images, line_model):
    spec = served_spec(line_model)
    rec = spec.build()
    assert rec.describe()["backend"] == "onnx" and rec.describe()["quantize"] == "int8"
    for gray in line_images[:4]:
        direct = rec.recognize([gray])[0]
        raw = requests.post(f"{serve_app}/v1/recognize", data=png(gray), headers={"Content-Type": "image/png"}, timeout=60)
        multipart = requests.post(f"{serve_app}/v1/recognize?char_confidences=true",
                                  files={"file": ("line.png", png(gray), "image/png")}, timeout=60)
        for resp in (raw, multipart):
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["text"] == direct.text
            assert body["confidence"] == pytest.approx(direct.confidence, abs=1e-4)
        # per-character confidences only on request (they are most of the bytes of an answer)
        assert "char_confidences" not in raw.json()
        assert multipart.json()["char_confidences"] == pytest.approx(direct.char_confidences, abs=1e-4)
        # where the replica's time went, as a Server-Timing header (ms): the stages add up to the total
        timing = {k: float(v) for k, v in (part.strip().split(";dur=") for part in raw.headers["Server-Timing"].split(","))}
        assert set(timing) == {"read", "decode", "queue", "model", "answer", "total"}, timing
        assert all(v >= 0 for v in timing.values()) and timing["model"] > 0, timing
        assert sum(v for k, v in timing.items() if k != "total") <= timing["total"] + 0.05, timing
        assert timing["total"] / 1000 == pytest.approx(raw.json()["seconds"], abs=1e-3)


def test_transcribe_page_matches_the_bulk_job_path(serve_app, line_model):
    from htr_ray.layout.printed import DEFAULT_FILTER
    from htr_ray.pages.reader import PageReader
    from htr_ray.pages.results import PageResult

    page = png(PageGenerator(seed=2, split="test").sample(0).image)
    resp = requests.post(f"{serve_app}/v1/transcribe?char_confidences=true", data=page,
                         headers={"Content-Type": "image/png"}, timeout=120)
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["pages"]
    served = PageResult.from_row(row)
    # the bulk job's reader, with the line finder and printed filter serve_config.yaml names
    args = SERVE_CONFIG["applications"][0]["args"]
    bulk = PageReader(args.get("line_finder", "auto"), printed_filter=args.get("printed_filter", DEFAULT_FILTER)) \
        .read("upload", page, served_spec(line_model).build())[0]
    assert served.ok and bulk.ok
    assert served.text == bulk.text and served.text.strip()
    assert [ln.bbox for ln in served.lines] == [ln.bbox for ln in bulk.lines]
    assert [ln.kind for ln in served.lines] == [ln.kind for ln in bulk.lines]
    # ONNX int8 is dynamic quantisation: activations are scaled per model call, so a line's scores move
    # (by < 1e-3 here) with the lines it shares a call with, and Serve's batches of a page's crops need
    # not be the bulk job's (a lone line at /v1/recognize matches to 1e-4, test above)
    for a, b in zip(served.lines, bulk.lines):
        assert a.char_confidences == pytest.approx(b.char_confidences, abs=2e-3) and a.char_confidences
    assert set(row["timings"]) == {"decode", "find_lines", "recognize", "assemble"}


def test_transcribe_reads_a_page_fed_in_upside_down(serve_app):
    """Serve turns an unsure page as the bulk job's reader does (PageReader.unsure / pick_orientation)."""
    from htr_ray.data.synth.layout_pages import compose_page
    from htr_ray.evaluation.metrics import char_errors

    page = compose_page(1, "test", "iam_plain")  # real handwriting of held-out forms
    answers = [requests.post(f"{serve_app}/v1/transcribe", data=png(img), timeout=120,
                             headers={"Content-Type": "image/png"})
               for img in (page.image, np.ascontiguousarray(page.image[::-1, ::-1]))]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    (upright,), (turned,) = (r.json()["pages"] for r in answers)
    assert abs(upright["angle"]) < 10 and abs(abs(turned["angle"]) - 180) < 10
    truth = page.handwritten_text
    cer = [char_errors(truth, p["text"])[0] / len(truth) for p in (upright, turned)]
    assert cer[1] <= cer[0] + 0.05, cer  # the turned page reads about as well as the upright one


def test_transcribe_answers_in_page_formats(serve_app):
    from htr_ray.pages import formats

    page = png(PageGenerator(seed=3, split="test").sample(0).image)
    post = lambda query="", **headers: requests.post(  # noqa: E731
        f"{serve_app}/v1/transcribe{query}", data=page, timeout=120, headers={"Content-Type": "image/png", **headers})
    as_json = post()
    assert as_json.status_code == 200 and as_json.headers["content-type"].startswith("application/json")
    n_lines = len(as_json.json()["pages"][0]["lines"])
    for fmt, media in formats.MEDIA_TYPES.items():
        for resp in (post(f"?format={fmt}"), post(Accept=media)):
            assert resp.status_code == 200, (fmt, resp.text[:300])
            assert resp.headers["content-type"].split(";")[0] == media
            root = ET.fromstring(resp.content)
            text_lines = [e for e in root.iter() if e.tag.split("}")[-1] == "TextLine"
                          or (e.get("class") or "") == "ocr_line"]
            assert len(text_lines) == n_lines, fmt
    bad = post("?format=docx")
    assert bad.status_code == 400 and "docx" in bad.json()["error"] and "alto" in bad.json()["error"]
    refused = post(Accept="image/png")
    assert refused.status_code == 406 and "application/alto+xml" in refused.json()["error"]


def test_concurrent_requests_are_batched(serve_app, line_images):
    def one(gray):
        return requests.post(f"{serve_app}/v1/recognize", data=png(gray), headers={"Content-Type": "image/png"}, timeout=120)

    with cf.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, line_images * 3))
    assert all(r.status_code == 200 for r in responses)
    stats = requests.get(f"{serve_app}/v1/stats", timeout=30).json()
    rec = stats["recognizer"]
    assert max(int(k) for k in rec["batch_sizes"]) > 1, stats
    # the batching is what serve_config.yaml's user_config says, and memory is reported
    assert rec["max_batch_size"] == file_deployment("Recognizer")["user_config"]["max_batch_size"]
    assert rec["batch_wait_timeout_s"] == file_deployment("Recognizer")["user_config"]["batch_wait_timeout_s"]
    assert rec["peak_rss_mb"] > 50 and stats["pages"]["peak_rss_mb"] > 50
    # the replica runs what serve_config.yaml says: the bulk job's ONNX int8 on one thread
    assert (rec["backend"], rec["quantize"], rec["threads"]) == ("onnx", "int8", 1), rec
    # and answers HTTP itself behind HAProxy: the local Ray was started with runtime.SERVE_ENVIRONMENT
    assert rec["ingress"] == "haproxy", rec


def test_deployments_run_with_the_config_files_settings(serve_app):
    """Tuning is written once, in serve_config.yaml: an app built in Python gets the same settings."""
    from ray import serve

    details = serve.context._get_global_client().get_serve_details()["applications"]["htr"]["deployments"]
    assert set(details) == {"Recognizer", "Pages"}
    for name, deployment in details.items():
        want = file_deployment(name)
        got = deployment["deployment_config"]
        for key in ("max_ongoing_requests", "max_queued_requests", "user_config", "health_check_period_s"):
            if key in want:
                assert got[key] == want[key], (name, key)
        for key, value in want["autoscaling_config"].items():
            assert got["autoscaling_config"][key] == value, (name, key)
        assert got["backpressure_config"] == want["backpressure_config"], name
        running = [r for r in deployment["replicas"] if r["state"] == "RUNNING"]
        assert 1 <= len(running) <= want["autoscaling_config"]["max_replicas"]


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
    for path in ("/v1/recognize", "/v1/transcribe"):  # a page endpoint's bad input is a 4xx too
        bad = requests.post(f"{serve_app}{path}", data=page_png[:100], headers={"Content-Type": "image/png"}, timeout=60)
        assert bad.status_code == 422 and bad.json()["kind"], (path, bad.text)
    good = requests.post(f"{serve_app}/v1/recognize", data=page_png, headers={"Content-Type": "image/png"}, timeout=60)
    assert good.status_code == 200 and "text" in good.json()


# Overload: one replica, a queue of QUEUED at the proxy, MAX_ONGOING at the replica. Ray Serve admits at
# most QUEUED + MAX_ONGOING requests at any moment and answers the rest 503 at once.
MAX_ONGOING, QUEUED, BURST = 2, 4, 200


def test_api_key_and_overload_burst_is_refused_fast_with_retry_after(serve_app, line_model, line_images):
    """A burst of 200 simultaneous requests against 1 replica with a small queue (set through the same
    deployment settings serve_config.yaml holds): the excess gets 503 + Retry-After within 2 s, never a
    time-out, and every accepted request finishes within the stated budget."""
    from ray import serve

    from htr_ray.distributed.serve import make_app

    overrides = {"Recognizer": {"num_replicas": 1, "autoscaling_config": None, "max_ongoing_requests": MAX_ONGOING,
                                "max_queued_requests": QUEUED, "user_config": {"max_batch_size": MAX_ONGOING},
                                "ray_actor_options": {"num_cpus": 0.5}},
                 "Pages": {"num_replicas": 1, "autoscaling_config": None, "ray_actor_options": {"num_cpus": 0.5}}}
    app = make_app({"recognizer": {"model": line_model}, "api_key": "s3cret-key", "printed_filter": "none"},
                   overrides=overrides)
    serve.run(app, name="burst", route_prefix="/burst", blocking=False)
    base = f"{serve_app}/burst"
    wait_healthy(base)
    body = png(line_images[1])
    key = {"Content-Type": "image/png", "X-API-Key": "s3cret-key"}
    assert requests.post(f"{base}/v1/recognize", data=body, headers={"Content-Type": "image/png"}, timeout=60).status_code == 401
    assert requests.post(f"{base}/v1/recognize", data=body, timeout=60,
                         headers={"Content-Type": "image/png", "X-API-Key": "wrong"}).status_code == 401
    ok = requests.post(f"{base}/v1/recognize", data=body, timeout=60,
                       headers={"Content-Type": "image/png", "Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200, ok.text

    # one request's latency here and now (warm), to state the budget for a full queue in the same terms
    t = time.perf_counter()
    assert requests.post(f"{base}/v1/recognize", data=body, headers=key, timeout=60).status_code == 200
    one = time.perf_counter() - t
    # accepted requests wait for at most QUEUED + MAX_ONGOING ahead of them; x4 slack for a busy machine
    budget = 4 * (QUEUED + MAX_ONGOING + 1) * max(one, 0.05) + 2.0

    start = threading.Barrier(BURST)
    host, port = serve_app.split("//")[1].split(":")

    def client(_):
        # connected before the barrier: the clock measures the server's answer, not the client's connect
        conn = http.client.HTTPConnection(host, int(port), timeout=budget + 30)
        conn.connect()
        start.wait()
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/burst/v1/recognize", body=body, headers=key)
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
        except OSError as exc:
            return "error", time.perf_counter() - t0, repr(exc), None
        finally:
            conn.close()
        return r.status, time.perf_counter() - t0, text, r.getheader("Retry-After")

    with cf.ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(client, range(BURST)))
    serve.delete("burst")

    codes = [r[0] for r in results]
    assert set(codes) <= {200, 503}, [r for r in results if r[0] not in (200, 503)][:3]
    accepted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert accepted, "nothing was served during the burst"
    # the queue held at most QUEUED + MAX_ONGOING at a time; requests finish far slower than 200 arrive
    assert len(refused) >= BURST // 2, f"{len(refused)} of {BURST} refused"
    assert all(r[3] and int(r[3]) >= 1 for r in refused), "a 503 without Retry-After"
    waits = sorted(r[1] for r in refused)
    print(f"burst: {len(accepted)} accepted, {len(refused)} refused; refusal p50 {waits[len(waits) // 2]:.3f} s, "
          f"max {waits[-1]:.3f} s; slowest accepted {max(r[1] for r in accepted):.3f} s, budget {budget:.2f} s")
    assert waits[-1] < 2.0, f"a refusal took {waits[-1]:.2f} s"
    slowest_accepted = max(r[1] for r in accepted)
    assert slowest_accepted < budget, f"an accepted request took {slowest_accepted:.2f} s, budget {budget:.2f} s"


def test_a_local_ray_starts_with_the_haproxy_ingress_and_ports_of_its_own(monkeypatch):
    """ensure_ray's environment for a new local Ray: HAProxy on, its stats and metrics on free ports
    outside the ephemeral range (no outbound connection can take them first); the caller's own
    settings win; nothing is left in this process's environment afterwards."""
    from htr_ray.distributed import runtime

    keys = [*runtime.SERVE_ENVIRONMENT, *runtime.LOCAL_HAPROXY_PORTS]
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    with runtime._local_serve_environment():
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        ports = [int(os.environ[k]) for k in runtime.LOCAL_HAPROXY_PORTS]
        assert all(runtime.HAPROXY_PORT_RANGE[0] <= p <= runtime.HAPROXY_PORT_RANGE[1] for p in ports), ports
        assert len(set(ports)) == len(ports)
    assert not [k for k in keys if k in os.environ]
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    with runtime._local_serve_environment():
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_serve_config_file_is_valid_for_serve():
    from ray.serve.schema import ServeDeploySchema

    from htr_ray.distributed.serve import ServeAppConfig

    schema = ServeDeploySchema.model_validate(SERVE_CONFIG)
    (app,) = schema.applications
    assert app.import_path == "htr_ray.distributed.serve:build_app"
    assert {d.name for d in app.deployments} == {"Recognizer", "Pages"}
    ServeAppConfig.from_args(app.args)  # the args are the app's own config, recognizer a RecognizerSpec
    rec = next(d for d in app.deployments if d.name == "Recognizer")
    assert rec.max_ongoing_requests >= rec.user_config["max_batch_size"]
    for dep in app.deployments:  # overload is a fast 503 with Retry-After, not a time-out
        assert dep.max_queued_requests > 0 and dep.backpressure_config.retry_after_s >= 1
    with pytest.raises(ValueError, match="recognizer"):
        ServeAppConfig.from_args({"decoder": "beam"})  # recognizer options go under recognizer:


def test_serve_job_help_and_config_overrides(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_jobs_serve", REPO / "jobs" / "serve.py")
    serve_job = sys.modules["_jobs_serve"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_job)  # it crashed right here once (a field shadowed a module)
    with pytest.raises(SystemExit) as e:
        serve_job.main(["--help"])
    assert e.value.code == 0 and "--config" in capsys.readouterr().out
    from htr_ray import config as flags

    cfg = flags.from_args(serve_job.ServeConfig, ["--port", "8123", "--host", "127.0.0.1"])
    schema = serve_job.load_schema(cfg)
    assert (schema.http_options.host, schema.http_options.port) == ("127.0.0.1", 8123)
    assert schema.applications[0].name == "htr"


@pytest.mark.slow
def test_python_jobs_serve_starts_and_answers(line_images, tmp_path):
    """README's command as a user types it: a fresh local Ray, the app from serve_config.yaml, a line
    read over HTTP, and a clean stop on SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OMP_NUM_THREADS"] = "1"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "serve.py"), "--host", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while "ready: http" not in (tmp_path / "serve.log").read_text():  # printed once the app is RUNNING
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        # "ready" means it answers: the proxy learns the new route within moments, not the ~30 s of a
        # replica start that "Path not found" used to cover (30 s: room for a loaded CI machine)
        wait_healthy(base, timeout=30, proc=proc)
        r = requests.post(f"{base}/v1/recognize", data=png(line_images[2]), headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 200 and r.json()["text"], r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
