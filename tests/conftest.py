"""Shared test harness: real parts only.

- ``s3_server``: moto's standalone S3 server as a subprocess on a free loopback port (the same test
  server Ray's own suite uses); tests reach it over HTTP through boto3 and pyarrow, configured only by
  the standard AWS environment variables, exactly as a user's job would be.
- ``ray_local``: one local Ray cluster for the whole test session (starting Ray costs seconds).
- ``shared_data``: the real handwriting sets in ../shared/data.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HTR_SHARED_DATA", REPO.parent / "shared" / "data"))

# Keep every process of the suite (Ray workers too) from fighting over the 2 cores with BLAS threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def s3_server():
    """Start moto_server on loopback and point the AWS variables at it for the whole session.

    Yields the endpoint URL. Variables are set in os.environ so that subprocesses (ray job submit, Ray
    workers started after this fixture) inherit them, as they would from a real deployment.
    """
    port = free_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    cmd = [str(moto_server)] if moto_server.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
        os.environ.update({
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-never-printed",
            "AWS_REGION": "us-east-1",
        })
        yield endpoint
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the test server; yields ``s3://<bucket>``."""
    from htr_ray.io import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(f"s3://{name}/")
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray cluster for the session. It starts after the S3 server so that its workers see
    the AWS variables. Tests that need Ray take this fixture."""
    import ray

    from htr_ray.distributed.runtime import ensure_ray

    if not ray.is_initialized():
        ensure_ray(num_cpus=4, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def bench():
    """``bench("peers")``: a script of bench/ loaded as a module (bench/ is not a package), once a session."""
    import importlib.util

    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]
    return load


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real data sets are expected at {SHARED_DATA} (set HTR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def line_model() -> str:
    """The shipped English line recognizer (the bulk job's and Serve's default; HTR_LINE_MODEL
    points elsewhere)."""
    from htr_ray.io import storage
    from htr_ray.distributed.transcribe import DEFAULT_LINE_MODEL

    assert storage.exists(storage.join(DEFAULT_LINE_MODEL, "model.json")), f"shipped line model missing at {DEFAULT_LINE_MODEL}"
    return DEFAULT_LINE_MODEL
