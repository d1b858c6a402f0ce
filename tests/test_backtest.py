"""Backtest library: ranking rules, selection at a budget, metrics, and a full run on a fixed Snapshot."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from embeddings.errors import ConfigError
from embeddings.evaluation.backtest import (
    PROBE_CS,
    RFM,
    Snapshot,
    calibration,
    probe_auc,
    rank_by_score,
    rank_by_segments,
    run_backtest,
    select_top,
)
from embeddings.evaluation.goals import parse_goal
from tests.conftest import make_events

CUTOFF = datetime(2025, 4, 1)


def test_rank_by_segments_orders_by_rate_then_marketer_order_then_seeded_random() -> None:
    seg = np.array(["Lost", "Champions", "At Risk", "Champions", "Lost", "X", "At Risk"])
    rates = {"Lost": 0.5, "Champions": 0.5, "At Risk": 0.9, "X": None}
    order = rank_by_segments(seg, rates, tie_order=["Champions", "At Risk", "Lost"], seed=1)
    ranked = [seg[i] for i in order]
    assert ranked == ["At Risk", "At Risk", "Champions", "Champions", "Lost", "Lost", "X"]
    assert np.array_equal(order, rank_by_segments(seg, rates, tie_order=["Champions", "At Risk", "Lost"], seed=1))
    # without a tie order, equal rates are ordered by a fixed-seed shuffle, the same every time
    a = rank_by_segments(seg, {"Lost": 0.5, "Champions": 0.5, "At Risk": 0.5, "X": 0.5}, seed=3)
    b = rank_by_segments(seg, {"Lost": 0.5, "Champions": 0.5, "At Risk": 0.5, "X": 0.5}, seed=3)
    assert np.array_equal(a, b)
    assert sorted(a.tolist()) == list(range(len(seg)))


def test_select_top_takes_ceil_of_budget_and_part_of_the_last_segment() -> None:
    seg = np.array(["a"] * 6 + ["b"] * 4)
    order = rank_by_segments(seg, {"a": 0.1, "b": 0.9}, seed=0)
    sel = select_top(order, len(seg), 0.5)
    assert sel.sum() == 5
    assert sel[6:].all() and sel[:6].sum() == 1  # all of b, then one random user of a
    assert select_top(order, 10, 0.21).sum() == 3
    assert np.array_equal(rank_by_score(np.array([0.1, 0.9, 0.5])), [1, 2, 0])


def test_calibration_and_probe_metrics() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=5000)
    y = (rng.uniform(size=5000) < p).astype(int)
    c = calibration(p, y)
    assert c["ece"] < 0.03 and c["brier"] < c["brier_base"]
    assert sum(b["n"] for b in c["reliability"]) == 5000
    assert c["auc"] == pytest.approx(5 / 6, abs=0.02)  # AUC of y ~ Bernoulli(p), p ~ U(0, 1)
    X = np.c_[y + rng.normal(0, 0.5, 5000), rng.normal(size=5000)]
    assert probe_auc(X, y)["auc"] > 0.8
    assert probe_auc(rng.normal(size=(5000, 2)), y)["auc"] == pytest.approx(0.5, abs=0.05)


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return make_events(300, seed=1)


def _oracle_snapshot(events: pl.DataFrame, cutoff: datetime, goal) -> tuple[Snapshot, dict[str, int]]:
    from embeddings.evaluation.goals import make_labels

    lab = make_labels(events, goal, cutoffs=[cutoff])
    y = dict(zip(lab["user_id"].to_list(), lab["label"].to_list(), strict=True))
    uids = np.array(sorted(y), dtype=object)
    yy = np.array([y[u] for u in uids], dtype=float)
    rng = np.random.default_rng(0)
    return Snapshot(
        user_ids=uids,
        embeddings={"oracle": np.c_[yy + rng.normal(0, 0.3, len(uids)), rng.normal(size=len(uids))]},
        segmentations={"oracle_cohorts": np.where(yy > 0, "buyers", "others")},
        propensity=np.clip(0.8 * yy + 0.1, 0, 1),
    ), y


def test_run_backtest_scores_an_oracle_above_rfm_and_renders(events: pl.DataFrame) -> None:
    goal = parse_goal("purchase", "30d")
    snap, y = _oracle_snapshot(events, CUTOFF, goal)
    rep = run_backtest(events, CUTOFF, goal, snap, n_boot=100)
    assert rep.n_users == len(y) and rep.n_positive == sum(y.values())
    assert rep.probe["embeddings:oracle"]["auc"] > 0.9
    assert set(rep.probe) == {"rfm_features", "embeddings:oracle", "embeddings:oracle+rfm"}
    rows = {r.method: r for r in rep.targeting}
    assert list(rows) == [RFM, "oracle_cohorts", "propensity_score", "ceiling_rfm_lr_on_outcomes"]
    budget_n = int(np.ceil(0.2 * rep.n_users))
    assert all(r.n_selected == budget_n for r in rows.values())
    assert rows["propensity_score"].precision == 1.0  # the budget is below the base rate
    assert rows[RFM].vs_rfm is None and rows["propensity_score"].vs_rfm > 0
    lo, hi = rows["propensity_score"].vs_rfm_ci
    assert lo <= rows["propensity_score"].vs_rfm <= hi
    assert rep.calibration is not None and rep.calibration["auc"] == 1.0
    json.dumps(rep.to_dict(), default=str)
    assert "precision vs RFM" in rep.to_table() and "| rfm_segments |" in rep.to_markdown()


def test_producer_only_sees_events_up_to_the_cutoff(events: pl.DataFrame) -> None:
    goal = parse_goal("purchase", "30d")
    seen: dict[str, object] = {}

    def producer(hist: pl.DataFrame, cutoff: datetime) -> Snapshot:
        seen["max_ts"], seen["cutoff"] = hist["ts"].max(), cutoff
        snap, _ = _oracle_snapshot(events, CUTOFF, goal)
        return snap

    run_backtest(events, CUTOFF, goal, producer, n_boot=20)
    assert seen["max_ts"] <= CUTOFF and seen["cutoff"] == CUTOFF


def test_run_backtest_rejects_cutoffs_without_a_full_horizon_or_history(events: pl.DataFrame) -> None:
    goal = parse_goal("purchase", "30d")
    late = events["ts"].max() - timedelta(days=10)
    with pytest.raises(ConfigError, match="horizon"):
        run_backtest(events, late, goal, Snapshot(np.zeros(0, dtype=object)))
    early = events["ts"].min() + timedelta(days=5)
    with pytest.raises(ConfigError, match="rank"):
        run_backtest(events, early, goal, Snapshot(np.zeros(0, dtype=object)))
    with pytest.raises(ConfigError, match="budget"):
        run_backtest(events, CUTOFF, goal, Snapshot(np.zeros(0, dtype=object)), budget=0)


def test_probe_chooses_its_regularisation_so_extra_columns_do_not_sink_a_small_sample() -> None:
    """One informative feature among 64 noise columns, 200 users: a fixed C=1 probe overfits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-1.5 * s))).astype(int)
    X = np.hstack([s[:, None], rng.normal(size=(200, 64))])
    alone = probe_auc(s[:, None], y)["auc"]
    fixed_c = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    fixed = roc_auc_score(y, cross_val_predict(fixed_c, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                               method="predict_proba")[:, 1])
    tuned = probe_auc(X, y)["auc"]
    assert tuned > fixed + 0.01, (tuned, fixed)  # margin: docs/decisions.md#linear-probe-may-choose-an-l1-penalty
    assert alone > tuned  # what the extra columns still cost


def test_probe_may_choose_l1_so_weak_coordinates_cost_an_embedding_little() -> None:
    """Three informative columns among 64 noise ones, 600 users: an L2-only probe fits every noise
    weight (0.70 vs 0.78 on the three alone); with L1 among its choices the probe drops them."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    S = rng.normal(size=(600, 3))
    y = (rng.random(600) < 1 / (1 + np.exp(-(S @ [1.0, 0.7, 0.5])))).astype(int)
    X = np.hstack([S, rng.normal(size=(600, 64))])
    l2 = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(PROBE_CS), cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="roc_auc", max_iter=2000,
        l1_ratios=(0.0,), use_legacy_attributes=False))
    l2_only = roc_auc_score(y, cross_val_predict(l2, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                                 method="predict_proba")[:, 1])
    alone, probe = probe_auc(S, y)["auc"], probe_auc(X, y)["auc"]
    # margins from the values these fixtures give (docs/decisions.md#linear-probe-may-choose-an-l1-penalty)
    assert probe > l2_only + 0.03, (probe, l2_only)
    assert probe > alone - 0.02, (probe, alone)


def test_tied_past_rates_follow_the_segmentations_own_tie_order(events: pl.DataFrame) -> None:
    """Two segments with the same past rate: the snapshot's tie order decides, like RFM's marketer order."""
    goal = parse_goal("purchase", "30d")
    snap, y = _oracle_snapshot(events, CUTOFF, goal)
    label = np.array([y[u] for u in snap.user_ids])
    seg = np.where(label > 0, "a", "b")  # "a": the users who will buy; past rates forced equal below
    snap.segmentations = {"tied": seg}
    flat = {"a": 0.5, "b": 0.5}
    import embeddings.evaluation.backtest as bt

    real = bt._past_rates
    try:
        bt._past_rates = lambda s, u, p: flat  # type: ignore[assignment]
        snap.tie_orders = {"tied": ["a", "b"]}
        good = {r.method: r for r in run_backtest(events, CUTOFF, goal, snap, n_boot=20).targeting}["tied"]
        snap.tie_orders = {"tied": ["b", "a"]}
        bad = {r.method: r for r in run_backtest(events, CUTOFF, goal, snap, n_boot=20).targeting}["tied"]
    finally:
        bt._past_rates = real
    assert good.precision == 1.0 and bad.precision < 0.5


def test_expected_rate_order_ranks_segments_by_mean_propensity() -> None:
    from seqcohort.evaluation import expected_rate_order

    seg = np.array([3, 3, 1, 1, 2, 2])
    p = np.array([0.9, 0.7, 0.2, 0.1, 0.5, 0.5])
    assert expected_rate_order(seg, p) == ["3", "2", "1"]
