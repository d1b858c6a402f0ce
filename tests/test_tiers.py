"""Goal-aware cohorts: intent tiers x behaviour clusters, assignment and naming."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.cohorts.cohort_set import Assigner, Cohort, CohortSet
from embeddings.cohorts.tiers import IntentTiers, TieredNamer
from embeddings.errors import ConfigError
from embeddings.model.intent import IntentConfig, propensity_from_embedding
from embeddings.naming.profile_types import CohortName, CohortProfile
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


INTENT_R = IntentConfig(weight=1.0, a=1.0, b=0.0, mean=-1.0, std=1.5, recent_days=30.0, recent_weight=0.1)


def recent_goal_embeddings(n: int, top_recent: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X (n, 10) with the recent-goal flag last, behaviour centroids, recent) where `top_recent` of the
    top 20% by propensity and a third of everyone else reached the goal recently."""
    X9, cents, _ = goal_embeddings(n, seed)
    rng = np.random.default_rng(seed + 1)
    logit = X9[:, -1]
    top = logit >= np.quantile(logit, 0.8)
    recent = np.where(top, rng.random(n) < top_recent, rng.random(n) < 1 / 3)
    X = np.hstack([X9, (INTENT_R.recent_weight * np.where(recent, 1.0, -1.0))[:, None]])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), cents, recent


def test_tiers_split_by_recent_goal_when_the_top_tier_nearly_all_reached_it() -> None:
    X, cents, recent = recent_goal_embeddings(5000, top_recent=0.99)
    t = IntentTiers.fit(X, INTENT_R, cents, shares=[0.2] * 5, min_size=20, split_recent="auto")
    assert t.split_recent and t.recent_share_top > 0.95
    labels = t.predict(X)
    # every cohort is all recent or all not, and says which
    for c in range(t.k_):
        assert set(recent[labels == c].tolist()) <= {bool(t.cohort_recent[c])}
    assert t.cohort_recent[0] and t.cohort_tier[0] == 0  # ids: top tier, recent reachers first
    p = propensity_from_embedding(X, INTENT_R)
    tier = t.cohort_tier[labels]
    assert p[tier == 0].min() >= p[tier == 1].max()  # the intent tiers themselves are unchanged
    one_by_one = np.array([t.predict(X[i : i + 1])[0] for i in range(50)])
    np.testing.assert_array_equal(one_by_one, labels[:50])
    cohorts = [Cohort(id=i, name=f"c{i}", description="", size=int((labels == i).sum()),
                      centroid=t.centroids_[i].tolist(), profile=make_profile(i)) for i in range(t.k_)]
    cs = CohortSet(cohorts, "v1", "2025-01-01", meta={"tiers": t.to_dict()})
    np.testing.assert_array_equal(Assigner(cs).assign_arrays(X)[0], labels)
    with pytest.raises(ConfigError, match="dim 10"):
        t.predict(X[:, :9])
    meta = {**t.to_dict(), "behaviour_profiles": [make_profile(i).to_dict() for i in range(len(cents))]}

    class Plain:
        def name(self, profiles: list[CohortProfile]) -> list[CohortName]:
            return [CohortName(f"B{p.cohort_id}", "") for p in profiles]

    names = TieredNamer(Plain(), meta).name([make_profile(i) for i in range(t.k_)])
    assert names[0].name.startswith("Very high intent, goal in the last 30 days · B")
    assert any("no goal in the last 30 days" in n.name for n in names)


def test_tiers_are_not_split_where_many_top_intent_users_did_not_reach_the_goal_recently() -> None:
    X, cents, _ = recent_goal_embeddings(5000, top_recent=0.7)
    auto = IntentTiers.fit(X, INTENT_R, cents, shares=[0.2] * 5, min_size=20, split_recent="auto")
    assert not auto.split_recent and 0.65 < auto.recent_share_top < 0.75 and auto.cohort_recent is None
    plain = IntentTiers.fit(X, INTENT_R, cents, shares=[0.2] * 5, min_size=20, split_recent=False)
    np.testing.assert_array_equal(auto.predict(X), plain.predict(X))
    forced = IntentTiers.fit(X, INTENT_R, cents, shares=[0.2] * 5, min_size=20, split_recent=True)
    assert forced.split_recent and forced.k_ > plain.k_
    # a bundle without the coordinate (before it existed) cannot be split: dim d + 1, as before
    X9, cents9, _ = goal_embeddings(2000)
    old = IntentTiers.fit(X9, INTENT, cents9, shares=[0.5, 0.5], min_size=20, split_recent=True)
    assert not old.split_recent and old.recent_share_top is None
