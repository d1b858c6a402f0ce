"""Shared fixtures: small canonical event tables, a tiny config, and one trained workspace per session."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

SHARED_DATASETS = REPO.parent / "shared" / "datasets"
TINY_SETS = (
    "model.d_model=32",
    "model.n_heads=2",
    "model.n_layers=1",
    "model.d_ff=64",
    "model.dim=32",
    "model.max_len=64",
    "trainer.max_steps=60",
    "trainer.batch_size=64",
    "trainer.val_every=30",
    "trainer.progress=false",
    "cluster.k_min=4",
    "cluster.k_max=10",
    "features.item_text=off",  # titles are tested in test_item_text.py; here they would cost a MiniLM load per process
)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA GPU; without one they are skipped, saying so (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_events(n_users: int = 120, seed: int = 0, as_of: datetime = datetime(2025, 6, 1)) -> pl.DataFrame:
    """Random canonical events: 1-60 events per user over ~200 days before `as_of`."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("user_id", "ts", "event", "item", "category", "amount", "text")}
    for u in range(n_users):
        k = int(rng.integers(1, 60))
        secs = np.sort(rng.integers(0, 200 * 86400, k))
        for s in secs:
            ev = str(rng.choice(["view", "cart", "purchase", "search"]))
            item = int(rng.integers(50))
            rows["user_id"].append(f"u{u:04d}")
            rows["ts"].append(as_of - timedelta(seconds=int(s)))
            rows["event"].append(ev)
            rows["item"].append(f"item{item}")
            rows["category"].append(["books", "garden", "toys", None][item % 4])
            rows["amount"].append(float(np.round(rng.lognormal(3, 1), 2)) if ev == "purchase" else None)
            rows["text"].append(f"Product {item}")
    return pl.DataFrame(
        rows,
        schema={"user_id": pl.String, "ts": pl.Datetime("us"), "event": pl.String, "item": pl.String,
                "category": pl.String, "amount": pl.Float64, "text": pl.String},
    ).sort(["user_id", "ts"])


@pytest.fixture(scope="session")
def tiny_events() -> pl.DataFrame:
    return make_events()


@pytest.fixture()
def tiny_cfg():
    from embeddings.config import load_config

    return load_config(overrides=TINY_SETS)


@pytest.fixture(scope="session")
def synth_small():
    from embeddings.synthetic import synth

    return synth.generate(800, seed=3)


@pytest.fixture(scope="session")
def synth_files(tmp_path_factory, synth_small) -> dict[str, Path]:
    from embeddings.synthetic import synth

    return synth.write(synth_small, tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory, synth_files) -> Path:
    """One real (tiny) train -> embed -> cluster -> name run, shared by read-only tests."""
    from embeddings.config import load_config
    from seqcohort import pipeline

    ws = tmp_path_factory.mktemp("ws") / "workspace"
    cfg = load_config(overrides=TINY_SETS)
    pipeline.run(synth_files["events"], ws, cfg)
    return ws
