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


# ---------------------------------------------------------------------------- README, as written


def _readme_cluster_commands() -> str:
    """The bash block of README's "On a Ray cluster" section, verbatim."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### On a Ray cluster: `ray job submit`"):]
    start = section.index("```bash\n") + len("```bash\n")
    return section[start:section.index("```", start)]


def _kill_mentioning(text: str, sig: int) -> None:
    """Signal every process whose command line names ``text`` (our private temp dir: they are ours)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    os.kill(int(d.name), sig)
            except (OSError, ProcessLookupError):
                pass


def _run_readme_commands(commands: str) -> tuple[int, str, Path]:
    """Run the README block once on a private head; returns (exit status, output, temp dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="htrreadme-", dir="/tmp"))  # short: Ray's socket paths are limited
    gcs, dash = free_port(), free_port()
    private = (f"ray start --head --num-cpus 2 --port {gcs} --dashboard-port {dash} --temp-dir {tmp}/ray "
               f"--include-dashboard true --dashboard-host 127.0.0.1 --node-ip-address 127.0.0.1 "
               f"--object-store-memory {600 * 2**20} --ray-client-server-port {free_port()} "
               f"--dashboard-agent-listen-port {free_port()} --dashboard-agent-grpc-port {free_port()} "
               f"--runtime-env-agent-port {free_port()} --metrics-export-port {free_port()}")
    script = (commands.replace("ray start --head --num-cpus 2\n", private + "\n")
              .replace("http://127.0.0.1:8265", f"http://127.0.0.1:{dash}")
              .replace("$PWD/work/ray_results", str(tmp / "runs"))
              .replace("ray stop\n", ""))
    venv_bin = str(VENV_BIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp / "home"), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
               PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin))
    (tmp / "home").mkdir()
    try:
        p = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=420)
        return p.returncode, p.stdout + p.stderr, tmp
    finally:  # stop this head (`ray stop` would stop every Ray on the machine)
        _kill_mentioning(str(tmp), signal.SIGTERM)
        time.sleep(2)
        _kill_mentioning(str(tmp), signal.SIGKILL)


def test_readme_cluster_section_as_written(shared_data):
    """README's commands, run by bash from the repository root in a shell where the venv is NOT active
    (the activation line must do it) and with a HOME of its own (the token line must make the token).
    What differs from a user's shell, and only that: the head gets private ports and a private temp
    dir (other Ray instances run on this machine), the runs go to a temp folder, and `ray stop` (which
    would stop every Ray here) is replaced by stopping this head. It must finish: two workers on a
    2-CPU head while Ray Data samples the epoch (this hung before training reserved CPU for it).
    Ray gives a starting node 30 s to register, which a heavily loaded machine can miss: only that
    failure of `ray start` is tried again."""
    commands = _readme_cluster_commands()
    for needle in ("ray start --head --num-cpus 2\n", "http://127.0.0.1:8265", "$PWD/work/ray_results", "ray stop\n",
                   "source .venv/bin/activate", "export RAY_AUTH_MODE=token"):
        assert needle in commands, f"README's cluster section no longer has {needle!r}: update this test with it"
    for attempt in range(3):
        rc, out, tmp = _run_readme_commands(commands)
        try:
            if rc != 0 and "timed out during startup" in out and "ray job submit" not in out and attempt < 2:
                continue
            assert rc == 0, f"README's cluster commands exited {rc}:\n{out[-8000:]}"
            assert re.search(r"Job '\S+' succeeded", out), out[-4000:]
            assert (tmp / "home" / ".ray" / "auth_token").is_file()  # the token line made the token
            assert "reserving 0.5 CPU per worker" in out, out[-4000:]  # the job said what it did with the CPUs
            assert re.search(r"epoch 1/1 +loss [0-9.]+ +val CER", out), out[-4000:]
            best = re.findall(r"best checkpoint: (\S+)", out)[-1]
            assert best.startswith(str(tmp / "runs" / "first-run")) and checkpoint.is_checkpoint(best), best
            return
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
