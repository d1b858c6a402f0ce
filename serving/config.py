"""Serving configuration: the typed application-builder arguments and the generated serve YAML.

`configs/serve.yaml` is generated from these defaults (`python -m serving.config [WORKSPACE]`), so
Ray's own `serve run configs/serve.yaml` / `serve deploy configs/serve.yaml` and
`seqcohort serve` start the same application.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

APP_NAME = "seqcohort"
IMPORT_PATH = "serving.app:build_app"
API_KEY_ENV = "SEQCOHORT_API_KEY"
ADMIN_KEY_ENV = "SEQCOHORT_ADMIN_KEY"


class EncoderTunables(BaseModel):
    """Encoder `user_config` (changeable at runtime through `reconfigure`, no restart)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(32, ge=1, le=1024)  # requests merged into one forward pass
    batch_wait_timeout_s: float = Field(0.002, ge=0, le=1)  # how long a batch waits to fill up
    torch_threads: int = Field(1, ge=1, le=64)  # intra-op threads per replica (1: replicas share cores)
    watch_interval_s: float = Field(2.0, ge=0)  # poll the workspace's `current` link; 0 disables


class AssignerTunables(BaseModel):
    """Assigner `user_config`."""

    model_config = ConfigDict(extra="forbid")
    n_neighbors: int = Field(5, ge=0, le=100)  # known users returned as evidence
    watch_interval_s: float = Field(2.0, ge=0)
    keep_versions: int = Field(3, ge=1, le=10)  # versions kept in memory (requests pinned to old ones finish)


class Limits(BaseModel):
    """Request limits enforced by the ingress (413 / 422 naming the limit)."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(1_000_000, ge=1024)  # request body size
    max_events: int = Field(1000, ge=1)  # events per user in one request
    max_batch_users: int = Field(256, ge=1)  # users in one /batch call
    max_page_size: int = Field(10_000, ge=1)  # members per page


class AppArgs(BaseModel):
    """Arguments of the typed application builder `serving.app:build_app`."""

    model_config = ConfigDict(extra="forbid")
    workspace: str  # workspace directory (versions/ + current)
    api_key: str | None = None  # read key; default: $SEQCOHORT_API_KEY; none: endpoints are open
    admin_key: str | None = None  # admin key for /v1/admin/reload; default: $SEQCOHORT_ADMIN_KEY
    limits: Limits = Field(default_factory=Limits)
    encoder: EncoderTunables = Field(default_factory=EncoderTunables)
    assigner: AssignerTunables = Field(default_factory=AssignerTunables)
    retries: int = Field(5, ge=0, le=10)  # ingress retries (0.1 s doubling) of a call whose replica died
    # True: featurise, encode and assign inside the ingress replica (one deployment, no actor hop per
    # request; small CPU models; tunables fixed at start). False: Encoder and Assigner deployments of their own.
    models_in_ingress: bool = False
    # Per-deployment options (num_replicas, ray_actor_options, ...) passed to `.options()`;
    # the serve YAML's `deployments:` section overrides these the Ray way.
    ingress_options: dict[str, Any] = Field(
        default_factory=lambda: {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25},
                                 "max_ongoing_requests": 256,
                                 "graceful_shutdown_timeout_s": 2,
                                 "health_check_period_s": 2, "health_check_timeout_s": 10})
    encoder_options: dict[str, Any] = Field(
        default_factory=lambda: {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5},
                                 "max_ongoing_requests": 256,
                                 "graceful_shutdown_timeout_s": 2,
                                 "health_check_period_s": 2, "health_check_timeout_s": 10})
    assigner_options: dict[str, Any] = Field(
        default_factory=lambda: {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25},
                                 "max_ongoing_requests": 256,
                                 "graceful_shutdown_timeout_s": 2,
                                 "health_check_period_s": 2, "health_check_timeout_s": 10})

    def resolved_keys(self) -> tuple[str | None, str | None]:
        """(read key, admin key): explicit config first, then the environment; '' means unset."""
        api = self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV)
        admin = self.admin_key if self.admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
        return (api or None), (admin or None)


def serve_config(workspace: str = "workspace", host: str = "127.0.0.1", port: int = 8000) -> dict[str, Any]:
    """A Ray Serve config file (ServeDeploySchema) for the app, from the code defaults."""
    a = AppArgs(workspace=workspace)
    args = {"workspace": workspace, "limits": a.limits.model_dump(), "retries": a.retries}
    deps = []
    for name, opts, tun in (("Ingress", a.ingress_options, None), ("Encoder", a.encoder_options, a.encoder),
                            ("Assigner", a.assigner_options, a.assigner)):
        d: dict[str, Any] = {"name": name, **opts}
        if tun is not None:
            d["user_config"] = tun.model_dump()
        deps.append(d)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": IMPORT_PATH,
                          "args": args, "deployments": deps}],
    }


HEADER = """\
# Ray Serve config for seqcohort, generated from serving/config.py defaults by
#   python -m serving.config workspace > configs/serve.yaml
# Use it with Ray's CLI:       serve run configs/serve.yaml     (or: serve deploy configs/serve.yaml)
# or with seqcohort:           seqcohort serve --workspace DIR --config configs/serve.yaml
# `args` go to the typed builder serving.app:build_app (serving.config.AppArgs); API keys come
# from $SEQCOHORT_API_KEY / $SEQCOHORT_ADMIN_KEY (or args.api_key / args.admin_key).
# `user_config` of Encoder / Assigner is applied live (reconfigure) by `serve deploy`.
"""


def render_yaml(workspace: str = "workspace") -> str:
    return HEADER + yaml.safe_dump(serve_config(workspace), sort_keys=False)


def load_serve_yaml(path: str | Path) -> dict[str, Any]:
    """Read a serve YAML; returns its seqcohort application entry (args, deployments, ...)."""
    d = yaml.safe_load(Path(path).read_text()) or {}
    apps = d.get("applications") or []
    for app in apps:
        if app.get("import_path") == IMPORT_PATH or app.get("name") == APP_NAME:
            return app
    raise ValueError(f"{path}: no application with import_path {IMPORT_PATH!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_yaml(sys.argv[1] if len(sys.argv) > 1 else "workspace"))
