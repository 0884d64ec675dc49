"""A real two-node Ray cluster on this machine, driven the way a user drives a remote one.

A head and a worker are started as two separate `ray start --block` processes (1 CPU each, so a job
that asks for two 1-CPU workers has to use both nodes), with token authentication on, as Ray 2.60
clusters should run. Jobs go in through `ray job submit --working-dir <repo>` over the dashboard's
HTTP API, exactly as docs/deploy.md tells a user to do; afterwards the state API (`ray list tasks`)
says on which node each task and actor of the job ran, and both node ids must be there.

Token auth: `ray start --head` in 2.60 enables it when RAY_AUTH_MODE=token (or when a token already
exists in ~/.ray/auth_token). Every node and every client must then present the same token: here it
is a fresh random token in a temp file, handed to the head, the worker and `ray job submit` through
RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH (never ~/.ray, which other users of the machine share). A
client without the token is refused (test_submit_without_token_is_refused).

Only the processes started here are stopped at teardown (never `ray stop`: other clusters may be
running on this machine).
"""

from __future__ import annotations

import json
import os
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

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
PY = str(VENV_BIN / "python")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _agent_ports() -> list[str]:
    # Fixed defaults (client server 10001, dashboard agent 52365) would collide with other Ray
    # instances on the machine and between our two nodes: pick free ports for everything.
    return ["--ray-client-server-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port())]


class TwoNodeCluster:
    def __init__(self, tmp: Path, env: dict, dashboard: str, head_id: str, worker_id: str):
        self.tmp, self.env, self.dashboard = tmp, env, dashboard
        self.head_id, self.worker_id = head_id, worker_id

    def ray(self, *args, env=None, timeout=180, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([RAY, *args], env=env or self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`ray {' '.join(args)}` exited {proc.returncode}:\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
        return proc

    def submit(self, *entrypoint: str, timeout=240) -> tuple[str, str]:
        """`ray job submit --working-dir <repo> -- <entrypoint>`; waits for the end, returns (submission id, output)."""
        sid = f"htr-{uuid.uuid4().hex[:10]}"
        proc = self.ray("job", "submit", "--address", self.dashboard, "--submission-id", sid,
                        "--working-dir", str(REPO),
                        "--runtime-env-json", json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}}),
                        "--", *entrypoint, timeout=timeout, check=False)
        out = proc.stdout + proc.stderr
        status = self.ray("job", "status", "--address", self.dashboard, sid, check=False).stdout
        assert proc.returncode == 0 and "SUCCEEDED" in status, (
            f"job {' '.join(entrypoint)} did not succeed (rc={proc.returncode}):\n{out[-8000:]}")
        return sid, out

    def nodes_used_by(self, submission_id: str, want: int = 2, wait_s: float = 20.0) -> set[str]:
        """Node ids of every task and actor of the job (task events reach the state API ~1 s late)."""
        jobs = json.loads(self.ray("list", "jobs", "--address", self.dashboard, "--format", "json").stdout)
        (job,) = [j for j in jobs if j.get("submission_id") == submission_id]
        deadline = time.time() + wait_s
        while True:
            tasks = json.loads(self.ray(
                "list", "tasks", "--address", self.dashboard, "--format", "json", "--detail",
                "--limit", "10000", "--filter", f"job_id={job['job_id']}").stdout)
            nodes = {t["node_id"] for t in tasks if t.get("node_id")}
            if len(nodes) >= want or time.time() > deadline:
                return nodes
            time.sleep(1.0)


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """Head + worker as two `ray start --block` processes; S3 test server variables and the auth
    token reach every Ray worker process through the raylets' environment, as in a deployment."""
    tmp = Path(tempfile.mkdtemp(prefix="htr2n-", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1",
               RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")  # `python` in job entrypoints = this venv
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    gcs_port, dash_port = free_port(), free_port()
    common = ["--block", "--num-cpus", "1", "--object-store-memory", str(200 * 1024 * 1024),
              "--node-ip-address", "127.0.0.1"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(gcs_port), "--temp-dir", str(tmp / "ray"),
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
             "--resources", json.dumps({"htr_head": 1}), *common, *_agent_ports()],
            env=env, cwd=tmp, stdout=open(tmp / "head.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
        wait_for_port(gcs_port, timeout=90)
        procs.append(subprocess.Popen(
            [RAY, "start", "--address", f"127.0.0.1:{gcs_port}",
             "--resources", json.dumps({"htr_worker": 1}), *common, *_agent_ports()],
            env=env, cwd=tmp, stdout=open(tmp / "worker.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
        wait_for_port(dash_port, timeout=90)
        dashboard = f"http://127.0.0.1:{dash_port}"
        cluster = TwoNodeCluster(tmp, env, dashboard, "", "")
        deadline = time.time() + 90
        while True:
            for p in procs:
                assert p.poll() is None, f"`ray start` exited early: {(tmp / 'head.log').read_text()[-3000:]}" \
                                         f"\n{(tmp / 'worker.log').read_text()[-3000:]}"
            proc = cluster.ray("list", "nodes", "--address", dashboard, "--format", "json", check=False)
            nodes = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []
            alive = [n for n in nodes if n["state"] == "ALIVE"]
            if len(alive) == 2:
                break
            assert time.time() < deadline, f"2 nodes expected, got {nodes}\n{proc.stderr[-3000:]}"
            time.sleep(1.0)
        cluster.head_id = next(n["node_id"] for n in alive if n["is_head_node"])
        cluster.worker_id = next(n["node_id"] for n in alive if not n["is_head_node"])
        yield cluster
    finally:
        # SIGTERM to the `ray start --block` process makes it stop its own node (gcs, raylet, workers);
        # whatever is still left in the process group we created for it is killed after that.
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_submit_without_token_is_refused(two_nodes):
    env = {k: v for k, v in two_nodes.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(two_nodes.tmp)  # no ~/.ray/auth_token to fall back on
    proc = two_nodes.ray("job", "list", "--address", two_nodes.dashboard, env=env, check=False, timeout=60)
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stderr or "Authentication" in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------- training


def _tiny_iam(shared_data: Path, dest: Path, n: int = 48) -> Path:
    """A few dozen real IAM-OnDB lines in the IAM layout (labels.tsv + images/)."""
    src = shared_data / "iam_ondb_lines"
    lines = (src / "labels.tsv").read_text().splitlines()
    header, rows = lines[0], lines[1: n + 1]
    for row in rows:
        rel = row.split("\t")[1]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    (dest / "labels.tsv").write_text("\n".join([header, *rows]) + "\n")
    return dest


@pytest.fixture(scope="module")
def tiny_shards(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two-node-data")
    raw = _tiny_iam(shared_data, root / "iam")
    out = root / "shards"
    proc = subprocess.run([PY, "jobs/ingest.py", "--format", "iam", "--input", str(raw), "--output", str(out),
                           "--val-percent", "10", "--no-parallel"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_training_job_uses_both_nodes(two_nodes, tiny_shards, tmp_path):
    """`python jobs/train.py` with two Ray Train workers (1 CPU each, 1 CPU per node): one per node."""
    assert (REPO / "jobs" / "train.py").is_file(), "jobs/train.py does not exist yet"
    runs = tmp_path / "runs"
    sid, out = two_nodes.submit(
        "python", "jobs/train.py", "--model", "crnn", "--data", str(tiny_shards),
        "--workers", "2", "--no-use-gpu", "--epochs", "1",
        "--storage-path", str(runs), "--run-name", "two-node")
    nodes = two_nodes.nodes_used_by(sid)
    assert nodes == {two_nodes.head_id, two_nodes.worker_id}, (nodes, out[-3000:])
    assert any(runs.rglob("*")), f"training wrote nothing under {runs}"


# ---------------------------------------------------------------------------- bulk transcription


def test_bulk_transcription_job_uses_both_nodes(two_nodes, shared_data, s3_bucket):
    """`python jobs/transcribe.py` reads scans from S3 and writes results to S3 (credentials from
    the AWS_* variables in the raylets' environment), with its work spread over both nodes."""
    assert (REPO / "jobs" / "transcribe.py").is_file(), "jobs/transcribe.py does not exist yet"
    from htr_ray import storage

    src = shared_data / "iam_ondb_lines"
    rows = (src / "labels.tsv").read_text().splitlines()[1:13]
    for row in rows:
        rel = row.split("\t")[1]
        storage.write_bytes(f"{s3_bucket}/scans/{Path(rel).name}", (src / rel).read_bytes())
    sid, out = two_nodes.submit(
        "python", "jobs/transcribe.py", "--input", f"{s3_bucket}/scans/", "--output", f"{s3_bucket}/transcripts/",
        "--workers", "2", "--batch-size", "4")
    nodes = two_nodes.nodes_used_by(sid)
    assert nodes == {two_nodes.head_id, two_nodes.worker_id}, (nodes, out[-3000:])
    assert storage.list_uris(f"{s3_bucket}/transcripts/"), "no transcription results written"
