"""Archetype recovery of one training configuration (the ablation table in bench/RESULTS.md).

    python bench/ablation_archetypes.py 2000 trainer.max_steps=300 trainer.temperature=0.3

Trains on synthetic users (seed 7), embeds them, clusters with k = 11 and with k chosen from the
data, and prints the ARI against the planted archetypes and the archetype x cohort crosstab.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embeddings import synth  # noqa: E402
from embeddings.cluster import SphericalKMeans  # noqa: E402
from embeddings.config import load_config  # noqa: E402
from embeddings.embed import UserEncoder  # noqa: E402
from training.train import train  # noqa: E402


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    n, sets = int(sys.argv[1]), sys.argv[2:]
    data = synth.generate(n, seed=7)
    cfg = load_config(overrides=["trainer.progress=false", "trainer.val_fraction=0.0", *sets])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, data.events, Path(tmp) / "bundle")
    seconds = time.perf_counter() - t0
    enc = UserEncoder(result.bundle)
    seqs = enc.featurize(data.events)
    X = enc.encode(seqs)
    truth = pl.DataFrame({"user_id": seqs.user_ids.astype(str)}).join(
        data.truth, on="user_id", how="left", maintain_order="left")
    y, long = truth["archetype"].to_numpy(), ~truth["short_history"].to_numpy()
    fixed = SphericalKMeans(k=11, n_init=2).fit(X)
    auto = SphericalKMeans(k_min=6, k_max=14, n_init=2).fit(X)
    ari = adjusted_rand_score
    print(f"{' '.join(sets)} | train {seconds:.0f}s | ARI k=11 {ari(y, fixed.labels_):.3f} "
          f"long {ari(y[long], fixed.labels_[long]):.3f} short {ari(y[~long], fixed.labels_[~long]):.3f} "
          f"| auto k={auto.k_} ARI {ari(y, auto.labels_):.3f}")
    ct = (pl.DataFrame({"archetype": y, "cohort": fixed.labels_}).group_by("archetype", "cohort").len()
          .pivot(on="cohort", index="archetype", values="len").fill_null(0).sort("archetype"))
    with pl.Config(tbl_cols=20, tbl_rows=20):
        print(ct.select(["archetype", *sorted((c for c in ct.columns if c != "archetype"), key=int)]))


if __name__ == "__main__":
    main()
