"""Assignment confidence that means something: calibrated on crops of the fitted users' histories.

A softmax over cosine similarities says how much nearer one centroid is than the others, not how
likely the answer is right: it reads sure of short live sessions that are often placed wrong
(docs/decisions.md#calibrated-assignment-confidence).

So each fit also asks "what would we have said from fewer of this user's events?": a sample of
fitted users is cut to windows (1-128 events, anywhere in the history, moved by whole weeks to
end in the week before as_of like a live session, so hour and weekday stay), embedded and
assigned; a logistic regression on the top similarity, the margin to the runner-up and how many
events the embedding summarises (read off
its frequency coordinate), fitted on whether the window's cohort is the whole history's, turns
similarities into that probability. It reads the embedding row only, so one user alone still
gets the same confidence as in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.coldstart import ShortHistoryHead
from embeddings.cohorts.layout import log_events
from embeddings.data.schema import sort_by_user_time

CROP_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


WEEK_US = 7 * 86_400 * 1_000_000


def crop_histories(events: pl.DataFrame, as_of: datetime, n_users: int, seed: int = 0, *,
                   lengths: tuple[int, ...] = CROP_LENGTHS, min_events: int = 2, first_share: float = 0.0,
                   recency_s: np.ndarray | None = None, own_share: float = 0.0) -> pl.DataFrame:
    """Windows of consecutive events (a length from `lengths`) of up to `n_users` users with
    `min_events`+ events, each moved to end near as_of like a live session.

    Each window is shorter than its user's history (a genuine part of it) and keeps its user_id.
    A share `first_share` of them are the history's first events (what a new user shows), the rest
    start anywhere. They are moved later by a whole number of weeks, so hour of day and weekday
    stay what the user did: each ends within the week before as_of, or before as_of minus a
    recency drawn from `recency_s` (seconds; e.g. those of the log's own short-history users),
    or, for a share `own_share` of them, where the user's own history ends (so a user last seen
    long ago gives windows last seen long ago).
    """
    rng = np.random.default_rng(seed)
    ev = events if events.get_column("ts").max() <= as_of else events.filter(pl.col("ts") <= as_of)  # no copy of a whole log
    counts = (ev.lazy().group_by("user_id").agg(len=pl.len(), _last=pl.col("ts").max())  # lazy: an eager
              .filter(pl.col("len") >= max(2, min_events)).sort("user_id").collect())  # group_by holds the log twice
    if counts.is_empty():
        return ev.clear()
    pick = rng.choice(counts.height, size=min(n_users, counts.height), replace=False)
    users = counts[np.sort(pick)]
    ev = sort_by_user_time(ev.filter(pl.col("user_id").is_in(users["user_id"].implode())))
    n = users["len"].to_numpy()
    k = np.array([rng.choice([c for c in lengths if c < m] or [1]) for m in n])
    start = (rng.random(len(n)) * (n - k + 1)).astype(np.int64)
    start[rng.random(len(n)) < first_share] = 0
    rec = np.zeros(len(n)) if recency_s is None or not len(recency_s) else rng.choice(recency_s, len(n))
    own = rng.random(len(n)) < own_share  # these end where their user's history ends
    rec[own] = users.select((pl.lit(as_of, dtype=pl.Datetime("us")) - pl.col("_last")).dt.total_seconds()
                            ).to_series().to_numpy()[own]
    spec = users.select("user_id").with_columns(
        pl.Series("_start", start), pl.Series("_end", start + k), pl.Series("_rec", (rec * 1e6).astype(np.int64)))
    rows = (ev.join(spec, on="user_id", how="inner")
            .with_columns(_i=pl.int_range(pl.len()).over("user_id"))
            .filter((pl.col("_i") >= pl.col("_start")) & (pl.col("_i") < pl.col("_end"))))
    room = (pl.lit(as_of, dtype=pl.Datetime("us")) - pl.col("ts").max().over("user_id")).dt.total_microseconds()
    weeks = (room - pl.col("_rec")) // WEEK_US
    return (rows.with_columns(pl.col("ts") + pl.duration(microseconds=weeks * WEEK_US))
            .drop("_start", "_end", "_i", "_rec"))


def features(sims: np.ndarray, X: np.ndarray, layout: dict[str, float] | None) -> np.ndarray:
    """(n, 4): top cosine similarity, margin over the runner-up, log events, margin x log events."""
    s = np.sort(np.asarray(sims, dtype=np.float64), axis=1)
    top = s[:, -1]
    margin = top - s[:, -2] if s.shape[1] > 1 else np.zeros_like(top)
    n = log_events(X, layout) if layout is not None else np.zeros_like(top)
    return np.stack([top, margin, n, margin * n], axis=1)


@dataclass
class ConfidenceModel:
    """P(the whole history's cohort | embedding) = sigmoid(coef . features + intercept)."""

    coef: tuple[float, ...]
    intercept: float
    layout: dict[str, float] | None  # frequency_layout of the encoder (None: no length feature)
    info: dict[str, Any]
    short_head: Any = None  # embeddings.cohorts.coldstart.ShortHistoryHead: places 1-3-event histories

    def assign(self, sims: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid position, confidence): the nearest centroid, or the short-history head's answer."""
        pos, conf = np.argmax(sims, axis=1).astype(np.int64), self.apply(sims, X)
        return self.short_head.apply(X, pos, conf) if self.short_head is not None else (pos, conf)

    def apply(self, sims: np.ndarray, X: np.ndarray) -> np.ndarray:
        z = features(sims, X, self.layout) @ np.asarray(self.coef) + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).astype(np.float32)

    @classmethod
    def fit(cls, sims: np.ndarray, X: np.ndarray, agree: np.ndarray, layout: dict[str, float] | None) -> ConfidenceModel:
        """Fit on crops: their similarities, embeddings and whether their nearest centroid is their user's."""
        from sklearn.linear_model import LogisticRegression

        agree = np.asarray(agree, dtype=bool)
        info: dict[str, Any] = {"n_crops": int(len(agree)), "crop_agreement": round(float(agree.mean()), 4)}
        if agree.all() or not agree.any():  # nothing to learn from: the observed rate, for everyone
            rate = float(np.clip(agree.mean(), 0.01, 0.99))
            return cls((0.0, 0.0, 0.0, 0.0), float(np.log(rate / (1 - rate))), layout, info)
        lr = LogisticRegression(C=10.0, max_iter=2000).fit(features(sims, X, layout), agree)
        model = cls(tuple(float(c) for c in lr.coef_[0]), float(lr.intercept_[0]), layout, info)
        info["crop_mean_confidence"] = round(float(model.apply(sims, X).mean()), 4)
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "crops_logistic", "coef": list(self.coef), "intercept": self.intercept,
                "layout": self.layout, "info": self.info,
                "short_head": self.short_head.to_dict() if self.short_head is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ConfidenceModel | None:
        if not d:
            return None
        return cls(tuple(float(c) for c in d["coef"]), float(d["intercept"]), d.get("layout"), dict(d.get("info", {})),
                   ShortHistoryHead.from_dict(d.get("short_head")))
