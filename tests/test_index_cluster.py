from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from embeddings.cohorts.cluster import SphericalKMeans, match_centroids, valley_ratio
from embeddings.cohorts.index import VectorIndex, l2_normalize
from embeddings.errors import NotFittedError


def blobs(n_per=(300, 200, 120, 60, 30), dim=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = l2_normalize(rng.normal(size=(len(n_per), dim)))
    X, y = [], []
    for i, n in enumerate(n_per):
        X.append(centers[i] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim))
        y += [i] * n
    return l2_normalize(np.vstack(X)), np.array(y)


def test_flat_index_matches_brute_force(tmp_path):
    X, _ = blobs()
    ids = np.array([f"u{i}" for i in range(len(X))], dtype=object)
    idx = VectorIndex("flat").fit(X, ids)
    Q = X[:20] + 0.01
    sims, pos = idx.search(Q, 5)
    brute = l2_normalize(Q) @ X.T
    np.testing.assert_array_equal(pos, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)
    idx.save(tmp_path / "index")
    again = VectorIndex.load(tmp_path / "index")
    assert again.search_ids(Q, 3)[1] == idx.search_ids(Q, 3)[1]


def test_hnsw_recall():
    X, _ = blobs((2000,), dim=32, spread=1.0)
    ids = np.arange(len(X)).astype(str)
    exact = VectorIndex("flat").fit(X, ids).search(X[:100], 10)[1]
    approx = VectorIndex("hnsw").fit(X, ids).search(X[:100], 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall > 0.9


def test_ivf_recall_and_its_search_setting_survive_a_reload(tmp_path):
    X, _ = blobs((3000,), dim=32, spread=1.0)
    ids = np.arange(len(X)).astype(str)
    exact = VectorIndex("flat").fit(X, ids).search(X[:200], 10)[1]
    ivf = VectorIndex("ivf").fit(X, ids)
    approx = ivf.search(X[:200], 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert recall > 0.9
    ivf.save(tmp_path / "index")
    again = VectorIndex.load(tmp_path / "index")
    assert again.kind == "ivf" and again.search(X[:200], 10)[1].tolist() == approx.tolist()


def test_auto_index_is_exact_up_to_flat_max(monkeypatch):
    import embeddings.cohorts.index as index_mod

    X, _ = blobs((500,), dim=16)
    ids = np.arange(len(X)).astype(str)
    assert VectorIndex().fit(X, ids).kind == "flat"
    monkeypatch.setattr(index_mod, "FLAT_MAX", 100)
    assert VectorIndex().fit(X, ids).kind == "ivf"


def test_kmeans_finds_k_and_recovers_blobs():
    X, y = blobs()
    km = SphericalKMeans(k_min=2, k_max=9, min_cluster_frac=0.01).fit(X)
    assert km.k_ == 5
    assert adjusted_rand_score(y, km.labels_) > 0.95
    # ids ordered by size, largest first
    sizes = np.bincount(km.labels_)
    assert list(sizes) == sorted(sizes, reverse=True)
    assert np.array_equal(km.predict(X), km.labels_)


def test_tiny_clusters_are_merged_and_everyone_gets_a_cohort():
    X, _ = blobs((500, 400, 5))
    km = SphericalKMeans(k=3, method="kmeans", min_cluster_frac=0.02).fit(X)
    assert km.k_ == 2
    assert len(km.labels_) == len(X) and km.labels_.min() >= 0
    # the merge method cuts its tree where there are k groups that are not tiny
    km = SphericalKMeans(k=3, min_cluster_frac=0.02, micro_clusters=12).fit(X)
    assert km.k_ == 3 and np.bincount(km.labels_).min() >= 0.02 * len(X)
    assert len(km.labels_) == len(X)
    # a k range reaching past the number of micro-clusters stops at it (no k scored on a stale cut)
    few = SphericalKMeans(k_min=2, k_max=12, micro_clusters=6).fit(X)
    assert few.k_ <= 6 and max(few.scores_) == 6


def test_outliers_do_not_count_as_a_cohort_when_choosing_or_cutting():
    """A few far-off users used to take one of the k groups, and two real groups were merged."""
    X, y = blobs((400, 300, 300), dim=16, spread=0.3, seed=1)
    rng = np.random.default_rng(2)
    away = l2_normalize(-X[y < 3].mean(0, keepdims=True) + 0.05 * rng.normal(size=(6, 16)))
    X, y = np.vstack([X, away]), np.concatenate([y, np.full(6, 3)])
    real = y < 3
    pinned = SphericalKMeans(k=3, micro_clusters=16, min_cluster_frac=0.02).fit(X)
    assert pinned.k_ == 3 and adjusted_rand_score(y[real], pinned.labels_[real]) > 0.95
    auto = SphericalKMeans(k_min=2, k_max=6, micro_clusters=16, min_cluster_frac=0.02).fit(X)
    assert auto.k_ == 3 and adjusted_rand_score(y[real], auto.labels_[real]) > 0.95


def test_confidence_in_unit_interval_and_batch_equals_single():
    X, _ = blobs()
    km = SphericalKMeans(k=5).fit(X)
    lab, conf = km.predict_confidence(X)
    assert ((conf > 0) & (conf <= 1)).all()
    for i in (0, 100, 700):
        l1, c1 = km.predict_confidence(X[i])
        assert l1[0] == lab[i] and abs(c1[0] - conf[i]) < 1e-6


def test_unfitted_is_a_clear_error():
    with pytest.raises(NotFittedError, match="fit"):
        SphericalKMeans().predict(np.zeros((1, 3)))


def test_match_centroids_recovers_permutation():
    X, _ = blobs()
    old = SphericalKMeans(k=5).fit(X).centroids_
    perm = np.array([3, 0, 4, 1, 2])
    mapping = match_centroids(old, old[perm] + 0.01)
    assert mapping == {i: int(perm[i]) for i in range(5)}


def test_valley_ratio_tells_two_modes_from_one_cut_in_half():
    rng = np.random.default_rng(0)
    one = rng.normal(size=3000)
    assert valley_ratio(one, one > np.median(one)) > 0.9
    two = np.concatenate([rng.normal(-3, 1, 1500), rng.normal(3, 1, 1500)])
    assert valley_ratio(two, two > 0) < 0.2
    assert valley_ratio(np.zeros(50), np.arange(50) < 25) == 1.0  # nothing to split


def test_two_close_but_separate_groups_become_two_cohorts():
    """Silhouette keeps two neighbouring groups together (order twins); the density valley splits them."""
    rng = np.random.default_rng(0)
    a, b, d = l2_normalize(rng.normal(size=(3, 16)))
    d = l2_normalize((d - (d @ b) * b)[None])[0]
    centres = [a, b, l2_normalize((b + 0.3 * d)[None])[0]]  # b and its twin: cosine 0.96
    X = l2_normalize(np.vstack([c + 0.05 * rng.normal(size=(n, 16)) for c, n in zip(centres, (500, 300, 300), strict=True)]))
    y = np.repeat([0, 1, 2], (500, 300, 300))
    kept = SphericalKMeans(k_min=2, k_max=6, micro_clusters=16, split_bimodal=False).fit(X)
    assert kept.k_ == 2  # what silhouette alone chooses
    split = SphericalKMeans(k_min=2, k_max=6, micro_clusters=16).fit(X)
    assert split.k_ == 3 and adjusted_rand_score(y, split.labels_) > 0.95
    # one group is never cut in half: the blobs test's clusters stay whole
    Xb, yb = blobs()
    assert SphericalKMeans(k_min=2, k_max=9, min_cluster_frac=0.01).fit(Xb).k_ == 5


def _wide_with_narrow_twins(offset: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One cohort spread widely (and unimodally) along one direction whose users sit `offset`
    either side of it along another, narrow one: twins alike in everything but one habit."""
    rng = np.random.default_rng(seed)
    n, dim = 800, 16
    y = rng.random(n) < 0.6
    Z = 0.03 * rng.normal(size=(n, dim))
    Z[:, 1] = 0.25 * rng.normal(size=n)  # where plain 2-means cuts: most of the variance, one mode
    Z[:, 2] = np.where(y, offset, -offset) + 0.025 * rng.normal(size=n)
    Z[:, 0] += 1.0
    return l2_normalize(Z), y


def test_twins_apart_only_along_a_narrow_direction_are_split_on_whitened_coordinates():
    """Plain 2-means follows the wide direction and finds no valley; 2-means on the whitened top
    principal coordinates finds the narrow one. A cohort without twins is left whole."""
    km = SphericalKMeans(k_min=2, k_max=6)
    X, y = _wide_with_narrow_twins(0.07)
    found = km._two_modes(X, 8)
    assert found is not None and valley_ratio(found[1], found[2]) > 0.5  # plain 2-means: no valley
    cents = km._split_bimodal(X, l2_normalize(X.mean(0)[None]))
    assert len(cents) == 2
    assert adjusted_rand_score(y, (X @ cents.T).argmax(1)) > 0.9
    X1, _ = _wide_with_narrow_twins(0.0)
    assert len(km._split_bimodal(X1, l2_normalize(X1.mean(0)[None]))) == 1
