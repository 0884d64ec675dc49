"""Start or join Ray, once, the same way for every job.

Inside ``ray job submit`` (``RAY_ADDRESS`` is set by the job's environment) or when an address is
given, the job joins that cluster; otherwise it starts a private local one, never attaching to a
cluster that happens to run on the machine. Every job and shell calls :func:`ensure_ray`; nothing else
calls ``ray.init``.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


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
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=init_kwargs.pop("include_dashboard", False),
                 logging_level=logging_level, **init_kwargs)
    return ray


def cluster_cpus() -> float:
    """CPUs of the Ray cluster this process is connected to."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))
