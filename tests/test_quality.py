"""Quality guard: a short real training run must recover planted archetypes far above RFM."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from embeddings import synth
from embeddings.cluster import SphericalKMeans
from embeddings.config import load_config
from embeddings.rfm import rfm_features
from seqcohort import pipeline
from seqcohort.report import archetype_agreement


@pytest.mark.slow
def test_cohorts_recover_archetypes_far_above_rfm(tmp_path):
    data = synth.generate(1500, seed=11)
    paths = synth.write(data, tmp_path / "data")
    cfg = load_config(overrides=["trainer.max_steps=200", "trainer.progress=false", "cluster.k_min=6",
                                 "cluster.k_max=14"])
    res = pipeline.run(paths["events"], tmp_path / "ws", cfg)
    a = pl.read_parquet(res.version_dir / "assignments.parquet")
    agree = archetype_agreement(a, data.truth)
    # RFM + k-means with the true number of archetypes, on the same users
    f = rfm_features(data.events, data.as_of, log=True).join(data.truth, on="user_id")
    R = f.select("log_recency_days", "log_frequency", "log_monetary").to_numpy()
    R = (R - R.mean(0)) / R.std(0)
    k = f["archetype"].n_unique()
    rfm_labels = SphericalKMeans(k=k, method="kmeans").fit(np.hstack([R, np.ones((len(R), 1))])).labels_
    rfm_ari = adjusted_rand_score(f["archetype"], rfm_labels)
    assert agree["ari"] > 0.6, agree
    assert agree["ari"] > rfm_ari + 0.3, (agree, rfm_ari)
    assert agree["short_accuracy"] > 2 * agree["short_chance"], agree
