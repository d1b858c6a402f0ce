"""Quality guard: a short real training run must recover planted archetypes far above RFM."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from embeddings.cohorts.cluster import SphericalKMeans
from embeddings.config import load_config
from embeddings.evaluation.rfm import rfm_features
from embeddings.synthetic import synth
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


def test_archetype_agreement_reports_whether_twins_share_a_cohort():
    truth = pl.DataFrame({
        "user_id": [str(i) for i in range(12)],
        "archetype": ["r"] * 4 + ["i"] * 4 + ["n"] * 2 + ["e"] * 2,
        "short_history": [False] * 3 + [True] + [False] * 3 + [True] + [False] * 4,
    })
    # r and i apart (one i user strays into r's cohort); n and e share cohort 2
    cohort = [0, 0, 0, 1, 1, 1, 0, 1, 2, 2, 2, 2]
    a = pl.DataFrame({"user_id": truth["user_id"], "cohort_id": cohort})
    agree = archetype_agreement(a, truth, twins=[("r", "i"), ("n", "e"), ("r", "absent")])
    t = {row["pair"]: row for row in agree["twins"]}
    assert set(t) == {"r/i", "n/e"}  # pairs not in the data are skipped
    assert t["r/i"]["separated"] and not t["n/e"]["separated"]
    long_r_i = adjusted_rand_score(["r"] * 3 + ["i"] * 3, [0, 0, 0, 1, 1, 0])
    assert t["r/i"]["ari"] == pytest.approx(long_r_i)
    assert t["n/e"]["ari"] == pytest.approx(0.0)
    assert agree["short_accuracy"] == pytest.approx(0.5)  # r's short user in 1 (main 0), i's in 1
