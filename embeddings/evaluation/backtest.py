"""Backtest: run a cohort pipeline on the events up to a cut-off, then score it against what happened.

The pipeline is anything that turns the pre-cut-off events into a `Snapshot` (embeddings, one or
more segmentations, propensity scores). `run_backtest` then measures, for a goal and a horizon:

- linear probe: 5-fold ROC AUC of a logistic regression (penalty, L2 or L1, and strength chosen
  by inner CV) on the embeddings, on the RFM features, and on both, predicting the goal in
  (cutoff, cutoff + horizon];
- targeting: every segmentation (the manual RFM segments always included) ranks its segments by
  their goal rate over the last horizon *before* the cut-off (labels at cutoff - horizon, built
  from the pre-cut-off data only) and takes the top `budget` share of all users; precision, recall
  and lift with bootstrap 95% CIs, and the relative precision gain over RFM at the same budget;
- calibration of the propensity scores: Brier score, reliability table, AUC.

Nothing here trains a model, and nothing imports Lightning: the caller injects the pipeline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from embeddings.errors import ConfigError, SchemaError
from embeddings.evaluation.experiments import bootstrap_ci
from embeddings.evaluation.goals import (
    Goal,
    events_before,
    goal_rate_by_segment,
    latest_cutoff,
    make_labels,
)
from embeddings.evaluation.rfm import MARKETER_ORDER, RFMSegmenter, rfm_features, to_naive_utc

log = logging.getLogger(__name__)

__all__ = [
    "BacktestReport",
    "Snapshot",
    "TargetingRow",
    "calibration",
    "probe_auc",
    "rank_by_segments",
    "run_backtest",
    "select_top",
]

RFM = "rfm_segments"
PROPENSITY = "propensity_score"
ORACLE = "ceiling_rfm_lr_on_outcomes"
RFM_COLUMNS = ["log_recency_days", "log_frequency", "log_monetary", "avg_amount", "tenure_days",
               "n_events", "n_active_days"]


@dataclass
class Snapshot:
    """What a pipeline produced from the pre-cut-off events (rows follow `user_ids`).

    segmentations: method name -> segment label per user (e.g. "ai_behaviour", "goal_aware").
    embeddings: name -> (n_users, dim) array for the linear probe (e.g. "behaviour", "goal_aware").
    propensity: calibrated goal probability per user, or None.
    tie_orders: segmentation name -> its segments best first, used where past goal rates tie (the
        way RFM segments get the marketer's order): a goal-aware segmentation's own expected goal
        rates. Saturated past rates (every top cell at 1.0 where nearly everyone reaches the goal)
        are otherwise ordered at random (docs/decisions.md#backtest-ties-broken-by-expected-goal-rate).
    """

    user_ids: np.ndarray
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    segmentations: dict[str, np.ndarray] = field(default_factory=dict)
    propensity: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)  # anything to carry into the report
    tie_orders: dict[str, list[str]] = field(default_factory=dict)


Producer = Callable[[pl.DataFrame, datetime], Snapshot]


@dataclass
class TargetingRow:
    method: str
    n_selected: int
    precision: float
    precision_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]
    lift: float  # precision / base rate
    vs_rfm: float | None  # precision / RFM precision - 1 (relative gain at the same budget)
    vs_rfm_ci: tuple[float, float] | None
    n_segments: int | None = None


@dataclass
class BacktestReport:
    """Everything a backtest measured; render with to_table / to_markdown / to_dict."""

    goal: str
    cutoff: str
    horizon_days: float
    budget: float
    n_users: int
    n_positive: int
    base_rate: float
    probe: dict[str, dict[str, float]]  # feature set -> {"auc", "std"}
    targeting: list[TargetingRow]
    calibration: dict[str, Any] | None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _sections(self) -> list[tuple[str, list[str], list[list[str]]]]:
        probe_rows = [[k, f"{v['auc']:.4f}", f"±{v['std']:.4f}"] for k, v in self.probe.items()]
        t_rows = []
        for r in self.targeting:
            t_rows.append([
                r.method,
                "-" if r.n_segments is None else str(r.n_segments),
                f"{r.n_selected:,}",
                f"{r.precision:.4f} [{r.precision_ci[0]:.4f}, {r.precision_ci[1]:.4f}]",
                f"{r.recall:.4f} [{r.recall_ci[0]:.4f}, {r.recall_ci[1]:.4f}]",
                f"{r.lift:.3f}",
                "-" if r.vs_rfm is None else
                f"{r.vs_rfm:+.1%} [{r.vs_rfm_ci[0]:+.1%}, {r.vs_rfm_ci[1]:+.1%}]",  # type: ignore[index]
            ])
        out = [
            ("Linear probe (5-fold logistic regression, ROC AUC)", ["features", "AUC", "fold std"], probe_rows),
            (f"Targeting at {self.budget:.0%} budget (95% bootstrap CI)",
             ["method", "segments", "selected", "precision", "recall", "lift vs base", "precision vs RFM"],
             t_rows),
        ]
        if self.calibration is not None:
            c = self.calibration
            out.append(("Propensity calibration", ["metric", "value"], [
                ["AUC", f"{c['auc']:.4f}"], ["Brier", f"{c['brier']:.4f}"],
                ["Brier (base rate only)", f"{c['brier_base']:.4f}"], ["ECE", f"{c['ece']:.4f}"],
                ["mean predicted", f"{c['mean_predicted']:.4f}"],
            ]))
            out.append(("Reliability", ["bin", "n", "mean predicted", "observed"], [
                [f"[{b['lo']:.2f}, {b['hi']:.2f})", f"{b['n']:,}", f"{b['mean_predicted']:.4f}",
                 f"{b['observed']:.4f}"] for b in c["reliability"] if b["n"]
            ]))
        return out

    def _preamble(self) -> str:
        return (f"goal: {self.goal}; cut-off {self.cutoff}; {self.n_users:,} users with history, "
                f"{self.n_positive:,} converted after the cut-off (base rate {self.base_rate:.4f})")

    def to_table(self) -> str:
        lines = [self._preamble()]
        for title, header, rows in self._sections():
            widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            lines += ["", title, fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
            lines += [fmt.format(*r).rstrip() for r in rows]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = ["# Backtest report", "", self._preamble()]
        for title, header, rows in self._sections():
            lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- metrics


PROBE_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))  # L2 strengths the probe chooses from
# L1 strengths: C above 1 keeps nearly every weight (what the L2 grid already covers) and takes
# liblinear seconds per fit
PROBE_L1_CS = tuple(float(c) for c in np.logspace(-3, 0, 4))


def probe_auc(X: np.ndarray, y: np.ndarray, *, n_folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Stratified k-fold ROC AUC of a standardised logistic regression: {"auc", "std"}."""
    return probe_predictions(X, y, n_folds=n_folds, seed=seed)[0]


def _fit_probe(X: np.ndarray, y: np.ndarray, inner: int, seed: int) -> Any:
    """A standardised logistic regression whose penalty (L2 or L1) and strength have the best
    inner-CV ROC AUC on (X, y), refitted on all of it; C = 1, L2 where a class is too rare to CV."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if inner < 2:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(X, y)
    cv = StratifiedKFold(inner, shuffle=True, random_state=seed)
    best, best_score = None, -np.inf
    for cs, l1, solver, tol in ((PROBE_CS, 0.0, "lbfgs", 1e-4), (PROBE_L1_CS, 1.0, "liblinear", 1e-3)):
        m = make_pipeline(StandardScaler(), LogisticRegressionCV(
            Cs=list(cs), cv=cv, scoring="roc_auc", max_iter=2000, l1_ratios=(l1,), solver=solver, tol=tol,
            use_legacy_attributes=False)).fit(X, y)
        score = float(np.nanmax(np.asarray(m[-1].scores_).mean(axis=0)))  # (folds, l1_ratios, Cs)
        if score > best_score:  # ties keep L2
            best, best_score = m, score
    return best


def probe_predictions(X: np.ndarray, y: np.ndarray, *, n_folds: int = 5,
                      seed: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """probe_auc's {"auc", "std"} and its out-of-fold predicted probabilities (n,).

    In each outer fold the regression's penalty is chosen by an inner 3-fold CV on the training
    part only, the same way for every feature set: an L2 strength from PROBE_CS or an L1 strength
    from PROBE_L1_CS. A fixed strength favours the feature set with fewer columns (7 RFM features
    vs a 79-dimensional embedding) on small logs, and L2 alone still charges an embedding for
    every weak coordinate it fits, where L1 drops them: that measures the probe, not the features
    (docs/decisions.md#linear-probe-may-choose-an-l1-penalty).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    n_min = int(min(y.sum(), len(y) - y.sum()))
    if n_min < 2:
        return {"auc": float("nan"), "std": float("nan")}, np.full(len(y), float(y.mean()) if len(y) else 0.0)
    folds = StratifiedKFold(n_splits=min(n_folds, n_min), shuffle=True, random_state=seed)
    aucs = []
    oof = np.zeros(len(y))
    for tr, te in folds.split(X, y):
        inner = int(min(3, y[tr].sum(), len(tr) - y[tr].sum()))
        oof[te] = _fit_probe(X[tr], y[tr], inner, seed).predict_proba(X[te])[:, 1]
        aucs.append(roc_auc_score(y[te], oof[te]))
    return {"auc": float(np.mean(aucs)), "std": float(np.std(aucs))}, oof


def calibration(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Brier score, ECE, AUC and a reliability table of equal-width probability bins."""
    from sklearn.metrics import roc_auc_score

    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    table, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        mp = float(p[m].mean()) if n else float("nan")
        ob = float(y[m].mean()) if n else float("nan")
        if n:
            ece += n / len(p) * abs(mp - ob)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "mean_predicted": mp,
                      "observed": ob})
    base = float(y.mean())
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {"auc": auc, "brier": float(np.mean((p - y) ** 2)), "brier_base": float(np.mean((base - y) ** 2)),
            "ece": float(ece), "mean_predicted": float(p.mean()), "reliability": table}


def rank_by_segments(
    segments: np.ndarray,
    segment_rate: dict[str, float | None],
    *,
    tie_order: list[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """User order (indices, best first) from segment ranks: higher past rate first.

    Segments with equal rates follow `tie_order` (e.g. MARKETER_ORDER for RFM), then a fixed-seed
    random order; segments without a rate come last. Inside a segment users are in a fixed-seed
    random order, so a partially taken last segment is a random sample of it.
    """
    rng = np.random.default_rng(seed)
    names = sorted({str(s) for s in segments})
    shuffle = {s: i for i, s in enumerate(rng.permutation(names))}
    pos = {s: i for i, s in enumerate(tie_order or [])}

    def key(s: str) -> tuple[float, int, int]:
        r = segment_rate.get(s)
        r = -1.0 if r is None or (isinstance(r, float) and math.isnan(r)) else r
        return (-r, pos.get(s, len(pos)), shuffle[s])

    seg_rank = {s: i for i, s in enumerate(sorted(names, key=key))}
    user_rank = np.array([seg_rank[str(s)] for s in segments], dtype=np.int64)
    within = rng.permutation(len(segments))
    return np.lexsort((within, user_rank))


def rank_by_score(score: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """User order (best first) by descending score, ties in a fixed-seed random order."""
    within = np.random.default_rng(seed).permutation(len(score))
    return np.lexsort((within, -np.asarray(score, dtype=np.float64)))


def select_top(order: np.ndarray, n_users: int, budget: float) -> np.ndarray:
    """Boolean mask of the first ceil(budget * n_users) users of `order`."""
    k = int(math.ceil(budget * n_users))
    sel = np.zeros(n_users, dtype=bool)
    sel[order[:k]] = True
    return sel


def _precision(sel: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return (sel * y).sum(axis) / np.maximum(sel.sum(axis), 1)


def _recall(sel: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return (sel * y).sum(axis) / np.maximum(y.sum(axis), 1)


def _gain(sel: np.ndarray, ref: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    pr = _precision(ref, y, axis)
    return _precision(sel, y, axis) / np.where(pr > 0, pr, np.nan) - 1.0


def _targeting_row(
    method: str, sel: np.ndarray, ref: np.ndarray | None, y: np.ndarray, n_boot: int, seed: int,
    n_segments: int | None,
) -> TargetingRow:
    s, yy = sel.astype(np.float64), y.astype(np.float64)
    prec, rec = float(_precision(s, yy)), float(_recall(s, yy))
    base = float(yy.mean())
    pci = bootstrap_ci(_precision, s, yy, n_boot=n_boot, seed=seed, paired=True)
    rci = bootstrap_ci(_recall, s, yy, n_boot=n_boot, seed=seed, paired=True)
    vs, vci = None, None
    if ref is not None:
        r = ref.astype(np.float64)
        vs = float(_gain(s, r, yy))
        vci = bootstrap_ci(_gain, s, r, yy, n_boot=n_boot, seed=seed, paired=True)
    return TargetingRow(method, int(sel.sum()), prec, pci, rec, rci, prec / base if base else float("nan"),
                        vs, vci, n_segments)


# ----------------------------------------------------------------------------- driver


def _window_labels(events: pl.DataFrame, goal: Goal, cutoff: datetime) -> pl.DataFrame:
    """make_labels at one cut-off on a log that ends at cutoff + horizon (its last event may be earlier).

    make_labels rejects such a cut-off because it cannot know that the log is complete up to
    cutoff + horizon; here the caller does (the log is everything up to the backtest cut-off).
    """
    target = goal.target()
    hits = events.filter((pl.col("ts") > cutoff) & (pl.col("ts") <= cutoff + goal.horizon) & target)
    hit = pl.col("user_id").is_in(hits["user_id"].unique().implode())
    return (
        events_before(events, cutoff).select("user_id").unique()
        .with_columns(cutoff=pl.lit(cutoff, dtype=pl.Datetime("us")),
                      label=(hit if goal.kind == "event" else ~hit).cast(pl.Int8))
        .sort("user_id")
    )


def _past_rates(segments: np.ndarray, user_ids: np.ndarray, past_labels: pl.DataFrame) -> dict[str, float | None]:
    frame = pl.DataFrame({"user_id": user_ids.astype(str), "segment": segments.astype(str)})
    rates = goal_rate_by_segment(frame, past_labels)
    return dict(zip(rates["segment"].to_list(), rates["rate"].to_list(), strict=True))


def run_backtest(
    events: pl.DataFrame,
    cutoff: datetime,
    goal: Goal,
    producer: Producer | Snapshot,
    *,
    budget: float = 0.2,
    n_folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    rank_window: timedelta | None = None,
) -> BacktestReport:
    """Score a pipeline run on the events up to `cutoff` against the following `goal.horizon`.

    Args:
        events: the whole canonical log (the pipeline only ever sees events at or before cutoff).
        producer: a function (pre-cut-off events, cutoff) -> Snapshot, or a Snapshot already made.
        budget: the share of all users (with history at the cut-off) a campaign may target.
        rank_window: the window before the cut-off whose goal rate ranks the segments; default the
            horizon (shorten it when the log does not reach one horizon back from the cut-off).
    """
    if not 0 < budget <= 1:
        raise ConfigError(f"budget must be in (0, 1], got {budget}.")
    cutoff = to_naive_utc(cutoff)
    last = latest_cutoff(events, goal)
    if cutoff > last:
        raise ConfigError(
            f"cut-off {cutoff} leaves less than the {goal.horizon} horizon before the data ends "
            f"({last + goal.horizon}); use a cut-off at or before {last}."
        )
    hist = events_before(events, cutoff)
    if hist.is_empty():
        raise SchemaError(f"No events at or before the cut-off {cutoff}.")
    labels = make_labels(events, goal, cutoffs=[cutoff]).select("user_id", "label")
    past_goal = goal if rank_window is None else replace(goal, horizon=rank_window)
    past_cut = cutoff - past_goal.horizon
    if past_cut < hist["ts"].min():  # type: ignore[operator]
        raise ConfigError(
            f"The data starts at {hist['ts'].min()}: less than {past_goal.horizon} before the "
            f"cut-off {cutoff}, so segments cannot be ranked by their past goal rate; pass a shorter "
            "rank_window."
        )
    past_labels = _window_labels(hist, past_goal, past_cut)

    snap = producer if isinstance(producer, Snapshot) else producer(hist, cutoff)
    # The baseline's transactions are the goal's events (every alias too), when the history has any.
    monetary = goal.event_types if hist.select(goal.target().any()).item() else None
    feats = rfm_features(hist, cutoff, monetary_event=monetary, log=True)
    rfm_seg = RFMSegmenter().fit_predict(feats)

    # Everyone with history at the cut-off, in the order of the RFM features (sorted by user_id).
    users = feats.select("user_id").join(labels, on="user_id", how="left").with_columns(
        pl.col("label").fill_null(0))
    uid = users["user_id"].to_numpy().astype(str)
    y = users["label"].to_numpy().astype(np.int64)
    pos = {u: i for i, u in enumerate(snap.user_ids.astype(str))}
    missing = [u for u in uid if u not in pos]
    if missing:
        raise SchemaError(f"The pipeline's snapshot lacks {len(missing)} user(s) with history, e.g. {missing[:3]}.")
    idx = np.array([pos[u] for u in uid], dtype=np.int64)
    n = len(uid)
    log.info("backtest: %d users, %d positives (rate %.4f)", n, int(y.sum()), y.mean())

    X_rfm = feats.select(RFM_COLUMNS).to_numpy().astype(np.float64)
    rfm_probe, oracle = probe_predictions(X_rfm, y, n_folds=n_folds, seed=seed)
    probe: dict[str, dict[str, float]] = {"rfm_features": rfm_probe}
    for name, X in snap.embeddings.items():
        Xe = np.asarray(X, dtype=np.float64)[idx]
        probe[f"embeddings:{name}"] = probe_auc(Xe, y, n_folds=n_folds, seed=seed)
        probe[f"embeddings:{name}+rfm"] = probe_auc(np.hstack([Xe, X_rfm]), y, n_folds=n_folds, seed=seed)

    rfm_labels = rfm_seg["segment"].to_numpy().astype(str)
    ref = select_top(
        rank_by_segments(rfm_labels, _past_rates(rfm_labels, uid, past_labels), tie_order=MARKETER_ORDER,
                         seed=seed), n, budget)
    rows = [_targeting_row(RFM, ref, None, y, n_boot, seed, len(set(rfm_labels)))]
    for name, seg in snap.segmentations.items():
        s = np.asarray(seg).astype(str)[idx]
        sel = select_top(rank_by_segments(s, _past_rates(s, uid, past_labels), tie_order=snap.tie_orders.get(name),
                                          seed=seed), n, budget)
        rows.append(_targeting_row(name, sel, ref, y, n_boot, seed, len(set(s))))
    cal = None
    if snap.propensity is not None:
        p = np.asarray(snap.propensity, dtype=np.float64)[idx]
        sel = select_top(rank_by_score(p, seed=seed), n, budget)
        rows.append(_targeting_row(PROPENSITY, sel, ref, y, n_boot, seed, None))
        cal = calibration(p, y)
    # A ceiling, not a method: the RFM-feature regression fitted (out of fold) on the very outcomes scored.
    rows.append(_targeting_row(ORACLE, select_top(rank_by_score(oracle, seed=seed), n, budget), ref, y,
                               n_boot, seed, None))
    return BacktestReport(
        goal=goal.describe(), cutoff=cutoff.isoformat(), horizon_days=goal.horizon / timedelta(days=1),
        budget=budget, n_users=n, n_positive=int(y.sum()), base_rate=float(y.mean()), probe=probe,
        targeting=rows, calibration=cal,
        info={**snap.info, "rank_window_days": past_goal.horizon / timedelta(days=1)},
    )
