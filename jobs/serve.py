"""Start the HTTP endpoint locally for development: `serve run` on the project's Serve config.

    python jobs/serve.py                      # http://127.0.0.1:8000/docs
    python jobs/serve.py --config serve_config.yaml --address auto

On a cluster use `serve deploy serve_config.yaml`, or the RayService manifest in k8s/.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from htr_ray import config# noqa: E402


@dataclass
class ServeConfig:
    """Run the htr-ray Serve application from its config file (blocks until Ctrl-C)."""

    config: str = config.field(str(REPO / "serve_config.yaml"), help="Serve config file")
    address: str = config.field(None, help="Ray address to deploy on (default: start a local Ray)")


def build_parser():
    return config.build_parser(ServeConfig)


def main(argv=None) -> int:
    cfg = config.from_args(ServeConfig, argv)
    serve_cli = shutil.which("serve") or str(Path(sys.executable).with_name("serve"))
    cmd = [serve_cli, "run", cfg.config]
    if cfg.address:
        cmd += ["--address", cfg.address]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
