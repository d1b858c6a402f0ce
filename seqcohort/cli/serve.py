"""`seqcohort serve`: the Ray Serve app on a local Ray instance, until Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import click

from embeddings.errors import SeqcohortError
from seqcohort.cli.options import console, handle_errors, workspace_option
from seqcohort.launch import start_app, stop_app


def serve_workspace(workspace: str | Path, host: str, port: int, config_path: str | Path | None) -> None:
    """Serve the workspace until Ctrl-C or SIGTERM, then shut Serve and Ray down cleanly."""
    from embeddings.workspace import Workspace

    Workspace(workspace).current()  # fail before anything starts when nothing is published
    stop = threading.Event()
    prev = signal.getsignal(signal.SIGTERM)
    try:
        t0 = time.perf_counter()
        ends = start_app(workspace, host, port, config_path)
        url = ends.url
        # after ray.init, which installs its own SIGTERM handler (a stack dump, then exit)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"[bold green]serving[/] {Path(workspace).resolve()} at {url} "
                      f"(started in {time.perf_counter() - t0:.0f}s) — API docs: {url}/docs — cohort studio: {url}/ui/")
        if ends.proxy_url != url:  # the ingress replica answers on `port` itself; the proxy reaches every replica
            console.print(f"Serve's proxy (slower; for several Ingress replicas): {ends.proxy_url}", highlight=False)
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


@click.command()
@workspace_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="The API, docs and studio answer here (the ingress replica itself; Serve's proxy takes a free port).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Ray Serve YAML (see configs/serve.yaml) for replicas, tunables and limits.")
@handle_errors
def serve(workspace: str, host: str, port: int, config_path: str | None) -> None:
    """Serve the workspace's cohorts over HTTP (Ray Serve); follows new versions without downtime."""
    try:
        serve_workspace(workspace, host, port, config_path)
    except ValueError as e:  # a malformed serve YAML
        raise SeqcohortError(str(e)) from None

