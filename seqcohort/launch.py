"""Start and stop the Ray Serve app on a local Ray instance (used by `seqcohort serve`, tests and bench)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Ray Serve's throughput-optimised settings (no per-request thread hop, buffered access logs, ...).
# Measured with bench/serve_latency.py; override by exporting the variable yourself.
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def app_args(workspace: str | Path, config_path: str | Path | None = None) -> tuple[dict[str, Any], dict[str, dict]]:
    """(builder args, per-deployment overrides) from the code defaults and an optional serve YAML."""
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


def start_app(workspace: str | Path, host: str = "127.0.0.1", port: int = 8000, config_path: str | Path | None = None,
              num_cpus: int | None = None) -> str:
    """Start Ray (if needed) + Serve + the app without blocking; returns the base URL."""
    import ray
    from ray import serve

    from embeddings.workspace import Workspace
    from serving.app import build_app
    from serving.config import APP_NAME, AppArgs

    Workspace(workspace).current()  # a clear error before Ray starts when nothing is published
    args, _ = app_args(workspace, config_path)
    a = AppArgs(**args)
    for k, v in THROUGHPUT_ENV.items():
        os.environ.setdefault(k, v)
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(a), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


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

