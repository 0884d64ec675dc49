"""Start the HTTP endpoint: the project's Serve config (serve_config.yaml) deployed on Ray.

    python jobs/serve.py                                  # http://127.0.0.1:8000/docs, a local Ray
    python jobs/serve.py --port 8080 --host 127.0.0.1
    python jobs/serve.py --address auto                   # deploy on a running cluster

It does what ``serve run serve_config.yaml`` does (the same file, every tuning setting in it), but
starts or joins Ray through :func:`htr_ray.distributed.runtime.ensure_ray` like every other job, and
lets ``--host``/``--port`` override the file's ``http_options``. It blocks until Ctrl-C or SIGTERM,
then shuts Serve down. On Kubernetes use k8s/rayservice.yaml, which embeds the same file.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Imported under another name: the ServeConfig field below is called `config` (its flag is --config),
# and inside the class body that name would shadow the module.
from htr_ray import config as flags  # noqa: E402


@dataclass
class ServeConfig:
    """Run the htr-ray Serve application from its config file (blocks until Ctrl-C)."""

    config: str = flags.field(str(REPO / "serve_config.yaml"), help="Serve config file (YAML, Ray Serve's schema)")
    address: str = flags.field(None, help="Ray cluster to deploy on (auto, host:port); default: RAY_ADDRESS, "
                                          "else a new local Ray")
    host: str = flags.field(None, help="HTTP host to listen on (default: the config file's http_options.host)")
    port: int = flags.field(None, help="HTTP port (default: the config file's http_options.port)")
    num_cpus: int = flags.field(None, help="CPUs of a new local Ray (default: all)")


def build_parser():
    return flags.build_parser(ServeConfig)


def load_schema(cfg: ServeConfig):
    """The config file as Ray Serve's :class:`ServeDeploySchema`, with ``--host``/``--port`` applied."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(Path(cfg.config).read_text())
    http = dict(raw.get("http_options") or {})
    if cfg.host:
        http["host"] = cfg.host
    if cfg.port:
        http["port"] = int(cfg.port)
    raw["http_options"] = http
    return ServeDeploySchema.model_validate(raw)


def wait_until_running(apps: list[str], stop: list, timeout_s: float = 600.0) -> str | None:
    """Block until every application is RUNNING, so that "ready" is printed only when requests are
    answered (until then the proxy says "Path not found"). Returns the failure message of an
    application that failed to deploy, else None (also when stopped or after ``timeout_s``)."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while not stop and time.monotonic() < deadline:
        status = serve.status().applications
        for name in apps:
            app = status.get(name)
            if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
                return f"{name}: {app.message}"
        if all(name in status and status[name].status == ApplicationStatus.RUNNING for name in apps):
            return None
        time.sleep(0.5)
    if not stop:
        print(f"still deploying after {timeout_s:.0f} s; see `serve status`", file=sys.stderr, flush=True)
    return None


def main(argv=None) -> int:
    cfg = flags.from_args(ServeConfig, argv)
    schema = load_schema(cfg)

    from ray import serve

    from htr_ray.distributed.runtime import ensure_ray

    ensure_ray(cfg.address, num_cpus=cfg.num_cpus, namespace="serve")
    http = schema.http_options.model_dump()
    serve.start(proxy_location=schema.proxy_location, http_options=http)
    # The controller builds each application from its import_path and args and applies the file's
    # per-deployment settings, exactly as `serve deploy` / `serve run <file>` / the RayService do.
    serve.context._get_global_client().deploy_apps(schema, _blocking=False)
    names = ", ".join(f"{a.name} at {a.route_prefix}" for a in schema.applications)
    print(f"deploying {names} (replicas load their models: this takes a while) ...", flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        failed = wait_until_running([a.name for a in schema.applications], stop)
        if failed:
            print(f"deploy failed: {failed}", file=sys.stderr, flush=True)
            serve.shutdown()
            return 1
        if not stop:
            print(f"ready: http://{http['host']}:{http['port']}/docs (Ctrl-C stops)", flush=True)
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("shutting Serve down", flush=True)
    serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
