"""Start and stop the Ray Serve app on a local Ray instance (used by `seqcohort serve`, tests and bench).

The URL `start_app` returns is the ingress replica's own HTTP server (Serve's *direct ingress*), on the
port the caller asked for: on 2 cores it answers `POST /v1/assign` about 5x faster than Serve's proxy,
which adds a process hop and a second HTTP parse per request (bench/serve_latency.py measures both).
Serve's proxy still runs, on a free port, and reaches every ingress replica.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.errors import SeqcohortError

log = logging.getLogger("seqcohort.serving")

# Ray Serve's throughput-optimised settings: direct ingress, gRPC between replicas, no per-request
# thread hop, buffered access logs. Measured with bench/serve_latency.py; export a variable to override.
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
_MIN, _MAX = "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"


@dataclass(frozen=True)
class Endpoints:
    """Where the app answers. `url` is the one to print and use; `proxy_url` is Serve's proxy."""

    url: str
    proxy_url: str
    direct: bool  # True: `url` is the ingress replica's own port (direct ingress)


def app_args(workspace: str | Path, config_path: str | Path | None = None) -> tuple[dict[str, Any], dict[str, dict]]:
    """(builder args, per-deployment overrides) from the code defaults and an optional serve YAML.

    The models run inside the ingress replica unless the YAML sets `args.models_in_ingress` or
    configures `Encoder` / `Assigner` deployments (then they are deployments of their own).
    """
    from serving.config import load_serve_yaml

    args: dict[str, Any] = {}
    overrides: dict[str, dict] = {}
    if config_path is not None:
        entry = load_serve_yaml(config_path)
        args = dict(entry.get("args") or {})
        for d in entry.get("deployments") or []:
            d = dict(d)
            overrides[d.pop("name")] = d
    args["workspace"] = str(Path(workspace).resolve())
    # one machine, no say in the YAML: the models run inside the ingress replica (no actor hop per
    # request; on 2 cores half or less of the CPU per request of separate deployments, bench/serve_latency.py)
    args.setdefault("models_in_ingress", not ({"Encoder", "Assigner"} & overrides.keys()))
    for key, name in (("ingress_options", "Ingress"), ("encoder_options", "Encoder"), ("assigner_options", "Assigner")):
        if name in overrides:
            o = dict(overrides[name])
            tun = o.pop("user_config", None)
            if tun is not None:
                args["encoder" if name == "Encoder" else "assigner"] = tun
            args[key] = {**args.get(key, {}), **o} if o else args.get(key, {})
            if not args[key]:
                args.pop(key)
    return args, overrides


def _flag(env: dict[str, str], name: str) -> bool | None:
    v = env.get(name)
    return None if v is None else v.strip().lower() in ("1", "true", "yes")


def serve_env(port: int, ingress_replicas: int, environ: dict[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """(env vars for Serve's controller and replicas, whether the ingress replicas listen on `port` themselves).

    Direct ingress is on unless the caller's environment turns it (or throughput mode) off, or asks
    for HAProxy (which then listens on `port`). The replicas take the ports `port` .. `port` +
    replicas - 1, unless the caller set Serve's direct-ingress range; a released port is reused at
    once (no quarantine: that is for HAProxy's stale server lists), so a replaced replica answers
    on the same port.
    """
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in THROUGHPUT_ENV.items() if k not in environ}
    merged = {**environ, **env}
    if _flag(merged, "RAY_SERVE_ENABLE_HA_PROXY"):
        return env, False
    direct = _flag(merged, "RAY_SERVE_ENABLE_DIRECT_INGRESS")
    if direct is None:
        direct = bool(_flag(merged, "RAY_SERVE_THROUGHPUT_OPTIMIZED"))
    if not direct or _MIN in environ or _MAX in environ:
        return env, False
    # Serve's allocator takes ports from range(MIN, MAX): MAX is exclusive
    env.update({_MIN: str(port), _MAX: str(port + max(ingress_replicas, 1)), "RAY_SERVE_PORT_QUARANTINE_S": "0"})
    return env, True


def _ingress_replicas(opts: dict[str, Any]) -> int:
    auto = opts.get("autoscaling_config") or {}
    n = opts.get("num_replicas", 1)
    return int(auto.get("max_replicas", 1) if auto or n == "auto" else n)


def _check_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise SeqcohortError(f"cannot listen on {host}:{port} ({e.strerror}): another process holds the port; "
                                 "stop it or pass another --port") from None


def ingress_ports(app_name: str | None = None) -> list[int]:
    """The HTTP ports of the running ingress replicas (Serve's direct ingress); [] when there are none."""
    import ray
    from ray.serve.context import _get_global_client

    from serving.config import APP_NAME

    try:
        groups = ray.get(_get_global_client()._controller.get_target_groups.remote(app_name or APP_NAME), timeout=10)
    except Exception:  # a Serve without direct ingress, or a Ray without this controller method
        return []
    return sorted({t.port for g in groups if getattr(g, "app_name", "") == (app_name or APP_NAME)
                   and str(getattr(g.protocol, "value", g.protocol)) == "HTTP" for t in g.targets})


def start_app(workspace: str | Path, host: str = "127.0.0.1", port: int = 8000, config_path: str | Path | None = None,
              num_cpus: int | None = None, overrides: dict[str, Any] | None = None) -> Endpoints:
    """Start Ray (if needed) + Serve + the app without blocking; returns where it answers.

    With direct ingress (the default), the ingress replica listens on `port` and Serve's proxy on
    a free port; otherwise (throughput mode or direct ingress turned off, or HAProxy mode) Serve's
    proxy or HAProxy listens on `port`. `overrides` replace builder args (e.g. {"models_in_ingress": True}).
    """
    import ray
    from ray import serve

    from embeddings.workspace import Workspace
    from serving.app import build_app
    from serving.config import APP_NAME, AppArgs
    from serving.ports import free_port

    Workspace(workspace).current()  # a clear error before Ray starts when nothing is published
    args, _ = app_args(workspace, config_path)
    a = AppArgs(**{**args, **(overrides or {})})
    env, pinned = serve_env(port, _ingress_replicas(a.ingress_options))
    _check_free(host, port)
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    controller = {"runtime_env": {"env_vars": env}} if env else None  # the controller's children inherit them
    for attempt in range(3):  # a free port can be taken before the proxy binds it
        proxy_port = free_port(host) if pinned else port
        try:
            serve.start(http_options={"host": host, "port": proxy_port}, controller_options=controller)
            break
        except Exception as e:
            if not pinned or "bind" not in str(e) or attempt == 2:
                raise
            serve.shutdown()
    serve.run(build_app(a), name=APP_NAME, route_prefix="/", blocking=False)
    proxy = f"http://{host}:{proxy_port}"
    ports = ingress_ports(APP_NAME)
    if pinned:
        if port in ports:
            return Endpoints(f"http://{host}:{port}", proxy, True)
        # the replica could not take the port (another process took it after the check)
        log.warning("the ingress replica is not listening on port %d (%s); use Serve's proxy at %s", port, ports, proxy)
        return Endpoints(proxy, proxy, False)
    if ports and (_MIN in os.environ or _MAX in os.environ) and not _flag(dict(os.environ), "RAY_SERVE_ENABLE_HA_PROXY"):
        return Endpoints(f"http://{host}:{ports[0]}", proxy, True)  # the caller chose the replicas' range
    return Endpoints(proxy, proxy, False)


def stop_app() -> None:
    import ray
    from ray import serve

    try:
        try:  # a bounded wait: in throughput-optimised mode the controller's graceful stop can hang 30 s
            from ray.serve.context import _get_global_client

            _get_global_client().shutdown(timeout_s=5)
        except Exception:
            serve.shutdown()
    finally:
        ray.shutdown()  # the local instance: whatever is left goes with it
