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
    assert isinstance(build_app(AppArgs(workspace=str(tmp_path), models_in_ingress=True)), Application)


def test_seqcohort_serve_runs_the_models_in_the_ingress_unless_the_yaml_deploys_them(tmp_path):
    from seqcohort.launch import app_args
    from serving.config import serve_config

    assert app_args(tmp_path / "ws")[0]["models_in_ingress"] is True
    cfg = serve_config("ignored")
    p = tmp_path / "serve.yaml"
    p.write_text(yaml.safe_dump(cfg))  # Encoder and Assigner deployments: the separate layout
    assert app_args(tmp_path / "ws", p)[0]["models_in_ingress"] is False
    cfg["applications"][0]["deployments"] = cfg["applications"][0]["deployments"][:1]
    p.write_text(yaml.safe_dump(cfg))
    assert app_args(tmp_path / "ws", p)[0]["models_in_ingress"] is True
    cfg["applications"][0]["args"]["models_in_ingress"] = False
    p.write_text(yaml.safe_dump(cfg))
    assert app_args(tmp_path / "ws", p)[0]["models_in_ingress"] is False


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


def test_serve_env_puts_the_ingress_replica_on_the_asked_port():
    """Direct ingress by default: the replicas take `port` .. `port` + replicas - 1 (Serve's MAX is
    exclusive) and a replaced replica gets its port back at once; HAProxy, throughput mode off or a
    range of the caller's own leave the port to Serve's proxy (or HAProxy)."""
    from seqcohort.launch import serve_env

    env, pinned = serve_env(8000, 1, {})
    assert pinned and env == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "8000",
                              "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "8001", "RAY_SERVE_PORT_QUARANTINE_S": "0"}
    assert serve_env(8000, 3, {})[0]["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "8003"
    assert serve_env(8000, 1, {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"})[1]
    for off in ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}, {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
                {"RAY_SERVE_ENABLE_HA_PROXY": "1"}, {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31000"}):
        env, pinned = serve_env(8000, 1, off)
        assert not pinned and "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT" not in env, off


def test_a_taken_port_is_a_clear_error():
    import socket

    import pytest

    from embeddings.errors import SeqcohortError
    from seqcohort.launch import _check_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SeqcohortError, match=f"127.0.0.1:{port}.*--port"):
            _check_free("127.0.0.1", port)
