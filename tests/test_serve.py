"""`seqcohort serve` wiring and the serve YAML (no Ray started here; the HTTP tests are test_serving.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def test_serve_yaml_is_generated_from_code_defaults():
    from serving.config import render_yaml

    assert (REPO / "configs" / "serve.yaml").read_text() == render_yaml("workspace"), (
        "configs/serve.yaml is stale: run `python -m serving.config workspace > configs/serve.yaml`")


def test_serve_yaml_is_a_valid_ray_serve_config():
    from ray.serve.schema import ServeDeploySchema

    from serving.config import AppArgs

    d = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(d) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(d)
    app = schema.applications[0]
    assert app.import_path == "serving.app:build_app"
    AppArgs(**app.args)  # the typed builder accepts the args
    assert {dep.name for dep in app.deployments} == {"Ingress", "Encoder", "Assigner"}


def test_typed_builder_builds_the_application(tmp_path):
    import inspect

    from ray.serve import Application

    from serving.app import build_app
    from serving.config import AppArgs

    assert inspect.signature(build_app).parameters["args"].annotation is AppArgs
    assert isinstance(build_app(AppArgs(workspace=str(tmp_path))), Application)
    assert isinstance(build_app({"workspace": str(tmp_path)}), Application)


def test_app_args_from_yaml_overrides(tmp_path):
    from seqcohort.launch import app_args
    from serving.config import AppArgs, serve_config

    cfg = serve_config("ignored")
    cfg["applications"][0]["deployments"][1].update(num_replicas=2, user_config={"max_batch_size": 8})
    cfg["applications"][0]["args"]["limits"]["max_events"] = 10
    p = tmp_path / "serve.yaml"
    p.write_text(yaml.safe_dump(cfg))
    args, _ = app_args(tmp_path / "ws", p)
    a = AppArgs(**args)
    assert a.workspace == str((tmp_path / "ws").resolve())
    assert a.encoder_options["num_replicas"] == 2 and a.encoder.max_batch_size == 8 and a.limits.max_events == 10


def test_keys_from_environment(monkeypatch):
    from serving.config import AppArgs

    monkeypatch.setenv("SEQCOHORT_API_KEY", "k1")
    monkeypatch.delenv("SEQCOHORT_ADMIN_KEY", raising=False)
    assert AppArgs(workspace="w").resolved_keys() == ("k1", None)
    assert AppArgs(workspace="w", api_key="", admin_key="a").resolved_keys() == (None, "a")


def test_serve_command_is_registered_and_fails_cleanly_without_a_version(tmp_path):
    from seqcohort.cli import cli

    r = CliRunner().invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0 and "--workspace" in r.output and "--config" in r.output
    r = CliRunner().invoke(cli, ["serve", "--workspace", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no published version" in r.output
