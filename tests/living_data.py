"""A two-period synthetic log and one tiny workspace run on period 1, for the refresh and forget tests."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl

from tests.conftest import TINY_SETS

# a tiny run: fewer steps, no calibration crops or short-history head, category weight fixed
FAST_SETS = (*TINY_SETS, "trainer.max_steps=30", "cluster.calibration_crops=0", "cluster.short_history_windows=0",
             "model.profile_category=1", "cluster.n_init=2")
LATE = 60  # period-1 rows held back from the run and sent later, as late events


def make_periods(root: Path, n_users: int = 300, seed: int = 5) -> dict[str, Path]:
    """p1 (run on it), late (period-1 rows held back), p2 (the last 14 days)."""
    from embeddings.synthetic import synth

    ev = synth.generate(n_users, seed=seed).events
    cut = ev.get_column("ts").max() - timedelta(days=14)
    p1, p2 = ev.filter(pl.col("ts") <= cut), ev.filter(pl.col("ts") > cut)
    late = p1.filter(pl.col("ts") < cut - timedelta(days=20)).sample(LATE, seed=seed)
    p1 = p1.join(late, on=["user_id", "ts", "event"], how="anti")
    root.mkdir(parents=True, exist_ok=True)
    paths = {"p1": root / "p1.parquet", "p2": root / "p2.parquet", "late": root / "late.parquet"}
    p1.write_parquet(paths["p1"])
    p2.write_parquet(paths["p2"])
    late.write_parquet(paths["late"])
    return paths


def fast_cfg(*sets: str):
    from embeddings.config import load_config

    return load_config(overrides=(*FAST_SETS, *sets))


def build_workspace(root: Path) -> tuple[Path, dict[str, Path]]:
    from seqcohort import pipeline

    paths = make_periods(root / "data")
    ws = root / "ws"
    pipeline.run(paths["p1"], ws, fast_cfg())
    return ws, paths


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
