"""Fit the propensity head once the encoder is trained: choose its inputs over time, fit, calibrate.

The head is a logistic regression on [embedding z, intent_features] of labelled (user, cut-off)
histories, fitted only on users the encoder never trained on: contrastive views pull a user's
early and late events together, so for a training user the history up to an old cut-off already
encodes what came after it, and a head fitted there learns a leak that is gone at serving time.

Which inputs generalise differs between logs
(docs/decisions.md#propensity-head-inputs-chosen-on-the-latest-cut-off), so each candidate is fitted
on the held-out users' earlier cut-offs and scored (ROC AUC) on their latest one, the one closest to
deployment (cross-fitted by user, so no user's latest pair is scored by a head that saw their
earlier ones); the simplest candidate within TOLERANCE of the best wins, since one cut-off's AUC is
a noisy guide to the next. The chosen head is refitted on all their pairs and Platt-scaled on
out-of-fold scores of the latest cut-off (each pair scored by a head fitted without that user),
which also corrects the drift of the goal rate over time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embeddings.errors import ConfigError
from embeddings.model.intent import sigmoid

log = logging.getLogger(__name__)

# simplest first: name -> (which embedding columns: none / all but the habit profile / all, inverse L2 C).
# The habit profile (embeddings/features/habits.py) adds columns a head fitted on a small held-out share
# could overfit; the latest cut-off decides whether they earn their place.
CANDIDATES: dict[str, tuple[str, float]] = {
    "aggregates": ("none", 1.0),
    "embedding w/o habits+aggregates (strong L2)": ("core", 0.05),
    "embedding w/o habits+aggregates": ("core", 1.0),
    "embedding+aggregates (strong L2)": ("all", 0.05),
    "embedding+aggregates": ("all", 1.0),
}
N_FOLDS = 5  # cross-fitting folds for the Platt scaling
TOLERANCE = 0.005  # a richer head must beat a simpler one by this much AUC on the latest cut-off


@dataclass
class HeadFit:
    weight: np.ndarray  # (d + n_features,) over [z, features]; zeros on z when the embedding is not used
    bias: float
    a: float  # Platt: calibrated logit = a * raw + b
    b: float
    inputs: str  # the chosen candidate
    validation_auc: dict[str, float] = field(default_factory=dict)  # candidate -> AUC at the latest cut-off
    calibration: dict[str, Any] = field(default_factory=dict)


def _z_mask(d: int, part: str, n_profile: int) -> np.ndarray:
    """(d,) bool: the embedding columns a candidate uses (the habit profile is the last n_profile)."""
    mask = np.full(d, part != "none")
    if part == "core" and n_profile:
        mask[d - n_profile :] = False
    return mask


def _fit(Z: np.ndarray, F: np.ndarray, y: np.ndarray, z_mask: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised inputs, returned as weights over the raw [z, F].

    Only the embedding columns in `z_mask` are inputs; the others get weight 0.

    Standardising matters: the embedding is a unit vector (each coordinate ~ 1/sqrt(d)) while the
    aggregates are O(1), so an L2 penalty on raw inputs taxes the embedding far harder and the head
    leans on the aggregates (docs/decisions.md#propensity-head-on-standardised-inputs).
    """
    from sklearn.linear_model import LogisticRegression

    X = np.hstack([Z[:, z_mask], F]).astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)  # a constant column gets weight 0 either way
    lr = LogisticRegression(C=C, max_iter=3000).fit((X - mu) / sd, y.astype(int))
    w_used = lr.coef_[0] / sd
    b = float(lr.intercept_[0] - w_used @ mu)
    w = np.zeros(Z.shape[1] + F.shape[1])
    w[np.concatenate([z_mask, np.ones(F.shape[1], dtype=bool)])] = w_used
    return w, b


def _raw(Z: np.ndarray, F: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return np.hstack([Z, F]).astype(np.float64) @ w + b


def _out_of_fold(Z: np.ndarray, F: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, score_rows: np.ndarray,
                 fold: np.ndarray, z_mask: np.ndarray, C: float) -> np.ndarray:
    """(n,) raw scores of `score_rows`, each from a head fitted on the `fit_rows` of other folds (0 elsewhere)."""
    raw = np.zeros(len(y))
    for f in range(N_FOLDS):
        test = score_rows & (fold == f)
        train = fit_rows & (fold != f)
        if test.any() and len(np.unique(y[train])) == 2:
            w, b = _fit(Z[train], F[train], y[train], z_mask, C)
            raw[test] = _raw(Z[test], F[test], w, b)
    return raw


def fit_platt(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """p = sigmoid(a * logit + b), fitted by (nearly unregularised) logistic regression."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        rate = float(np.clip(y.mean(), 1e-4, 1 - 1e-4)) if len(y) else 0.5
        return {"a": 0.0, "b": float(np.log(rate / (1 - rate)))}
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logits[:, None], y.astype(int))
    return {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def fit_head(Z: np.ndarray, F: np.ndarray, y: np.ndarray, cutoffs: np.ndarray, held: np.ndarray,
             max_rows: int = 300_000, seed: int = 0, n_profile: int = 0,
             groups: np.ndarray | None = None) -> HeadFit:
    """Choose, fit and calibrate the head on the labelled pairs of held-out users.

    Args:
        Z, F: (n, d) embeddings and (n, k) intent features of the labelled (user, cut-off) pairs;
            the last `n_profile` columns of Z are the habit profile.
        y: (n,) 0/1 labels; cutoffs: (n,) the pair's cut-off; held: (n,) True for pairs of users the
            encoder never trained on — the only pairs used here.
        groups: (n,) the pair's user. Every score of a latest-cut-off pair (candidate choice,
            Platt) comes from a head fitted without any pair of that user: where label windows
            overlap (a log shorter than its cut-offs' horizons), an earlier pair's label counts
            some of the very events a later one is scored on. None: each pair its own group.
    """
    from sklearn.metrics import roc_auc_score

    use = held.copy()
    if use.sum() > max_rows:  # keep the fit bounded on huge logs; a fixed-seed sample of pairs
        keep = np.zeros(len(y), dtype=bool)
        keep[np.random.default_rng(seed).choice(np.flatnonzero(use), max_rows, replace=False)] = True
        use &= keep
    latest = cutoffs == cutoffs[use].max() if use.any() else np.zeros(len(y), dtype=bool)
    early, late = use & ~latest, use & latest
    if len(np.unique(y[use])) < 2:
        raise ConfigError("The held-out users' labelled histories have only one class; use a longer log, "
                          "a larger calibration share, or a goal that sometimes happens and sometimes not.")
    d = Z.shape[1]
    # without a habit profile the "w/o habits" candidates are the full ones: not scored twice
    names = [k for k, (part, _) in CANDIDATES.items() if part != "core" or n_profile]
    scores: dict[str, float] = {}
    users, gidx = np.unique(np.arange(len(y)) if groups is None else np.asarray(groups), return_inverse=True)
    fold = np.random.default_rng(seed).permutation(len(users))[gidx] % N_FOLDS  # a user's pairs share a fold
    if len(np.unique(y[early])) == 2 and len(np.unique(y[late])) == 2:
        for name in names:
            part, C = CANDIDATES[name]
            raw_late = _out_of_fold(Z, F, y, early, late, fold, _z_mask(d, part, n_profile), C)
            scores[name] = float(roc_auc_score(y[late], raw_late[late]))
        best = max(scores.values())
        choice = next(k for k in names if scores[k] >= best - TOLERANCE)
    else:  # a single usable cut-off (short log): nothing to validate over time
        choice = "embedding w/o habits+aggregates (strong L2)" if n_profile else "embedding+aggregates (strong L2)"
    part, C = CANDIDATES[choice]
    z_mask = _z_mask(d, part, n_profile)
    w, b = _fit(Z[use], F[use], y[use], z_mask, C)  # the shipped head: every held-out pair
    # Platt on out-of-fold scores of the latest cut-off's pairs (each scored by a head fitted
    # without that user's pairs)
    late_idx = np.flatnonzero(late)
    raw = _out_of_fold(Z, F, y, use, late, fold, z_mask, C)[late_idx]
    y_cal = y[late_idx]
    platt = fit_platt(raw, y_cal)
    calibration: dict[str, Any] = {"method": "platt", **platt, "n": int(len(late_idx)), "n_fit": int(use.sum()),
                                   "positive_rate": float(y_cal.mean()) if len(y_cal) else None}
    if len(np.unique(y_cal)) == 2:
        p = sigmoid(platt["a"] * raw + platt["b"])
        calibration.update(auc=float(roc_auc_score(y_cal, raw)), brier=float(np.mean((p - y_cal) ** 2)))
    chosen_by = (f"latest-cut-off AUC {({k: round(v, 4) for k, v in scores.items()})}" if scores
                 else "a single usable cut-off, so the default: nothing to validate over time")
    log.info("propensity head: inputs %r (%s); fitted on %d held-out pairs, calibrated out of fold on %d",
             choice, chosen_by, int(use.sum()), len(late_idx))
    return HeadFit(w, b, platt["a"], platt["b"], choice, scores, calibration)
