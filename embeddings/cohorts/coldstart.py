"""Placing users with 1-3 events: a classifier trained on the first events of fitted users.

The nearest centroid is the right rule for an embedding that summarises a whole history. One of
one to three events lies in a region every cohort's short windows share, and which centroid is
nearest there says little about where the user's history will go.

So each fit also learns the question directly: fitted users' histories are cut to 1-3-event
windows (half their first events, as a new user shows them, half anywhere; moved by whole weeks
so hour and weekday stay: half to end where their own user's history ends, so one visit long ago
reads as a dormant user, half about as long before as_of as the log's own short users' last
events), embedded, and a multinomial logistic regression on the embedding learns which cohort
the window's whole history got. Users whose embedding says they summarise at most three events
(read off its frequency coordinate) take its answer, with its probability as their confidence;
everyone else keeps the nearest centroid. It reads the embedding row only, so a user alone gets
the answer they get in a batch. It places short users in their archetype's cohort more often than
the nearest centroid (docs/decisions.md#short-history-head-for-1-3-event-users).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embeddings.cohorts.layout import log_events

MAX_EVENTS = 3  # histories this short take the classifier's answer
MIN_WINDOWS = 100  # fewer windows (or one cohort among them): no classifier, the nearest centroid for everyone
HELD_OUT = 0.25  # share of users whose windows test the head against the nearest centroid


@dataclass
class ShortHistoryHead:
    """P(cohort position | embedding of a 1-3-event history) = softmax(X @ coef.T + intercept)."""

    coef: np.ndarray  # (n classes, dim)
    intercept: np.ndarray  # (n classes,)
    classes: np.ndarray  # centroid position of each class
    layout: dict[str, float]  # embeddings.cohorts.confidence.frequency_layout: where the event count is
    info: dict[str, Any]
    max_events: int = MAX_EVENTS

    def short_rows(self, X: np.ndarray) -> np.ndarray:
        """Mask of rows that summarise at most `max_events` events."""
        return log_events(X, self.layout) <= np.log1p(self.max_events + 0.5)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid position, probability of it) for each row of X."""
        z = np.asarray(X, dtype=np.float64) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        best = p.argmax(axis=1)
        return self.classes[best].astype(np.int64), p[np.arange(len(p)), best].astype(np.float32)

    def apply(self, X: np.ndarray, pos: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pos / conf with the short rows' answers replaced by the classifier's."""
        rows = self.short_rows(X)
        if rows.any():
            pos, conf = pos.copy(), conf.copy()
            pos[rows], conf[rows] = self.predict(np.asarray(X)[rows])
        return pos, conf

    @classmethod
    def fit(cls, X: np.ndarray, positions: np.ndarray, layout: dict[str, float], *,
            nearest: np.ndarray | None = None, groups: np.ndarray | None = None,
            **info: Any) -> ShortHistoryHead | None:
        """Fit on window embeddings X and their whole history's centroid position.

        With `nearest` (each window's nearest centroid) and `groups` (its user), a quarter of the
        users' windows are held out first: the head is kept only if it places them in their
        user's cohort more often than the nearest centroid does. None: too little to learn, or
        no better than the nearest centroid.
        """
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) < MIN_WINDOWS or len(np.unique(positions)) < 2:
            return None
        X = np.asarray(X, dtype=np.float64)
        if nearest is not None and groups is not None:
            _, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
            held = np.random.default_rng(0).random(g.max() + 1)[g] < HELD_OUT
            if held.all() or not held.any():  # too few users to hold some out: nothing shows it helps
                return None
            trial = cls._fit(X[~held], positions[~held], layout, {})
            if trial is None:
                return None
            info["held_out_accuracy"] = round(float((trial.predict(X[held])[0] == positions[held]).mean()), 4)
            info["held_out_nearest"] = round(float((np.asarray(nearest)[held] == positions[held]).mean()), 4)
            if info["held_out_accuracy"] <= info["held_out_nearest"]:
                return None
        return cls._fit(X, positions, layout, info)

    @classmethod
    def _fit(cls, X: np.ndarray, positions: np.ndarray, layout: dict[str, float], info: dict[str, Any]) -> ShortHistoryHead | None:
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(positions)) < 2:
            return None
        lr = LogisticRegression(C=1.0, max_iter=3000).fit(X, positions)
        coef, intercept = lr.coef_, lr.intercept_
        if len(lr.classes_) == 2:  # sklearn keeps one row for two classes: logit of the second
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
        head = cls(coef, intercept, lr.classes_.astype(np.int64), layout, {"n_windows": int(len(positions)), **info})
        head.info["window_accuracy"] = round(float((head.predict(X)[0] == positions).mean()), 4)
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "first_windows_logistic", "max_events": self.max_events,
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "classes": self.classes.tolist(), "layout": self.layout, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ShortHistoryHead | None:
        if not d:
            return None
        return cls(np.asarray(d["coef"], dtype=np.float64), np.asarray(d["intercept"], dtype=np.float64),
                   np.asarray(d["classes"], dtype=np.int64), d["layout"], dict(d.get("info", {})),
                   int(d.get("max_events", MAX_EVENTS)))
