"""Connecting to Ray for `--engine ray`: a cluster at an address, or a local Ray started for the command."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from embeddings.errors import ClusterError

log = logging.getLogger("seqcohort")

CONNECT_TIMEOUT_S = 10.0  # a head node that does not answer a TCP connect in this long is not there
INSTALL_HINT = ("Install seqcohort again (`pip install -e .` brings Ray with its data and train extras), "
                "or run with --engine local.")


def import_ray() -> Any:
    """`ray`, or a ClusterError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ClusterError(f"--engine ray needs Ray Data and Ray Train, which are not installed ({e}). "
                           + INSTALL_HINT) from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, verbose: bool = False) -> Iterator[Any]:
    """Yield `ray`, connected: to `address` (or $RAY_ADDRESS), else to a local Ray started here.

    A Ray this process already initialised is used as it is and left running; one started or joined
    here is shut down (disconnected, for a cluster) at the end. `num_cpus` only sizes a local Ray.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if target:
            _check_reachable(target)  # Ray itself would retry an unreachable address for minutes
            ray.init(address=target, logging_level="WARNING", log_to_driver=verbose)
        else:  # "local": never join some other Ray found on this machine by accident
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=verbose)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError, OSError) as e:
        where = f"at {target!r}" + (" (from RAY_ADDRESS)" if not address else "")
        raise ClusterError(
            f"No Ray cluster answered {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. "
            "Start one (`ray up ray_cluster.yaml`, or `ray start --head` on this machine), check the "
            "address (host:6379, or ray://host:10001 for Ray Client), or leave out --address and unset "
            "RAY_ADDRESS to run on a local Ray."
        ) from None
    quiet_ray(verbose)
    resources = ray.cluster_resources()
    log.info("Ray %s: %g CPU, %g GPU", f"cluster at {target}" if target else "local instance",
             resources.get("CPU", 0), resources.get("GPU", 0))
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConnectionError unless something listens at host:port ("auto" and bare names pass)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
        pass


def quiet_ray(verbose: bool) -> None:
    """Ray's per-job INFO lines, progress bars and worker tracebacks only with --verbose."""
    import ray.data

    # quiet: a worker's error comes back as one paragraph (seqcohort.scale.embed.ray_errors), not Ray's traceback
    for name, level in (("ray", logging.WARNING), ("ray.data", logging.CRITICAL), ("ray.train", logging.CRITICAL)):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else level)
    ray.data.DataContext.get_current().enable_progress_bars = verbose


def ensure_ray() -> Any:
    """`ray`, initialised: the caller's connection, else Ray's default (RAY_ADDRESS, or a local Ray)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")
    return ray


def cluster_cpus() -> float:
    """CPUs the connected cluster has now."""
    return float(ensure_ray().cluster_resources().get("CPU", 0))


def cluster_gpus() -> float:
    """GPUs the connected cluster has (0 for none)."""
    return float(ensure_ray().cluster_resources().get("GPU", 0))
