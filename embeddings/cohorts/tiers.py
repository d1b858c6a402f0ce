"""Goal-aware cohorts: intent tiers (propensity quantiles) crossed with behaviour clusters.

A campaign picks cohorts by how likely they are to reach the goal, and then speaks to each in
its own way; so with a goal every user is placed by two coordinates of the goal-aware embedding
(`embeddings.model.intent`): its intent tier, from the calibrated propensity against quantile cut
points fitted on the training users (tier 0 the highest), and its behaviour cluster, the nearest
behaviour centroid of the embedding's behaviour part. A (tier, cluster) cell is a cohort; cells
too small to act on join the most similar cell of the same tier, so every cohort stays inside one
intent tier. Assignment of a new user is the same two look-ups, row by row, so one user alone
gets the same answer as in a batch.

With `split_recent`, each tier is cut once more by whether the user reached the goal within the
horizon before as_of (the embedding's recent-goal coordinate, `embeddings.model.intent.recent_of`): a
marketer picks cohorts by their goal rate last period, and on an order log where nearly everyone
in the top tier bought recently, cells mixing a few who did not read just under low-intent cells
of recent one-off buyers, and lose their place. `split_recent="auto"` (the default) cuts
only where that costs nothing: when at least `RECENT_SHARE` of the top tier reached the goal
recently (on a log where many top-intent users have not, cutting would rank them last;
docs/decisions.md#tiers-cut-by-recent-goal).

Why tiers and not k-means on the joint space: k-means picks few, wide clusters when one
coordinate dominates, and a partially targeted wide cohort is a random sample of it
(docs/decisions.md#intent-tiers-instead-of-clustering-the-joint-space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embeddings.cohorts.cluster import assign_to_centroids
from embeddings.cohorts.confidence import ConfidenceModel
from embeddings.cohorts.index import l2_normalize
from embeddings.errors import ConfigError
from embeddings.model.intent import IntentConfig, recent_of, split_embedding

RECENT_SHARE = 0.95  # split_recent="auto" cuts tiers by recent goal when the top tier is this recent

TIER_LABELS = {
    2: ["High intent", "Low intent"],
    3: ["High intent", "Medium intent", "Low intent"],
    4: ["Very high intent", "High intent", "Medium intent", "Low intent"],
    5: ["Very high intent", "High intent", "Medium intent", "Low intent", "Very low intent"],
}


def tier_labels(n: int) -> list[str]:
    return TIER_LABELS.get(n, [f"Intent tier {i + 1}" for i in range(n)])


@dataclass
class IntentTiers:
    """Fitted tiers x behaviour clusters; the clustering interface pipeline code expects (k_, centroids_, predict)."""

    intent: IntentConfig
    thresholds: np.ndarray  # (T - 1,) calibrated-logit cut points, descending; tier t: below thresholds[t - 1]
    behaviour: np.ndarray  # (k, d) unit behaviour centroids
    cell_cohort: np.ndarray  # (T, k) cohort id of each (tier, behaviour cluster)
    centroids_: np.ndarray  # (n_cohorts, d + 1) unit mean member embedding per cohort id
    cohort_tier: np.ndarray  # (n_cohorts,) tier of each cohort
    cohort_behaviour: np.ndarray  # (n_cohorts,) behaviour cluster each cohort is named after
    temperature: float = 0.05
    scores_: dict[int, float] | None = None  # behaviour k-selection scores, for the record
    split_recent: bool = False  # cells also split by the recent-goal coordinate (rows of cell_cohort: 2 per tier)
    cohort_recent: np.ndarray | None = None  # (n_cohorts,) bool: the cohort reached the goal recently (split only)
    recent_share_top: float | None = None  # share of the top tier that reached the goal recently, for the record
    confidence_model: ConfidenceModel | None = None  # calibrated on crops after the fit (pipeline)

    @property
    def k_(self) -> int:
        return len(self.centroids_)

    @property
    def n_tiers(self) -> int:
        return len(self.thresholds) + 1

    def behaviour_of(self, z: np.ndarray) -> np.ndarray:
        """Nearest behaviour cluster of behaviour embeddings z (n, d)."""
        return assign_to_centroids(np.asarray(z, dtype=np.float32), self.behaviour, self.temperature)[0]

    def predict_confidence(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cohort ids, confidence in the behaviour cluster) of goal-aware embeddings (n, d + n_extra)."""
        X = np.asarray(X, dtype=np.float32)
        dim = self.behaviour.shape[1] + self.intent.n_extra
        if X.ndim != 2 or X.shape[1] != dim:
            raise ConfigError(f"Goal-aware cohorts need embeddings of dim {dim}, "
                              f"got shape {X.shape}; embed with the workspace's goal-aware encoder.")
        z, logit = split_embedding(X, self.intent)
        tier = np.searchsorted(-self.thresholds, -logit, side="right")
        row = _cell_rows(tier, recent_of(X, self.intent) if self.split_recent else None)
        pos, conf = assign_to_centroids(z.astype(np.float32), self.behaviour, self.temperature, self.confidence_model)
        return self.cell_cohort[row, pos].astype(np.int64), conf

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_confidence(X)[0]

    @classmethod
    def fit(cls, X: np.ndarray, intent: IntentConfig, behaviour: np.ndarray, *, shares: list[float],
            min_size: int, temperature: float = 0.05, scores: dict[int, float] | None = None,
            split_recent: bool | str = False) -> IntentTiers:
        """Cut points at the cumulative `shares` of X's propensity; cells under `min_size` users merged.

        Args:
            X: goal-aware embeddings (n, d + n_extra) of the users to fit on.
            behaviour: (k, d) unit behaviour centroids (fitted on the behaviour part of X).
            shares: tier sizes, highest intent first, summing to 1 (e.g. five 0.2s: quintiles).
            split_recent: also cut each tier by the recent-goal coordinate: True / "always",
                False / "never", or "auto" (when at least RECENT_SHARE of the top tier reached the
                goal recently; `cluster.split_recent` passes straight in). Needs a bundle with that
                coordinate; without one it is off.
        """
        if len(shares) < 2 or abs(sum(shares) - 1.0) > 1e-6 or min(shares) <= 0:
            raise ConfigError(f"intent tier shares must be >= 2 positive numbers summing to 1, got {shares}.")
        X = np.asarray(X, dtype=np.float32)
        z, logit = split_embedding(X, intent)
        thresholds = np.quantile(logit, 1.0 - np.cumsum(shares)[:-1])
        tier = np.searchsorted(-thresholds, -logit, side="right")
        recent = recent_of(X, intent)
        share_top = None if recent is None or not (tier == 0).any() else float(recent[tier == 0].mean())
        split = recent is not None and (split_recent in (True, "always") or (
            split_recent == "auto" and share_top is not None and share_top >= RECENT_SHARE))
        row = _cell_rows(tier, recent if split else None)
        beh = np.asarray(behaviour, dtype=np.float32)
        pos, _ = assign_to_centroids(z.astype(np.float32), beh, temperature)
        R, k = len(shares) * (2 if split else 1), len(beh)
        counts = np.zeros((R, k), dtype=np.int64)
        np.add.at(counts, (row, pos), 1)
        sim = beh @ beh.T
        target = np.tile(np.arange(k), (R, 1))  # cell (r, j) is named after / merged into (r, target[r, j])
        for r in range(R):
            big = np.flatnonzero(counts[r] >= min_size)
            if len(big) == 0:  # a row with only small cells (small data): one cohort for the row
                big = np.array([int(np.argmax(counts[r]))])
            for j in range(k):
                if j not in big:
                    target[r, j] = big[np.argmax(sim[j, big])]
        cell_cohort = np.full((R, k), -1, dtype=np.int64)
        cohort_row, cohort_beh = [], []
        for r in range(R):  # ids: by tier (recent first within it), then by size within the row
            if split and not counts[r].any() and counts[r ^ 1].any():
                continue  # e.g. a tier nobody in which reached the goal recently
            keep = np.unique(target[r])
            sizes = np.array([counts[r][target[r] == j].sum() for j in keep])
            for j in keep[np.argsort(-sizes, kind="stable")]:
                cell_cohort[r, target[r] == j] = len(cohort_row)
                cohort_row.append(r)
                cohort_beh.append(int(j))
        if split:  # an empty row's users (none now) would join the same tier's other row
            for r in range(R):
                if (cell_cohort[r] < 0).all():
                    cell_cohort[r] = cell_cohort[r ^ 1]
        labels = cell_cohort[row, pos]
        n = len(cohort_row)
        sums = np.zeros((n, X.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, X)
        empty = np.bincount(labels, minlength=n) == 0
        sums[empty] = np.hstack([beh[np.array(cohort_beh)[empty]], np.zeros((int(empty.sum()), intent.n_extra))])
        rows = np.array(cohort_row)
        return cls(intent, thresholds, beh, cell_cohort, l2_normalize(sums.astype(np.float32)),
                   rows // 2 if split else rows, np.array(cohort_beh), temperature, scores, split,
                   (rows % 2 == 0) if split else None, share_top)

    def to_dict(self) -> dict[str, Any]:
        d = {"intent": self.intent.to_dict(), "thresholds": self.thresholds.tolist(),
             "behaviour": np.round(self.behaviour, 6).tolist(), "cell_cohort": self.cell_cohort.tolist(),
             "cohort_tier": self.cohort_tier.tolist(), "cohort_behaviour": self.cohort_behaviour.tolist(),
             "tier_labels": tier_labels(self.n_tiers), "temperature": self.temperature,
             "split_recent": self.split_recent, "recent_share_top_tier": self.recent_share_top}
        if self.cohort_recent is not None:
            d["cohort_recent"] = self.cohort_recent.tolist()
            d["recent_labels"] = recent_labels(self.intent.recent_days, self.intent.goal_name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], centroids: np.ndarray) -> IntentTiers:
        return cls(IntentConfig(**d["intent"]), np.asarray(d["thresholds"], dtype=np.float64),
                   l2_normalize(np.asarray(d["behaviour"], dtype=np.float32)),
                   np.asarray(d["cell_cohort"], dtype=np.int64), np.asarray(centroids, dtype=np.float32),
                   np.asarray(d["cohort_tier"], dtype=np.int64), np.asarray(d["cohort_behaviour"], dtype=np.int64),
                   float(d.get("temperature", 0.05)), None, bool(d.get("split_recent", False)),
                   np.asarray(d["cohort_recent"], dtype=bool) if "cohort_recent" in d else None,
                   d.get("recent_share_top_tier"))


def _cell_rows(tier: np.ndarray, recent: np.ndarray | None) -> np.ndarray:
    """Row of cell_cohort per user: the tier, or with the recent split (`recent` given) 2 * tier,
    +1 for users who did not reach the goal recently."""
    if recent is None:
        return tier
    return 2 * tier + (~recent).astype(np.int64)


def recent_labels(days: float | None, goal_name: str | None = None) -> list[str]:
    d, what = (f"{days:g}" if days is not None else "?"), goal_name or "goal"
    return [f"{what} in the last {d} days", f"no {what} in the last {d} days"]


class TieredNamer:
    """Names goal-aware cohorts "<tier> · <name of its behaviour cluster>" with any base namer
    ("<tier>, <goal reached recently or not> · <name>" when the tiers are split that way).

    The base namer sees the behaviour clusters' own profiles (stored in the tiers metadata), so an
    LLM names k behaviours once, not k x tiers near-duplicates.
    """

    def __init__(self, base: Any, tiers_meta: dict[str, Any]) -> None:
        from embeddings.naming.profile_types import CohortProfile

        self.base = base
        self.labels = tiers_meta["tier_labels"]
        self.tier = tiers_meta["cohort_tier"]
        self.behaviour = tiers_meta["cohort_behaviour"]
        self.recent = tiers_meta.get("cohort_recent")
        self.recent_labels = tiers_meta.get("recent_labels", ["", ""])
        self.profiles = [CohortProfile.from_dict(p) for p in tiers_meta["behaviour_profiles"]]

    def name(self, profiles: list[Any]) -> list[Any]:
        from dataclasses import replace

        names = dict(zip([p.cohort_id for p in self.profiles], self.base.name(self.profiles), strict=True))
        out = []
        for p in profiles:
            b = names[self.behaviour[p.cohort_id]]
            label = self.labels[self.tier[p.cohort_id]]
            if self.recent is not None:
                label += ", " + self.recent_labels[0 if self.recent[p.cohort_id] else 1]
            out.append(replace(b, name=f"{label} · {b.name}"))
        return out
