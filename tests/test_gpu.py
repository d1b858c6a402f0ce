"""The GPU paths: Lightning training on CUDA, embedding on CUDA, and a whole run with a GPU present.

Skipped without a CUDA GPU (CI has none); run on a GPU machine with `pytest -m gpu`.
The device-selection rules themselves are checked on the CPU too.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest
import torch
from conftest import TINY_SETS

from embeddings.config import load_config
from embeddings.errors import ConfigError
from embeddings.model.embed import UserEncoder, resolve_device
from embeddings.workspace import Workspace


def test_auto_device_follows_torch():
    assert resolve_device(None) == resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_length_buckets_default_to_one_pass_on_a_gpu():
    from embeddings.config import TrainerConfig
    from training.datamodule import length_buckets

    assert length_buckets(TrainerConfig()) == (1 if torch.cuda.is_available() else 4)
    assert length_buckets(TrainerConfig(accelerator="cpu")) == 4
    assert length_buckets(TrainerConfig(length_buckets=2)) == 2  # set explicitly: kept anywhere


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA GPU.*'cpu' or 'auto'"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("gpu")


def test_encoder_on_another_device_leaves_the_callers_module_in_place(trained_workspace):
    """UserEncoder copies the module to its device; code holding the bundle keeps a CPU module."""
    from embeddings.model.bundle import load_bundle

    b = load_bundle(trained_workspace / "current" / "encoder")
    enc = UserEncoder(b, device="meta")  # a device every machine has, without any memory behind it
    assert next(enc.encoder.parameters()).device.type == "meta"
    assert next(b.encoder.parameters()).device.type == "cpu"
    assert UserEncoder(b, device="cpu").encoder is b.encoder  # same device: no copy


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_trains_on_the_gpu_and_the_bundle_embeds_alike_on_both(tiny_events, tmp_path, precision):
    from training.train import train

    cfg = load_config(overrides=[*TINY_SETS, "trainer.accelerator=gpu", "trainer.devices=1",
                                 f"trainer.precision={precision}"])
    res = train(cfg, tiny_events, tmp_path / "b")
    assert next(res.bundle.encoder.parameters()).device.type == "cpu"  # handed back on the CPU
    assert np.isfinite(res.metrics["train/loss"])
    gpu = UserEncoder.load(tmp_path / "b", device="cuda")
    cpu = UserEncoder.load(tmp_path / "b", device="cpu")
    assert gpu.device == "cuda" and next(gpu.encoder.parameters()).is_cuda
    Xg, Xc = gpu.encode(tiny_events).vectors, cpu.encode(tiny_events).vectors
    assert Xg.dtype == np.float32 and Xg.shape == Xc.shape
    np.testing.assert_allclose(Xg, Xc, atol=2e-4)  # tf32/cuDNN kernels, not bit-identical


@pytest.mark.gpu
def test_batches_gathered_on_the_gpu_match_the_cpu_in_float32_and_bfloat16(trained_workspace, synth_small):
    """Issue 27: the GPU path (features copied once, batches gathered on the device, parts of users
    featurised side by side) gives the CPU's vectors: within 2e-4 in float32 (the GPU's kernels are
    not bit-identical), 1e-3 in float16 autocast, 1e-2 in bf16."""
    path = trained_workspace / "current" / "encoder"
    cpu, gpu = UserEncoder.load(path, device="cpu"), UserEncoder.load(path, device="cuda")
    ids_c, Xc = cpu.encode(synth_small.events)
    ids_g, Xg = gpu.encode(synth_small.events, batch_size=64)
    assert list(ids_g) == list(ids_c)
    np.testing.assert_allclose(Xg, Xc, atol=2e-4)
    assert np.abs(gpu.encode(synth_small.events, dtype="float16").vectors - Xc).max() < 1e-3
    assert np.abs(gpu.encode(synth_small.events, dtype="bfloat16").vectors - Xc).max() < 1e-2


@pytest.mark.gpu
def test_a_whole_run_uses_the_gpu_and_assigns_one_user_as_in_a_batch(synth_files, synth_small, tmp_path):
    from seqcohort import pipeline

    ws = tmp_path / "ws"
    res = pipeline.run(synth_files["events"], ws, load_config(overrides=TINY_SETS))  # accelerator: auto
    assert res.cohorts.cohorts and res.n_users == 800
    assert Workspace(ws).load().encoder.device == "cuda"
    ev = synth_small.events
    users = ev["user_id"].unique().sort().head(8).to_list()
    new = ev.filter(pl.col("user_id").is_in(users)).group_by("user_id", maintain_order=True).tail(2)
    as_of = datetime(2026, 1, 1)
    batch = pipeline.assign_events(ws, new, as_of).sort("user_id")
    for u in users[:4]:
        one = pipeline.assign_events(ws, new.filter(pl.col("user_id") == u), as_of)
        row = batch.filter(pl.col("user_id") == u)
        assert one["cohort_id"][0] == row["cohort_id"][0]
        assert abs(one["confidence"][0] - row["confidence"][0]) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_goal_aware_training_on_the_gpu(tmp_path, precision):
    from conftest import make_events

    from embeddings.evaluation.goals import parse_goal
    from embeddings.model.propensity import predict_propensity
    from training.propensity import train_goal_aware

    events = make_events(150, seed=2)
    cfg = load_config(overrides=[*TINY_SETS, "trainer.max_steps=20", "trainer.batch_size=32",
                                 f"trainer.precision={precision}"])
    res = train_goal_aware(cfg, events, parse_goal("purchase", "30d"), tmp_path / "b", as_of=events["ts"].max())
    assert next(res.bundle.encoder.parameters()).device.type == "cpu"
    p = predict_propensity(tmp_path / "b", events)  # loads the bundle and embeds on the GPU
    assert p.shape == (150,) and np.all((p > 0) & (p < 1))
