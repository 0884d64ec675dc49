"""A real two-node Ray cluster on this machine, driven the way a user drives a remote one.

A head and a worker are started as two separate `ray start --block` processes (1 CPU each, so a job
that asks for two 1-CPU workers has to use both nodes), with token authentication on, as Ray 2.60
clusters should run. Jobs go in through `ray job submit --working-dir <repo>` over the dashboard's
HTTP API, exactly as docs/deploy.md tells a user to do; afterwards the state API (what `ray list tasks` reads)
and the job's record say on which node each task, actor and driver of the job ran. Only placements
that Ray guarantees are asserted: resources (two 1-CPU training workers on two 1-CPU nodes) and
entrypoint resources (the driver of a job that asks for a resource only the worker node has).

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

from conftest import free_port
from htr_ray.data import labels

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _agent_ports() -> list[str]:
    # Fixed defaults (client server 10001, dashboard agent 52365) would collide with other Ray
    # instances on the machine and between our two nodes: pick free ports for everything.
    return ["--ray-client-server-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port())]


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (our unique temp dir: they are ours)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


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

    def submit(self, *entrypoint: str, timeout=240, options: tuple[str, ...] = ()) -> tuple[str, str]:
        """`ray job submit --working-dir <repo> [options] -- <entrypoint>`; waits for the end, returns
        (submission id, output)."""
        sid = f"htr-{uuid.uuid4().hex[:10]}"
        proc = self.ray("job", "submit", "--address", self.dashboard, "--submission-id", sid,
                        "--working-dir", str(REPO), *options,
                        "--runtime-env-json", json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}}),
                        "--", *entrypoint, timeout=timeout, check=False)
        out = proc.stdout + proc.stderr
        status = self.get(f"/api/jobs/{sid}").get("status")
        assert proc.returncode == 0 and status == "SUCCEEDED", (
            f"job {' '.join(entrypoint)} did not succeed (rc={proc.returncode}, {status}):\n{out[-8000:]}")
        return sid, out

    def get(self, path: str, **params):
        """GET on the dashboard's HTTP API with the cluster token (as the Ray CLI does)."""
        import requests

        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        r = requests.get(self.dashboard + path, params=params, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        body = r.json()
        return body["data"]["result"] if path.startswith("/api/v0/") else body

    def state(self, resource: str, **filters) -> list[dict]:
        """The state API (what `ray list <resource> --detail` shows), filtered by equality."""
        params = {"limit": 10000, "detail": "true", "timeout": 30}
        if filters:
            params.update(filter_keys=list(filters), filter_predicates=["="] * len(filters),
                          filter_values=list(filters.values()))
        return self.get(f"/api/v0/{resource}", **params)["result"]

    def nodes_used_by(self, submission_id: str, want: int = 2, wait_s: float = 20.0) -> set[str]:
        """Node ids of every task and actor of the job (task events reach the state API ~1 s late)."""
        job_id = self.get(f"/api/jobs/{submission_id}")["job_id"]
        deadline = time.time() + wait_s
        while True:
            nodes = {t["node_id"] for t in self.state("tasks", job_id=job_id) if t.get("node_id")}
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

    def start(name: str, args: list[str]) -> subprocess.Popen:
        p = subprocess.Popen([RAY, "start", *args, *common, *_agent_ports()], env=env, cwd=tmp,
                             stdout=open(tmp / f"{name}.log", "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    def wait_alive(cluster: TwoNodeCluster, n: int, watch: subprocess.Popen, timeout: float = 120) -> list[dict] | None:
        """Nodes once n are ALIVE; None if `watch` exits first (Ray gives a raylet 30 s to register,
        which a machine under heavy load can miss)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if watch.poll() is not None:
                return None
            try:
                nodes = cluster.state("nodes")
            except Exception:  # the dashboard's API comes up a little after its port
                nodes = []
            alive = [nd for nd in nodes if nd["state"] == "ALIVE"]
            if len(alive) >= n:
                return alive
            time.sleep(0.5)
        raise TimeoutError(f"{n} Ray nodes not alive after {timeout}s; logs in {tmp}")

    def logs() -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(tmp.glob("*.log")))

    try:
        head = start("head", ["--head", "--port", str(gcs_port), "--temp-dir", str(tmp / "ray"),
                              "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                              "--dashboard-port", str(dash_port), "--resources", json.dumps({"htr_head": 1})])
        cluster = TwoNodeCluster(tmp, env, f"http://127.0.0.1:{dash_port}", "", "")
        assert wait_alive(cluster, 1, head) is not None, f"the head did not start:\n{logs()}"
        for attempt in range(5):  # Ray gives a starting raylet 30 s to register: a loaded machine can miss it
            # a temp dir (session folder, logs, unpacked working dirs) of its own, as on its own machine
            worker = start("worker", ["--address", f"127.0.0.1:{gcs_port}", "--temp-dir", str(tmp / f"rayw{attempt}"),
                                      "--resources", json.dumps({"htr_worker": 1})])
            alive = wait_alive(cluster, 2, worker)
            if alive is not None:
                break
            assert head.poll() is None, f"the head died:\n{logs()}"
        else:
            pytest.fail(f"the worker node did not start in 5 attempts:\n{logs()}")
        cluster.head_id = next(nd["node_id"] for nd in alive if nd["is_head_node"])
        cluster.worker_id = next(nd["node_id"] for nd in alive if not nd["is_head_node"])
        yield cluster
    finally:
        # SIGTERM to the `ray start --block` process makes it stop its own node (gcs, raylet, workers);
        # whatever is still left in the process group we created for it is killed after that.
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 8  # a graceful stop waits for idle workers; no need to be patient here
        for p in reversed(procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        for pid in _pids_mentioning(str(tmp)):  # anything of ours that left the process groups
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def test_submit_without_token_is_refused(two_nodes):
    env = {k: v for k, v in two_nodes.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(two_nodes.tmp)  # no ~/.ray/auth_token to fall back on
    proc = two_nodes.ray("job", "list", "--address", two_nodes.dashboard, env=env, check=False, timeout=60)
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stderr or "Authentication" in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_iam(shared_data, tmp_path_factory) -> Path:
    """40 real IAM-OnDB lines from many different forms, in the IAM layout (labels.tsv + images/)."""
    src = shared_data / "iam_ondb_lines"
    dest = tmp_path_factory.mktemp("two-node-iam")
    rows = labels.read_rows(str(src))[::250][:40]
    for row in rows:
        (dest / row.image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.image_uri(), dest / row.image)
    (dest / "labels.tsv").write_text("\n".join(["\t".join(labels.HEADER)] +
                                               [f"{r.line_id}\t{r.image}\t{r.text}" for r in rows]) + "\n")
    return dest


@pytest.fixture(scope="module")
def train_run(two_nodes, tiny_iam, tmp_path_factory):
    """`python jobs/train.py` submitted to the cluster: two Ray Train workers of 1 CPU, one epoch."""
    if not (REPO / "jobs" / "train.py").is_file():
        pytest.fail("jobs/train.py does not exist yet")
    runs = tmp_path_factory.mktemp("two-node-runs")
    sid, out = two_nodes.submit(
        "python", "jobs/train.py", "--model", "crnn_small", "--data", str(tiny_iam),
        "--val-split", "train", "--test-split", "", "--max-val", "16",
        "--workers", "2", "--no-use-gpu", "--cpus-per-worker", "1", "--epochs", "1", "--batch-size", "8",
        "--threads", "1", "--loader-threads", "1", "--max-failures", "0",
        "--storage-path", str(runs), "--name", "two-node")
    found = re.findall(r"best checkpoint: (\S+)", out)
    return sid, out, runs, (found[-1] if found and found[-1] != "None" else None)


def test_training_job_uses_both_nodes(two_nodes, train_run):
    sid, out, runs, checkpoint = train_run
    nodes = two_nodes.nodes_used_by(sid)
    assert nodes == {two_nodes.head_id, two_nodes.worker_id}, (nodes, out[-3000:])
    assert checkpoint, f"the job reported no best checkpoint:\n{out[-3000:]}"
    assert any(runs.rglob("*")), f"training wrote nothing under {runs}"


# ---------------------------------------------------------------------------- bulk transcription


def test_bulk_transcription_job_runs_on_the_worker_node_with_s3(two_nodes, train_run, shared_data, s3_bucket):
    """`python jobs/transcribe.py` reads scans from S3 and writes results to S3 (credentials from
    the AWS_* variables in the raylets' environment), with the model the training job just made.
    Placement is asserted only where Ray guarantees it: the driver is put on the worker node by an
    entrypoint resource only that node has (`--entrypoint-resources '{"htr_worker": 1}'`), so the job's
    S3 listing, result commits and summary happen on a node that is not the head; its tasks and actors
    go wherever Ray Data puts them, on nodes of this cluster. (Which node Ray Data picks for each task is
    scheduling chance: asserting that both nodes got some of it failed now and then.) Every input, the
    broken one too, gets its result row."""
    if not (REPO / "jobs" / "transcribe.py").is_file():
        pytest.fail("jobs/transcribe.py does not exist yet")
    checkpoint = train_run[3]
    assert checkpoint, "no checkpoint from the training job to transcribe with"
    from htr_ray.io import storage

    src = shared_data / "iam_ondb_lines"
    rows = labels.read_rows(str(src))[::800][:8]
    for row in rows:
        storage.write_bytes(f"{s3_bucket}/scans/{Path(row.image).name}", storage.read_bytes(row.image_uri()))
    storage.write_bytes(f"{s3_bucket}/scans/broken.png", b"\x89PNG\r\n\x1a\n not really")
    sid, out = two_nodes.submit(
        "python", "jobs/transcribe.py", "--input", f"{s3_bucket}/scans/", "--output", f"{s3_bucket}/transcripts/",
        "--model", checkpoint, "--workers", "1", "--batch-size", "2",
        options=("--entrypoint-resources", json.dumps({"htr_worker": 1})))
    assert two_nodes.get(f"/api/jobs/{sid}")["driver_node_id"] == two_nodes.worker_id, out[-3000:]
    nodes = two_nodes.nodes_used_by(sid, want=1)
    assert nodes and nodes <= {two_nodes.head_id, two_nodes.worker_id}, (nodes, out[-3000:])
    summary = json.loads(storage.read_bytes(f"{s3_bucket}/transcripts/_summary.json"))
    assert summary["output"]["objects"] == len(rows) + 1, summary
    assert summary["output"]["ok"] >= len(rows), summary
