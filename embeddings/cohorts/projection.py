"""The 2-D cohort map: a sample of users projected onto the plane where the cohort centroids spread most.

Computed when a version is saved and stored with it (`map.json`), so the studio page and the HTML
report draw the same picture without touching the embeddings. Why the centroids' plane and not
plain PCA of the users: the first two principal directions of the users are mostly within-cohort
spread (history length, recency), which piles every cohort on top of the others; the plane of the
(size-weighted) centroids is the 2-D view in which cohorts are most apart. Linear, deterministic and
dependency-free (one SVD); UMAP / t-SNE would add a heavy dependency and change between runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.cohorts.index import l2_normalize
from embeddings.fsutil import atomic_write_json

FORMAT = "seqcohort.map/1"
MAX_POINTS = 3000  # enough to see every cohort's shape; the page stays light on a phone
MIN_PER_COHORT = 25  # small cohorts still show on the map


def sample_rows(labels: np.ndarray, n_max: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Row indices of a per-cohort sample: proportional to size, at least MIN_PER_COHORT (or all) each."""
    labels = np.asarray(labels)
    if len(labels) <= n_max:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = min(len(rows), max(MIN_PER_COHORT, round(n_max * len(rows) / len(labels))))
        out.append(np.sort(rng.choice(rows, size=k, replace=False)))
    return np.sort(np.concatenate(out))


def centroid_plane(centroids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), axes (d, 2)): the size-weighted principal plane of the unit centroids."""
    C = l2_normalize(centroids).astype(np.float64)  # (k, d)
    w = np.asarray(sizes, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(C), 1 / len(C))
    mean = w @ C  # (d,)
    _, _, vt = np.linalg.svd(np.sqrt(w)[:, None] * (C - mean), full_matrices=False)
    axes = vt[:2].T  # (d, 2); fewer than 2 when k < 3
    if axes.shape[1] < 2:
        axes = np.concatenate([axes, np.zeros((C.shape[1], 2 - axes.shape[1]))], axis=1)
    # the sign of a singular vector is arbitrary: fix it so the same model draws the same map
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    return mean, axes * np.where(signs == 0, 1, signs)


def compute_map(user_ids: np.ndarray, X: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                cohort_ids: np.ndarray, sizes: np.ndarray, n_max: int = MAX_POINTS) -> dict[str, Any]:
    """The map's JSON: a sample of users (ids, cohort, x, y) and each cohort's centroid position."""
    rows = sample_rows(labels, n_max)
    mean, axes = centroid_plane(centroids, sizes)
    P = (l2_normalize(X[rows]).astype(np.float64) - mean) @ axes  # (n, 2)
    Pc = (l2_normalize(centroids).astype(np.float64) - mean) @ axes  # (k, 2)
    r4 = lambda a: np.round(a, 4).tolist()  # noqa: E731
    return {
        "format": FORMAT,
        "method": "size-weighted PCA of the cohort centroids; users projected onto its first two axes",
        "n_users": int(len(labels)),
        "points": {"user_id": [str(u) for u in np.asarray(user_ids)[rows]],
                   "cohort_id": [int(c) for c in np.asarray(labels)[rows]], "x": r4(P[:, 0]), "y": r4(P[:, 1])},
        "centroids": {"cohort_id": [int(c) for c in cohort_ids], "x": r4(Pc[:, 0]), "y": r4(Pc[:, 1])},
    }


def save_map(path: str | Path, m: dict[str, Any]) -> Path:
    return atomic_write_json(path, m)


def load_map(path: str | Path) -> dict[str, Any] | None:
    """The stored map, or None for a version published before maps were stored."""
    p = Path(path)
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    return d if d.get("format") == FORMAT else None
