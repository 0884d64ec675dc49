"""`ray start --head` + `ray job submit --working-dir . -- python jobs/train.py ...`, as a user runs it.

The head is started here as its own `ray start --head --block` process with a private temp dir,
free ports and 2 CPUs; it is stopped by terminating that process (never `ray stop`, which would stop
every Ray instance on the machine). Ray 2.60 turns token authentication on for new clusters: the
head runs with RAY_AUTH_MODE=token and a fresh token in a private file (RAY_AUTH_TOKEN_PATH), and
`ray job submit` gets the same two variables, so the job API accepts it.

The job trains crnn_small with 2 Ray Train workers of 1 CPU on a tiny real IAM-OnDB shard set; it
must succeed and leave a checkpoint; submitted again with more epochs it resumes (epoch 2 follows 1).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import free_port, wait_for_port
from htr_ray.models import checkpoint
from htr_ray.io import shards
from htr_ray.training.loop import load_rows

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def head():
    tmp = Path(tempfile.mkdtemp(prefix="htrjob-", dir="/tmp"))  # short: Ray's socket paths are limited
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1",
               RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    for k in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(k, None)
    gcs, dash = free_port(), free_port()
    cmd = [RAY, "start", "--head", "--block", "--port", str(gcs), "--num-cpus", "2", "--temp-dir", str(tmp / "ray"),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--node-ip-address", "127.0.0.1", "--object-store-memory", str(200 * 2**20),
           "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
           "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
           "--metrics-export-port", str(free_port())]
    log = open(tmp / "head.log", "ab")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(dash, timeout=120)
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 300
        while True:  # the job API answers a little after the port opens (slowly on a loaded machine)
            try:
                p = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True,
                                   text=True, timeout=90)
                if p.returncode == 0:
                    break
                err = p.stderr[-2000:]
            except subprocess.TimeoutExpired:
                err = "`ray job list` timed out"
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail(f"Ray head not ready: {err}\n{(tmp / 'head.log').read_text()[-3000:]}")
            time.sleep(2)
        yield {"address": address, "env": env, "tmp": tmp}
    finally:
        if proc.poll() is None:
            proc.terminate()  # `ray start --block` stops its own node on SIGTERM
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for d in Path("/proc").iterdir():  # any process of ours that left the group (by our unique temp dir)
            if d.name.isdigit():
                try:
                    if str(tmp).encode() in (d / "cmdline").read_bytes():
                        os.kill(int(d.name), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_shards(shared_data, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("job_iam")
    rows = [r for r in load_rows(str(shared_data / "iam_ondb_lines"), "val") if len(r["text"]) <= 16][:32]
    samples = [shards.Sample(id=r["id"], image=r["image"], text=r["text"], source="iam_ondb", split=s)
               for s in ("train", "val") for r in rows]
    shards.write_samples(str(root), samples)
    return str(root)


def _submit(head, *args: str) -> str:
    sid = f"train-{uuid.uuid4().hex[:8]}"
    cmd = [RAY, "job", "submit", "--address", head["address"], "--submission-id", sid, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}}),
           "--", "python", "jobs/train.py", *args]
    p = subprocess.run(cmd, env=head["env"], cwd=REPO, capture_output=True, text=True, timeout=500)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"job failed (rc {p.returncode}):\n{out[-6000:]}"
    assert "SUCCEEDED" in out or "succeeded" in out, out[-3000:]
    return out


def test_submitted_training_job_checkpoints_and_resumes(head, tiny_shards, tmp_path):
    runs = tmp_path / "runs"
    args = ["--model", "crnn_small", "--data", tiny_shards, "--test-split", "", "--workers", "2",
            "--cpus-per-worker", "1", "--batch-size", "8", "--threads", "1", "--loader-threads", "1",
            "--max-failures", "0", "--storage-path", str(runs), "--name", "jobrun", "--augment", "0"]
    out = _submit(head, *args, "--epochs", "1")
    assert re.search(r"epoch 1/1 +loss [0-9.]+ +val CER [0-9.]+ +WER [0-9.]+ +[0-9.]+ samples/s", out), out[-3000:]
    best = re.findall(r"best checkpoint: (\S+)", out)[-1]
    assert best != "None" and checkpoint.is_checkpoint(best)
    assert checkpoint.read_meta(best)["epoch"] == 1
    out2 = _submit(head, *args, "--epochs", "2")
    assert "epoch 2/2" in out2 and "epoch 1/2" not in out2, out2[-3000:]  # resumed, not restarted
    best2 = re.findall(r"best checkpoint: (\S+)", out2)[-1]
    metas = [checkpoint.read_meta(str(p.parent)) for p in runs.rglob("model.json")]
    assert sorted(m["epoch"] for m in metas) == [1, 2], [m["epoch"] for m in metas]
    assert checkpoint.is_checkpoint(best2)
