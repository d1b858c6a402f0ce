"""Spherical k-means in FAISS with data-driven k, tiny-cluster merging and stable ids.

Every user gets a cohort (there is no outlier bin). Cohort ids are 0..k-1 by decreasing size at
first fit; `match_centroids` maps a refit's clusters onto previous ids (Hungarian on cosine).
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, silhouette_score

from embeddings.errors import NotFittedError
from embeddings.index import l2_normalize

log = logging.getLogger(__name__)


def softmax_confidence(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Probability mass of the best centroid under softmax(sims / T): in [1/k, 1]."""
    z = (sims - sims.max(axis=1, keepdims=True)) / temperature
    p = np.exp(z)
    return (p.max(axis=1) / p.sum(axis=1)).astype(np.float32)


class SphericalKMeans:
    """Cosine k-means. `fit(X) -> self`; learned state: `centroids_`, `labels_`, `k_`, `scores_`."""

    def __init__(
        self,
        k: int | None = None,
        *,
        k_min: int = 4,
        k_max: int = 16,
        selection: str = "silhouette",
        method: str = "merge",
        micro_clusters: int = 48,
        min_cluster_frac: float = 0.01,
        sample_size: int = 20000,
        niter: int = 30,
        n_init: int = 3,
        seed: int = 0,
        confidence_temperature: float = 0.05,
    ) -> None:
        self.k, self.k_min, self.k_max, self.selection = k, k_min, k_max, selection
        self.method, self.micro_clusters = method, micro_clusters
        self.min_cluster_frac, self.sample_size = min_cluster_frac, sample_size
        self.niter, self.n_init, self.seed = niter, n_init, seed
        self.confidence_temperature = confidence_temperature
        self.centroids_: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    def _kmeans(self, X: np.ndarray, k: int, seed: int) -> np.ndarray:
        """Best of n_init k-means++-seeded spherical Lloyd runs (by total cosine to centroids)."""
        rng = np.random.default_rng(seed)
        best, best_obj = None, -np.inf
        for _ in range(self.n_init):
            km = faiss.Kmeans(
                X.shape[1], k, niter=self.niter, spherical=True, seed=int(rng.integers(2**31)),
                verbose=False, min_points_per_centroid=1, max_points_per_centroid=100000,
            )
            km.train(X, init_centroids=kmeans_pp(X, k, rng))
            c = l2_normalize(km.centroids)
            obj = float((X @ c.T).max(axis=1).sum())
            if obj > best_obj:
                best, best_obj = c, obj
        assert best is not None
        return best

    def _score(self, X: np.ndarray, k: int, rng: np.random.Generator) -> float:
        if self.selection == "silhouette":
            labels = _nearest(X, self._kmeans(X, k, self.seed))
            if len(np.unique(labels)) < 2:
                return -1.0
            n = min(len(X), 4000)
            return float(silhouette_score(X, labels, metric="cosine", sample_size=n, random_state=self.seed))
        # stability: agreement of two fits on disjoint halves, measured on all points
        perm = rng.permutation(len(X))
        a, b = perm[: len(X) // 2], perm[len(X) // 2 :]
        la = _nearest(X, self._kmeans(X[a], k, self.seed))
        lb = _nearest(X, self._kmeans(X[b], k, self.seed + 1))
        return float(adjusted_rand_score(la, lb))

    def fit(self, X: np.ndarray) -> SphericalKMeans:
        X = l2_normalize(X)
        n = len(X)
        rng = np.random.default_rng(self.seed)
        Xs = X[rng.choice(n, self.sample_size, replace=False)] if n > self.sample_size else X
        self.scores_: dict[int, float] = {}
        if self.method == "merge" and len(Xs) >= 4 * self.micro_clusters:
            centroids = self._fit_merge(Xs, rng)
        else:
            centroids = self._fit_kmeans(Xs, rng)
        centroids, labels = self._merge_tiny(X, centroids)
        sizes = np.bincount(labels, minlength=len(centroids))
        order = np.argsort(-sizes, kind="stable")
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        self.centroids_ = np.ascontiguousarray(centroids[order])
        self.labels_ = remap[labels]
        self.k_ = len(self.centroids_)
        return self

    def _candidates(self, n: int) -> range:
        hi = min(self.k_max, max(2, n // 20))
        return range(min(self.k_min, hi), hi + 1)

    def _fit_kmeans(self, Xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.k is not None:
            k = min(self.k, len(Xs))
        else:
            for kk in self._candidates(len(Xs)):
                self.scores_[kk] = self._score(Xs, kk, rng)
            k = self._best_k()
        return self._kmeans(Xs, k, self.seed) if k > 1 else l2_normalize(Xs.mean(0))

    def _fit_merge(self, Xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Over-cluster with k-means, then merge micro-clusters by average cosine linkage.

        Behavioural groups in embedding space are rarely spherical or equal in size; plain
        k-means splits large groups and merges small neighbouring ones. Micro-clusters follow
        the shape, and average linkage joins them into the k groups.
        """
        from sklearn.cluster import AgglomerativeClustering

        micro = self._kmeans(Xs, self.micro_clusters, self.seed)
        micro_labels = _nearest(Xs, micro)
        ks = [min(self.k, self.micro_clusters)] if self.k is not None else list(self._candidates(len(Xs)))
        tree = AgglomerativeClustering(linkage="average", metric="cosine", compute_full_tree=True)
        best: dict[int, np.ndarray] = {}
        for kk in ks:
            merged = tree.set_params(n_clusters=kk).fit_predict(micro)
            cents = l2_normalize(np.stack([Xs[merged[micro_labels] == j].mean(0) for j in range(kk)]))
            best[kk] = cents
            if self.k is None:
                labels = _nearest(Xs, cents)
                m = min(len(Xs), 4000)
                self.scores_[kk] = (
                    float(silhouette_score(Xs, labels, metric="cosine", sample_size=m, random_state=self.seed))
                    if len(np.unique(labels)) > 1 else -1.0
                )
        k = ks[0] if self.k is not None else self._best_k()
        return best[k]

    def _best_k(self) -> int:
        k = max(self.scores_, key=lambda kk: (round(self.scores_[kk], 3), -kk))
        log.info("chose k=%d by %s (%s)", k, self.selection,
                 ", ".join(f"{kk}:{s:.3f}" for kk, s in self.scores_.items()))
        return k

    def _merge_tiny(self, X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop clusters under min_cluster_frac one at a time, reassigning their users."""
        min_size = max(1, int(np.ceil(self.min_cluster_frac * len(X))))
        labels = _nearest(X, centroids)
        while len(centroids) > 1:
            sizes = np.bincount(labels, minlength=len(centroids))
            small = int(np.argmin(sizes))
            if sizes[small] >= min_size:
                break
            keep = np.delete(np.arange(len(centroids)), small)
            centroids = centroids[keep]
            labels = _nearest(X, centroids)
            centroids = np.stack(
                [X[labels == j].mean(0) if (labels == j).any() else centroids[j] for j in range(len(centroids))]
            )
            centroids = l2_normalize(centroids)
            labels = _nearest(X, centroids)
        return centroids, labels

    # ------------------------------------------------------------------ predicting
    def _check(self) -> np.ndarray:
        if self.centroids_ is None:
            raise NotFittedError("SphericalKMeans is not fitted: call fit(X) first.")
        return self.centroids_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _nearest(l2_normalize(X), self._check())

    def predict_confidence(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidence in [0, 1]) computed row by row, so batch == one-by-one."""
        return assign_to_centroids(X, self._check(), self.confidence_temperature)


def kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding under cosine distance (X L2-normalised)."""
    centers = [int(rng.integers(len(X)))]
    d = 1.0 - X @ X[centers[0]]
    for _ in range(1, k):
        p = np.maximum(d, 0) ** 2
        total = p.sum()
        nxt = int(rng.choice(len(X), p=p / total)) if total > 0 else int(rng.integers(len(X)))
        centers.append(nxt)
        d = np.minimum(d, 1.0 - X @ X[nxt])
    return np.ascontiguousarray(X[centers], dtype=np.float32)


def _nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(X @ centroids.T, axis=1).astype(np.int64)


def assign_to_centroids(X: np.ndarray, centroids: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    sims = l2_normalize(X) @ centroids.T  # (n, k) cosine
    return np.argmax(sims, axis=1).astype(np.int64), softmax_confidence(sims, temperature)


def match_centroids(old: np.ndarray, new: np.ndarray, min_similarity: float = 0.5) -> dict[int, int]:
    """Map new cluster index -> old id by maximum total cosine (Hungarian); weak matches excluded."""
    sim = l2_normalize(new) @ l2_normalize(old).T
    rows, cols = linear_sum_assignment(-sim)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if sim[r, c] >= min_similarity}
