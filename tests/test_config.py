from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from embeddings.config import CONFIG_DIR, Config, load_config, parse_overrides
from embeddings.errors import ConfigError

PIPELINE_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "serve.yaml")


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path: Path):
    assert isinstance(load_config(path), Config)


def test_shipped_defaults_match_code():
    shipped = yaml.safe_load((CONFIG_DIR / "seqcohort.yaml").read_text())
    assert shipped == Config().model_dump(), "regenerate configs/seqcohort.yaml from embeddings/config.py"


def test_overrides_are_typed():
    cfg = load_config(overrides=["trainer.max_steps=7", "cluster.k=5", "naming.namer=llm", "data.as_of=2026-01-01"])
    assert cfg.trainer.max_steps == 7 and cfg.cluster.k == 5 and cfg.naming.namer == "llm"
    assert cfg.data.as_of == "2026-01-01"


def test_unknown_key_lists_valid_ones_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["trainer.max_step=7"])
    msg = str(e.value)
    assert "trainer.max_step" in msg and "max_steps" in msg and "Did you mean" in msg


def test_bad_values_and_syntax(tmp_path):
    with pytest.raises(ConfigError, match="trainer.lr"):
        load_config(overrides=["trainer.lr=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["trainer.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
