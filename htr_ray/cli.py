"""``htr-ray``: every job as one installed command, ``htr-ray <job> [flags]``.

    htr-ray transcribe --input s3://archive/scans/ --output s3://archive/transcripts/
    htr-ray train --model crnn_small --data ../shared/data/iam_ondb_lines --workers 2
    htr-ray train --help

Each subcommand runs the ``main(argv)`` of ``jobs/<job>.py``, the same file ``ray job submit -- python
jobs/<job>.py`` runs on a cluster: the jobs stay the one place where a job's flags are defined, and
this module only finds and dispatches to them. ``jobs/`` is looked up beside the package (a checkout,
an editable install, the container image's working directory), then in the current directory, then
in ``$HTR_JOBS_DIR``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

from htr_ray import paths

# subcommand -> file under jobs/
JOBS = {
    "transcribe": "transcribe.py",
    "train": "train.py",
    "evaluate": "evaluate.py",
    "ingest": "ingest.py",
    "make-dataset": "make_dataset.py",
    "export": "export.py",
    "serve": "serve.py",
    "demo": "demo.py",
}


def jobs_dir() -> Path:
    """The folder that holds the job entry points."""
    candidates = [os.environ.get("HTR_JOBS_DIR"), paths.REPO_ROOT / "jobs", Path.cwd() / "jobs"]
    for c in candidates:
        if c and (Path(c) / "train.py").is_file():
            return Path(c)
    raise FileNotFoundError("htr-ray: no jobs/ folder beside the package or in the current directory "
                            "(run from the checkout or the image's working directory, or set HTR_JOBS_DIR)")


def summary(path: Path) -> str:
    """First line of a job's module docstring, read without importing it (imports cost seconds)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load(name: str):
    """The job module ``jobs/<file>`` for subcommand ``name``."""
    path = jobs_dir() / JOBS[name]
    spec = importlib.util.spec_from_file_location(f"htr_ray_job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def usage() -> str:
    try:
        folder = jobs_dir()
        lines = [f"  {name:<14}{summary(folder / file)}" for name, file in JOBS.items()]
    except FileNotFoundError as exc:
        lines = [f"  {name}" for name in JOBS] + ["", str(exc)]
    return ("usage: htr-ray <job> [flags]     (htr-ray <job> --help: the job's flags)\n\njobs:\n"
            + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        sys.stderr.write(f"htr-ray: unknown job {name!r}\n\n" + usage())
        return 2
    module = load(name)
    sys.argv = [f"htr-ray {name}", *rest]  # argparse's prog in --help and errors
    code = module.main(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
