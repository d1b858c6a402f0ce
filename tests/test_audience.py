"""Lookalikes, event contributions, the 2-D map, sizing and size changes, on small arrays against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.cohorts.audience import event_contributions, leave_one_out, lookalikes
from embeddings.cohorts.cohort_set import Cohort, CohortSet
from embeddings.cohorts.index import VectorIndex
from embeddings.cohorts.overview import size_changes, sizing_curve
from embeddings.cohorts.projection import centroid_plane, compute_map, sample_rows
from embeddings.errors import SeqcohortError
from embeddings.naming.profile_types import CohortProfile


def unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


@pytest.fixture()
def users():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    ids = np.array([f"u{i}" for i in range(300)], dtype=object)
    return ids, X, VectorIndex().fit(X, ids), {u: i for i, u in enumerate(ids)}


def test_lookalikes_match_brute_force_and_exclude_seeds(users):
    ids, X, index, rows = users
    seeds = ["u3", "u10", "u42", "u3"]  # a repeated seed counts once
    r = lookalikes(index, rows, X, seeds + ["nobody"], 25)
    centre = unit(unit(X[[3, 10, 42]]).mean(axis=0))
    sims = unit(X) @ centre
    order = [ids[i] for i in np.argsort(-sims) if ids[i] not in {"u3", "u10", "u42"}][:25]
    assert r.user_ids == order
    np.testing.assert_allclose(r.scores, np.sort(sims[[rows[u] for u in order]])[::-1], atol=1e-5)
    assert r.unknown_seeds == ["nobody"] and r.n_seeds == 3
    assert not {"u3", "u10", "u42"} & set(r.user_ids)


def test_lookalikes_refuse_when_no_seed_is_known(users):
    ids, X, index, rows = users
    with pytest.raises(SeqcohortError, match="none of the 2 seed user ids"):
        lookalikes(index, rows, X, ["x", "y"], 5)
    assert len(lookalikes(index, rows, X, ["u1"], 1000).user_ids) == 299  # everyone but the seed


def test_event_contributions_are_the_leave_one_out_cosine_drop():
    rng = np.random.default_rng(1)
    full, without, c = rng.normal(size=16), rng.normal(size=(5, 16)), rng.normal(size=16)
    got = event_contributions(full, without, c)
    want = unit(full) @ unit(c) - unit(without) @ unit(c)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(event_contributions(full, np.zeros((0, 16)), c), [unit(full) @ unit(c)], atol=1e-6)
    assert leave_one_out(1) == [] and leave_one_out(3) == [[1, 2], [0, 2], [0, 1]]


def test_sizing_curve_counts_and_sums_above_each_threshold():
    p = np.random.default_rng(2).beta(1, 4, size=1000)
    curve = sizing_curve(p)
    assert len(curve) == 100 and curve[-1]["size"] == 1000
    for step in curve[::7]:
        above = p[p >= step["threshold"]]
        assert step["size"] == len(above) and step["expected"] == pytest.approx(above.sum(), abs=0.01)
    sizes = [s["size"] for s in curve]
    assert sizes == sorted(sizes) and abs(curve[19]["size"] - 200) <= 2  # even audience steps: 20% at step 20


def _cohort(cid, size, centroid):
    prof = CohortProfile(cid, size, 0.1, "2025-01-01", 1, 1, 1, 1, 1, {}, [], [], [], [0.0] * 24, [0.0] * 7, "morning")
    return Cohort(cid, f"c{cid}", "", size, list(centroid), prof)


def test_size_changes_only_for_the_same_cohort():
    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    parent = CohortSet([_cohort(0, 100, a), _cohort(1, 50, b)], "m", "2025")
    now = CohortSet([_cohort(0, 120, a), _cohort(1, 40, a), _cohort(2, 7, b)], "m", "2025")
    assert size_changes(now, parent) == {0: 20, 1: None, 2: None}  # cohort 1 is another cohort now
    assert size_changes(now, None) == {0: None, 1: None, 2: None}
    assert size_changes(now, parent, ids_matched=True) == {0: 20, 1: -10, 2: None}  # a refresh keeps ids


def test_map_samples_every_cohort_and_separates_centroids():
    rng = np.random.default_rng(3)
    C = unit(rng.normal(size=(4, 12)))
    labels = np.repeat(np.arange(4), [3000, 2000, 40, 960])
    X = C[labels] + 0.05 * rng.normal(size=(len(labels), 12))
    rows = sample_rows(labels, 1000)
    assert set(labels[rows]) == {0, 1, 2, 3} and (labels[rows] == 2).sum() == 25 and len(rows) < 1100
    m = compute_map(np.arange(len(labels)).astype(str), X, labels, C, np.arange(4), np.bincount(labels), 1000)
    pts = np.c_[m["points"]["x"], m["points"]["y"]]
    cid = np.asarray(m["points"]["cohort_id"])
    means = np.array([pts[cid == k].mean(axis=0) for k in range(4)])
    np.testing.assert_allclose(means, np.c_[m["centroids"]["x"], m["centroids"]["y"]], atol=0.05)
    assert compute_map(np.arange(len(labels)).astype(str), X, labels, C, np.arange(4), np.bincount(labels), 1000) == m
    _, axes = centroid_plane(C, np.bincount(labels))
    np.testing.assert_allclose(axes.T @ axes, np.eye(2), atol=1e-9)
