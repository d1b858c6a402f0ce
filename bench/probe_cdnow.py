"""Linear-probe AUC on CDNOW next-90-day purchase: embeddings vs RFM features vs both.

    python bench/probe_cdnow.py trainer.max_steps=300 [more --set style overrides]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from embeddings.config import load_config  # noqa: E402
from embeddings.data.datasets import load_cdnow  # noqa: E402
from embeddings.evaluation.backtest import probe_auc  # noqa: E402
from embeddings.evaluation.rfm import rfm_features  # noqa: E402
from embeddings.model.embed import UserEncoder  # noqa: E402
from training.train import train  # noqa: E402


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    events = load_cdnow(ROOT.parent / "shared" / "datasets" / "cdnow")
    cut, horizon = datetime(1997, 9, 30), timedelta(days=90)
    pre = events.filter(pl.col("ts") <= cut)
    post = events.filter((pl.col("ts") > cut) & (pl.col("ts") <= cut + horizon))
    cfg = load_config(overrides=["trainer.progress=false", *sys.argv[1:]])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, pre, Path(tmp) / "bundle", as_of=cut)
    seconds = time.perf_counter() - t0
    enc = UserEncoder(result.bundle)
    seqs = enc.featurize(pre, cut)
    X = enc.encode(seqs).vectors
    uids = seqs.user_ids.astype(str)
    y = np.isin(uids, post["user_id"].unique().to_numpy()).astype(int)
    feats = pl.DataFrame({"user_id": uids}).join(rfm_features(pre, cut, log=True), on="user_id",
                                                 how="left", maintain_order="left")
    R = feats.select("log_recency_days", "log_frequency", "log_monetary", "tenure_days", "n_active_days").to_numpy()
    print(f"{' '.join(sys.argv[1:])} | train {seconds:.0f}s | AUC embeddings {probe_auc(X, y)['auc']:.4f} "
          f"RFM {probe_auc(R, y)['auc']:.4f} both {probe_auc(np.hstack([X, R]), y)['auc']:.4f}")


if __name__ == "__main__":
    main()
