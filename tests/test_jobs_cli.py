"""Every job answers ``--help`` both ways a user starts it: ``python jobs/X.py`` (what ``ray job submit``
runs) and the installed ``htr-ray X`` command. A job that cannot even be imported (a name clash in its
config class, a stale import after a move) fails here, not in front of a user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from htr_ray import cli

REPO = Path(__file__).resolve().parents[1]
HTR_RAY = Path(sys.executable).with_name("htr-ray")
JOBS = sorted(cli.JOBS.items())

pytestmark = pytest.mark.timeout(300)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def helps() -> dict:
    """Both forms of ``--help`` for every job, run concurrently (each import costs seconds)."""
    procs = {}
    for name, file in JOBS:
        procs[("script", name)] = subprocess.Popen([sys.executable, f"jobs/{file}", "--help"], cwd=REPO, env=_env(),
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs[("command", name)] = subprocess.Popen([str(HTR_RAY), name, "--help"], cwd="/", env=_env(),
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for key, p in procs.items():
        stdout, stderr = p.communicate(timeout=240)
        out[key] = (p.returncode, stdout, stderr)
    return out


def test_every_job_file_is_listed():
    assert sorted(f for _, f in JOBS) == sorted(p.name for p in (REPO / "jobs").glob("*.py"))


@pytest.mark.parametrize("name", [n for n, _ in JOBS])
def test_python_jobs_file_help(helps, name):
    rc, out, err = helps[("script", name)]
    assert rc == 0, f"python jobs/{cli.JOBS[name]} --help exited {rc}:\n{err[-3000:]}"
    assert "usage:" in out and "--help" in out, out[:500]


@pytest.mark.parametrize("name", [n for n, _ in JOBS])
def test_installed_command_help(helps, name):
    assert HTR_RAY.is_file(), f"{HTR_RAY} is not installed (pip install -e . / scripts/setup)"
    rc, out, err = helps[("command", name)]
    assert rc == 0, f"htr-ray {name} --help exited {rc}:\n{err[-3000:]}"
    assert out.startswith(f"usage: htr-ray {name}"), out[:300]


def test_htr_ray_lists_its_jobs_and_refuses_unknown_ones(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in cli.JOBS:
        assert f"\n  {name} " in listing
    assert cli.main(["no-such-job"]) == 2
    assert "unknown job 'no-such-job'" in capsys.readouterr().err


def test_no_job_inserts_into_sys_path():
    """The package is installed (scripts/setup: ``pip install -e .``; the image: ``pip install .``), and
    under ``ray job submit --working-dir .`` Ray puts the uploaded copy first on PYTHONPATH: a job that
    inserted its own folder into ``sys.path`` would only hide an install that is missing."""
    for file in (REPO / "jobs").glob("*.py"):
        assert "sys.path.insert" not in file.read_text(), f"{file.name} still inserts into sys.path"


def test_readme_jobs_table_names_real_jobs_and_flags(helps):
    """Every command in README's Jobs table is a job, and every flag it shows is one of that job's flags."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Jobs"):text.index("### On a Ray cluster")]
    commands = re.findall(r"^\| `htr-ray ([a-z-]+)([^`]*)`", table, flags=re.M)
    assert {name for name, _ in commands} == set(cli.JOBS), commands
    for name, rest in commands:
        _, usage, _ = helps[("command", name)]
        for flag in re.findall(r"--[a-z][a-z0-9-]*", rest):
            assert re.search(rf"{re.escape(flag)}\b", usage), f"README shows `htr-ray {name} {flag}`; not a flag of it"


def test_ray_is_started_in_one_place():
    """Only :func:`htr_ray.distributed.runtime.ensure_ray` calls ``ray.init``: every job, shell, benchmark
    and test fixture starts or joins Ray through it, so they all join a cluster the same way."""
    import re

    runtime = REPO / "htr_ray" / "distributed" / "runtime.py"
    assert re.search(r"\bray\.init\(", runtime.read_text())
    callers = [str(f.relative_to(REPO)) for folder in ("htr_ray", "jobs", "bench", "tests", "scripts")
               for f in (REPO / folder).rglob("*.py")
               if f != runtime and re.search(r"\bray\.init\(", f.read_text(encoding="utf-8"))]
    assert callers == [], f"these call ray.init themselves instead of ensure_ray: {callers}"
