"""Goal-aware cohorts: intent tiers x behaviour clusters, assignment and naming."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.cohorts import Assigner, Cohort, CohortSet
from embeddings.errors import ConfigError
from embeddings.intent import IntentConfig, propensity_from_embedding
from embeddings.profile_types import CohortName, CohortProfile
from embeddings.tiers import IntentTiers, TieredNamer
from tests.fake_llm_server import make_profile

INTENT = IntentConfig(weight=1.0, a=1.0, b=0.0, mean=-1.0, std=1.5)


def goal_embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X (n, 9), behaviour centroids (3, 8), true behaviour) with a logit independent of behaviour."""
    rng = np.random.default_rng(seed)
    cents = np.eye(8, dtype=np.float32)[:3]
    beh = rng.choice(3, size=n, p=[0.6, 0.39, 0.01])
    z = cents[beh] + rng.normal(scale=0.1, size=(n, 8))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    logit = rng.normal(-1.0, 1.5, size=n)
    s = INTENT.weight * (logit - INTENT.mean) / INTENT.std
    X = np.hstack([z, s[:, None]])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), cents, beh


def test_tiers_split_by_propensity_quantiles_and_behaviour() -> None:
    X, cents, beh = goal_embeddings(5000)
    t = IntentTiers.fit(X, INTENT, cents, shares=[0.2, 0.3, 0.5], min_size=100)
    labels = t.predict(X)
    p = propensity_from_embedding(X, INTENT)
    tier = t.cohort_tier[labels]
    np.testing.assert_allclose(np.bincount(tier) / len(X), [0.2, 0.3, 0.5], atol=0.002)
    assert p[tier == 0].min() >= p[tier == 1].max() and p[tier == 1].min() >= p[tier == 2].max()
    # the rare behaviour (1% of users, ~10-25 per tier) is below min_size: merged inside its tier
    assert t.k_ == 3 * 2 and set(t.cohort_behaviour.tolist()) == {0, 1}
    assert np.all(t.cohort_tier[t.cell_cohort[:, 2]] == [0, 1, 2])
    assert set(np.unique(labels)) == set(range(t.k_))
    ids_by_tier = [t.cohort_tier[i] for i in range(t.k_)]
    assert ids_by_tier == sorted(ids_by_tier)  # ids run by tier, highest intent first
    np.testing.assert_allclose(np.linalg.norm(t.centroids_, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.array([t.predict(X[i : i + 1])[0] for i in range(50)])
    np.testing.assert_array_equal(one_by_one, labels[:50])


def test_tiers_round_trip_through_the_cohort_set_and_the_assigner() -> None:
    X, cents, _ = goal_embeddings(3000, seed=1)
    t = IntentTiers.fit(X, INTENT, cents, shares=[0.2] * 5, min_size=30)
    labels, conf = t.predict_confidence(X)
    cohorts = [Cohort(id=i, name=f"c{i}", description="", size=int((labels == i).sum()),
                      centroid=t.centroids_[i].tolist(), profile=make_profile(i))
               for i in range(t.k_)]
    cs = CohortSet(cohorts[::-1], "v1", "2025-01-01", meta={"tiers": t.to_dict()})  # order must not matter
    a = Assigner(cs)
    ids, conf2 = a.assign_arrays(X)
    np.testing.assert_array_equal(ids, labels)
    np.testing.assert_allclose(conf2, conf, rtol=1e-6)
    assert [r.cohort_id for r in a.assign(X[:20])] == labels[:20].tolist()
    with pytest.raises(ConfigError, match="dim 9"):
        t.predict(X[:, :8])


def test_bad_tier_shares_are_rejected() -> None:
    X, cents, _ = goal_embeddings(100)
    with pytest.raises(ConfigError, match="summing to 1"):
        IntentTiers.fit(X, INTENT, cents, shares=[0.5, 0.4], min_size=1)


def test_tiered_namer_names_behaviours_once_and_prefixes_the_tier() -> None:
    class Echo:
        calls: list[int] = []

        def name(self, profiles: list[CohortProfile]) -> list[CohortName]:
            self.calls.append(len(profiles))
            return [CohortName(f"Behaviour {p.cohort_id}", f"desc {p.cohort_id}") for p in profiles]

    meta = {"tier_labels": ["High intent", "Low intent"], "cohort_tier": [0, 0, 1], "cohort_behaviour": [1, 0, 1],
            "behaviour_profiles": [make_profile(i).to_dict() for i in (0, 1)]}
    base = Echo()
    names = TieredNamer(base, meta).name([make_profile(i) for i in range(3)])
    assert [n.name for n in names] == ["High intent · Behaviour 1", "High intent · Behaviour 0",
                                       "Low intent · Behaviour 1"]
    assert names[2].description == "desc 1" and base.calls == [2]
