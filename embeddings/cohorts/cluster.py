"""Spherical k-means in FAISS with data-driven k, tiny-cluster merging and stable ids.

Where silhouette and the density disagree, the density decides: a cohort with a valley inside is
split (`split_bimodal`).

Every user gets a cohort (there is no outlier bin). Cohort ids are 0..k-1 by decreasing size at
first fit; `match_centroids` maps a refit's clusters onto previous ids (Hungarian on cosine).
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, silhouette_score

from embeddings.cohorts.confidence import ConfidenceModel
from embeddings.cohorts.index import l2_normalize
from embeddings.config import ClusterConfig
from embeddings.errors import NotFittedError

log = logging.getLogger(__name__)
# a dip below this share of the lower peak: two groups, not one cut in half (docs/decisions.md#valley-split)
VALLEY_MAX = 0.5
# best silhouette under this: "no substantial structure" (Kaufman & Rousseeuw); read by training/profile_select.py
STRUCTURE_MIN = 0.25
# the valley split's second try: 2-means on this many whitened principal coordinates finds twins apart
# along a narrow direction (docs/decisions.md#whitened-retry-of-the-valley-split)
WHITEN_DIMS = 5


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
        n_init: int = 10,
        seed: int = 0,
        confidence_temperature: float = 0.05,
        split_bimodal: bool = True,
    ) -> None:
        self.k, self.k_min, self.k_max, self.selection = k, k_min, k_max, selection
        self.method, self.micro_clusters = method, micro_clusters
        self.min_cluster_frac, self.sample_size = min_cluster_frac, sample_size
        self.niter, self.n_init, self.seed = niter, n_init, seed
        self.confidence_temperature = confidence_temperature
        self.split_bimodal = split_bimodal
        self.centroids_: np.ndarray | None = None
        self.confidence_model: ConfidenceModel | None = None  # calibrated on crops after the fit (pipeline)

    @classmethod
    def from_config(cls, c: ClusterConfig, **overrides: Any) -> SphericalKMeans:
        """Unfitted, with the settings of a `cluster` config section (keyword overrides win)."""
        kw: dict[str, Any] = dict(
            k_min=c.k_min, k_max=c.k_max, selection=c.selection, method=c.method,
            micro_clusters=c.micro_clusters, min_cluster_frac=c.min_cluster_frac, sample_size=c.sample_size,
            niter=c.niter, n_init=c.n_init, seed=c.seed, confidence_temperature=c.confidence_temperature,
            split_bimodal=c.split_bimodal,
        )
        return cls(overrides.pop("k", c.k), **{**kw, **overrides})

    # ------------------------------------------------------------------ fitting
    def _kmeans(self, X: np.ndarray, k: int, seed: int, euclidean: bool = False) -> np.ndarray:
        """Best of n_init k-means++-seeded Lloyd runs: spherical (by total cosine to the unit
        centroids), or with `euclidean` plain (by total squared distance)."""
        rng = np.random.default_rng(seed)
        X = np.ascontiguousarray(X, dtype=np.float32)
        best, best_obj = None, -np.inf
        for _ in range(self.n_init):
            km = faiss.Kmeans(
                X.shape[1], k, niter=self.niter, spherical=not euclidean, seed=int(rng.integers(2**31)),
                verbose=False, min_points_per_centroid=1, max_points_per_centroid=100000,
            )
            km.train(X, init_centroids=kmeans_pp(X, k, rng, euclidean))
            if euclidean:
                c, obj = km.centroids.copy(), -float(km.index.search(X, 1)[0].sum())
            else:
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
        if self.k is None and self.split_bimodal:
            centroids = self._split_bimodal(Xs, centroids)
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
        the shape, and average linkage joins them into the k groups. A cut of the tree counts
        only groups of at least `min_cluster_frac` of the users: outlying micro-clusters form
        tiny groups of their own that would be merged away afterwards, so "k groups" means k
        real cohorts, and every k is scored as it will be published.
        """
        from scipy.cluster.hierarchy import fcluster, linkage

        m = min(self.micro_clusters, len(Xs))
        micro = self._kmeans(Xs, m, self.seed)
        micro_labels = _nearest(Xs, micro)
        micro_sizes = np.bincount(micro_labels, minlength=m).astype(np.float64)
        tree = linkage(micro.astype(np.float64), method="average", metric="cosine")
        min_size = max(1.0, self.min_cluster_frac * len(Xs))
        ks = [min(self.k, m)] if self.k is not None else [kk for kk in self._candidates(len(Xs)) if kk <= m] or [m]
        best: dict[int, np.ndarray] = {}
        for kk in ks:
            for cut in range(kk, m + 1):  # the first cut with kk groups that are not tiny
                groups = fcluster(tree, t=cut, criterion="maxclust") - 1
                big = np.flatnonzero(np.bincount(groups, weights=micro_sizes) >= min_size)
                if len(big) >= kk:
                    break
            user_group = groups[micro_labels]
            cents = l2_normalize(np.stack([Xs[user_group == j].mean(0) for j in big]))
            best[kk] = cents
            if self.k is None:
                labels = _nearest(Xs, cents)
                n = min(len(Xs), 4000)
                self.scores_[kk] = (
                    float(silhouette_score(Xs, labels, metric="cosine", sample_size=n, random_state=self.seed))
                    if len(np.unique(labels)) > 1 else -1.0
                )
        k = ks[0] if self.k is not None else self._best_k()
        return best[k]

    def _split_bimodal(self, Xs: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """Split each cohort whose two halves are separate modes (`valley_ratio` < VALLEY_MAX).

        Silhouette scores a split of two close groups (users who act alike but in another order)
        below keeping them together, however cleanly they separate; the density between them
        shows whether they are two groups. Halves under min_cluster_frac are never split off.
        """
        min_size = max(2, int(np.ceil(self.min_cluster_frac * len(Xs))))
        labels = _nearest(Xs, centroids)
        out: list[np.ndarray] = []
        for j, c in enumerate(centroids):
            Xc = Xs[labels == j]
            room = self.k_max - len(out) - (len(centroids) - j)  # cohorts still allowed
            if room < 1 or len(Xc) < 2 * min_size:
                out.append(c[None])
                continue
            for whiten in (False, True):
                found = self._two_modes(Xc, min_size, whiten)
                if found is None:
                    continue
                halves, line, side = found
                ratio = valley_ratio(line, side, self.seed)
                if ratio < VALLEY_MAX:
                    log.info("split a cohort of %d into %d + %d (density valley %.2f%s)",
                             len(Xc), side.sum(), (~side).sum(), ratio, " on whitened coordinates" if whiten else "")
                    out.append(halves)
                    break
            else:
                out.append(c[None])
        return l2_normalize(np.concatenate(out).astype(np.float32))

    def _two_modes(self, Xc: np.ndarray, min_size: int,
                   whiten: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """2-means halves of a cohort (unit centroids), the points' positions on the line between
        them, and each point's side; None when the smaller side is under `min_size`.

        whiten: run 2-means on the top WHITEN_DIMS principal coordinates scaled to unit variance;
        the line is the one between the sides there, and the halves cut across it
        (`halves_across`).
        """
        if whiten:
            W, B = _whitened(Xc, WHITEN_DIMS)
            side = _nearest_euclid(W, self._kmeans(W, 2, self.seed, euclidean=True)) == 0
        else:
            halves = self._kmeans(Xc, 2, self.seed)
            side = _nearest(Xc, halves) == 0
        if min(side.sum(), (~side).sum()) < min_size:
            return None
        if not whiten:
            return halves, Xc @ (halves[0] - halves[1]), side
        d = W[side].mean(0) - W[~side].mean(0)
        return halves_across(Xc, B.T @ d, side).astype(np.float32), W @ d, side

    def _best_k(self) -> int:
        """The k with the best score, the smaller k where scores tie to 3 decimals (docs/decisions.md#k-tolerance)."""
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
        return assign_to_centroids(X, self._check(), self.confidence_temperature, self.confidence_model)


def valley_ratio(p: np.ndarray, side: np.ndarray, seed: int = 0, max_points: int = 4000) -> float:
    """Depth of the density dip between two groups on a line: 1 = one mode, near 0 = two apart.

    p: (n,) positions on the line; side: (n,) bool, the group of each point. The density (Gaussian
    KDE, Scott's bandwidth) is read at its highest point on each side of the midpoint between the
    groups' means; the result is its lowest value between those two peaks over the lower peak.
    """
    return valley(p, side, seed, max_points)[0]


def valley(p: np.ndarray, side: np.ndarray, seed: int = 0, max_points: int = 4000) -> tuple[float, float]:
    """`valley_ratio` and the position on the line where the density between the peaks is lowest."""
    from scipy.stats import gaussian_kde

    p = np.asarray(p, dtype=np.float64)
    if len(p) > max_points:
        keep = np.random.default_rng(seed).choice(len(p), max_points, replace=False)
        p, side = p[keep], side[keep]
    if p.std() < 1e-9 or side.all() or not side.any():
        return 1.0, float(p.mean()) if len(p) else 0.0
    grid = np.linspace(p.min(), p.max(), 256)
    dens = gaussian_kde(p)(grid)
    mid = 0.5 * (p[side].mean() + p[~side].mean())
    left = grid <= mid
    i0 = int(np.argmax(np.where(left, dens, -1.0)))
    i1 = int(np.argmax(np.where(left, -1.0, dens)))
    lo, hi = sorted((i0, i1))
    low = lo + int(np.argmin(dens[lo : hi + 1]))
    return float(dens[low] / max(min(dens[i0], dens[i1]), 1e-300)), float(grid[low])


def halves_across(X: np.ndarray, w: np.ndarray, side: np.ndarray) -> np.ndarray:
    """(2, dim) unit centroids whose nearest-centroid boundary cuts the cohort X across direction w
    where the density along it is lowest; row 0 on `side`'s part.

    Two unit centroids at angles gamma +- delta from the cohort's mean direction m in the plane of m
    and u (w made orthogonal to m) split x where x.u = tan(gamma) x.m, whatever delta, so gamma puts
    the boundary at the valley and delta at the sides' mean angles. The sides' own means would tilt
    the boundary toward directions of large spread, which cut the two groups across (a cohort wide
    along one direction, its twins apart along a narrow one).
    """
    m = l2_normalize(X.mean(0)[None])[0]
    u = w - (w @ m) * m
    u = u / max(float(np.linalg.norm(u)), 1e-12)
    a, rho = X @ u, float((X @ m).mean())
    _, cut = valley(a, side)
    gamma = np.arctan2(cut, rho)
    ang = [np.arctan2(a[s].mean(), rho) for s in (side, ~side)]
    delta = 0.5 * abs(ang[0] - ang[1])
    sign = 1.0 if ang[0] >= ang[1] else -1.0
    return np.stack([np.cos(gamma + g * delta) * m + np.sin(gamma + g * delta) * u for g in (sign, -sign)])


def fit_rows(c: ClusterConfig, lengths: np.ndarray | None) -> np.ndarray | None:
    """Mask of the users cohorts are fitted on: those with `min_events_to_fit`+ events, when they
    are at least half of all users and 2 x k_max; None = everyone (a log of mostly short histories,
    as CDNOW's, where the short users are the data)."""
    if lengths is None:
        return None
    enough = np.asarray(lengths) >= c.min_events_to_fit
    return enough if enough.sum() >= max(0.5 * len(enough), 2 * c.k_max) else None


def kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator, euclidean: bool = False) -> np.ndarray:
    """k-means++ seeds: under cosine distance (X L2-normalised), or Euclidean with `euclidean`."""
    def dist(x: np.ndarray) -> np.ndarray:
        return np.sqrt(((X - x) ** 2).sum(1)) if euclidean else 1.0 - X @ x

    centers = [int(rng.integers(len(X)))]
    d = dist(X[centers[0]])
    for _ in range(1, k):
        p = np.maximum(d, 0) ** 2
        total = p.sum()
        nxt = int(rng.choice(len(X), p=p / total)) if total > 0 else int(rng.integers(len(X)))
        centers.append(nxt)
        d = np.minimum(d, dist(X[nxt]))
    return np.ascontiguousarray(X[centers], dtype=np.float32)


def _whitened(X: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, <= dims) of X on its top principal directions, each scaled to unit variance,
    and the (<= dims, dim) map B taking centred X to them (coordinates = (X - mean) @ B.T)."""
    Z = X.astype(np.float64) - X.mean(axis=0)
    _, S, Vt = np.linalg.svd(Z, full_matrices=False)
    keep = S[:dims] > 1e-9 * max(S[0], 1e-300)
    B = Vt[:dims][keep] / (S[:dims][keep] / np.sqrt(len(Z)))[:, None]
    return (Z @ B.T).astype(np.float32), B


def _nearest_euclid(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (((X[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)).argmin(1)


def _nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(X @ centroids.T, axis=1).astype(np.int64)


def assign_to_centroids(X: np.ndarray, centroids: np.ndarray, temperature: float,
                        model: ConfidenceModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(centroid position, confidence): with a calibrated model its answer (the nearest centroid,
    or for 1-3-event rows its short-history head's), else the nearest centroid and softmax(cos / T)."""
    sims = l2_normalize(X) @ centroids.T  # (n, k) cosine
    if model is not None:
        return model.assign(sims, X)
    return np.argmax(sims, axis=1).astype(np.int64), softmax_confidence(sims, temperature)


def match_centroids(old: np.ndarray, new: np.ndarray, min_similarity: float = 0.5) -> dict[int, int]:
    """Map new cluster index -> old id by maximum total cosine (Hungarian); weak matches excluded."""
    sim = l2_normalize(new) @ l2_normalize(old).T
    rows, cols = linear_sum_assignment(-sim)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if sim[r, c] >= min_similarity}
