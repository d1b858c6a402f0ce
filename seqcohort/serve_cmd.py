"""`seqcohort serve`: the Ray Serve app on a local Ray instance, until Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from embeddings.errors import SeqcohortError
from seqcohort.cli import cli, console, handle_errors, workspace_option

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


def serve_workspace(workspace: str | Path, host: str, port: int, config_path: str | Path | None) -> None:
    """Serve the workspace until Ctrl-C or SIGTERM, then shut Serve and Ray down cleanly."""
    from embeddings.workspace import Workspace

    Workspace(workspace).current()  # fail before anything starts when nothing is published
    stop = threading.Event()
    prev = signal.getsignal(signal.SIGTERM)
    try:
        t0 = time.perf_counter()
        url = start_app(workspace, host, port, config_path)
        # after ray.init, which installs its own SIGTERM handler (a stack dump, then exit)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"[bold green]serving[/] {Path(workspace).resolve()} at {url} "
                      f"(started in {time.perf_counter() - t0:.0f}s) — API docs: {url}/docs")
        key = " -H 'X-API-Key: $SEQCOHORT_API_KEY'" if os.environ.get("SEQCOHORT_API_KEY") else ""
        console.print("try:", highlight=False)
        console.print(f"  curl -s{key} -X POST {url}/v1/assign -H 'content-type: application/json' -d "
                      "'{\"events\": [{\"ts\": \"2025-06-01T12:00:00Z\", \"event\": \"view\", \"item\": \"sku-1\"}]}'",
                      highlight=False, soft_wrap=True)
        console.print(f"  curl -s{key} {url}/v1/cohorts", highlight=False, soft_wrap=True)
        console.print("Ctrl-C to stop.")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        console.print("shutting down ...")
        stop_app()
        console.print("stopped.")


@cli.command()
@workspace_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Ray Serve YAML (see configs/serve.yaml) for replicas, tunables and limits.")
@handle_errors
def serve(workspace: str, host: str, port: int, config_path: str | None) -> None:
    """Serve the workspace's cohorts over HTTP (Ray Serve); follows new versions without downtime."""
    try:
        serve_workspace(workspace, host, port, config_path)
    except ValueError as e:  # a malformed serve YAML
        raise SeqcohortError(str(e)) from None
