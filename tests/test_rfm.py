"""Tests for embeddings.evaluation.rfm: features, quintile scores and the 11 named segments."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from embeddings.errors import NotFittedError, SchemaError
from embeddings.evaluation.rfm import (
    MARKETER_ORDER,
    SEGMENT_TABLE,
    RFMSegmenter,
    rfm_features,
    segment_for,
)

AS_OF = datetime(2024, 3, 1)


def _events(rows: list[tuple[str, datetime, str, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "event": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
        },
        schema={
            "user_id": pl.String,
            "ts": pl.Datetime("us"),
            "event": pl.String,
            "amount": pl.Float64,
        },
    )


@pytest.fixture
def events() -> pl.DataFrame:
    d = datetime
    return _events(
        [
            # a: two purchases on two days (one basket of two lines at the same instant), a view.
            ("a", d(2024, 1, 1, 10), "purchase", 10.0),
            ("a", d(2024, 1, 1, 10), "purchase", 5.0),
            ("a", d(2024, 2, 20, 9), "purchase", 20.0),
            ("a", d(2024, 2, 25, 12), "view", None),
            # after as_of: must be ignored entirely
            ("a", d(2024, 3, 5), "purchase", 1000.0),
            # b: only views, one null amount
            ("b", d(2024, 2, 1), "view", None),
            ("b", d(2024, 2, 1, 12), "view", None),
            # c: only after as_of -> absent
            ("c", d(2024, 3, 2), "purchase", 50.0),
            # d: purchase exactly at as_of counts (at or before)
            ("d", d(2024, 3, 1), "purchase", 7.5),
        ]
    )


def test_rfm_features_values(events: pl.DataFrame) -> None:
    f = rfm_features(events, AS_OF, monetary_event="purchase")
    assert f.columns == [
        "user_id",
        "recency_days",
        "frequency",
        "monetary",
        "avg_amount",
        "tenure_days",
        "n_events",
        "n_active_days",
    ]
    assert f["user_id"].to_list() == ["a", "b", "d"]
    rows = {r["user_id"]: r for r in f.iter_rows(named=True)}
    a = rows["a"]
    assert a["recency_days"] == pytest.approx(4.5)  # Feb 25 12:00 -> Mar 1 00:00
    assert a["frequency"] == 2  # the two-line basket counts once
    assert a["monetary"] == pytest.approx(35.0)  # the 1000 after as_of is ignored
    assert a["avg_amount"] == pytest.approx(17.5)
    assert a["tenure_days"] == pytest.approx(59 + 14 / 24)  # Jan 1 10:00 -> Mar 1 (leap year)
    assert a["n_events"] == 4
    assert a["n_active_days"] == 3
    b = rows["b"]
    assert (b["frequency"], b["monetary"], b["avg_amount"]) == (0, 0.0, 0.0)
    assert b["n_events"] == 2 and b["n_active_days"] == 1
    assert rows["d"]["recency_days"] == 0.0
    assert rows["d"]["monetary"] == pytest.approx(7.5)


def test_rfm_features_all_events_are_transactions(events: pl.DataFrame) -> None:
    f = rfm_features(events, AS_OF, log=True)
    a = f.filter(pl.col("user_id") == "a").row(0, named=True)
    assert a["frequency"] == 3  # distinct timestamps of all events up to as_of
    assert a["monetary"] == pytest.approx(35.0)
    assert a["log_frequency"] == pytest.approx(np.log1p(3))
    assert a["log_monetary"] == pytest.approx(np.log1p(35.0))


def test_rfm_features_ignores_events_after_as_of(events: pl.DataFrame) -> None:
    before = rfm_features(events.filter(pl.col("ts") <= AS_OF), AS_OF, monetary_event="purchase")
    late = _events([("a", datetime(2024, 3, 1, 0, 0, 1), "purchase", 99.0)])
    after = rfm_features(pl.concat([events, late]), AS_OF, monetary_event="purchase")
    assert after.equals(before)


def test_rfm_features_aware_as_of_and_schema_errors(events: pl.DataFrame) -> None:
    aware = datetime(2024, 3, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # same instant as AS_OF
    assert rfm_features(events, aware).equals(rfm_features(events, AS_OF))
    with pytest.raises(SchemaError, match="missing column"):
        rfm_features(events.drop("ts"), AS_OF)
    with pytest.raises(SchemaError, match="Datetime"):
        rfm_features(events.with_columns(pl.col("ts").cast(pl.String)), AS_OF)


def _hand_features() -> tuple[pl.DataFrame, dict[str, tuple[int, int, int]]]:
    """Ten users whose R/F/M scores are known: two users per quintile on each axis."""
    # user: (R, F, M) scores to plant
    planted = {
        "u0": (5, 5, 5),
        "u1": (5, 1, 1),
        "u2": (4, 1, 2),
        "u3": (4, 4, 4),
        "u4": (3, 3, 3),
        "u5": (3, 2, 2),
        "u6": (2, 5, 5),
        "u7": (2, 3, 4),
        "u8": (1, 2, 1),
        "u9": (1, 4, 3),
    }
    ids = list(planted)
    return pl.DataFrame(
        {
            "user_id": ids,
            # distinct values whose ranks follow the planted scores; recency: lower is better
            "recency_days": [float((6 - planted[u][0]) * 10 + i) for i, u in enumerate(ids)],
            "frequency": [planted[u][1] * 10 + i for i, u in enumerate(ids)],
            "monetary": [planted[u][2] * 100.0 + i for i, u in enumerate(ids)],
        }
    ), planted


def test_segmenter_known_scores_and_segments() -> None:
    feats, planted = _hand_features()
    out = RFMSegmenter().fit(feats).predict(feats)
    assert out.columns == ["user_id", "r", "f", "m", "segment"]
    assert out.schema["r"] == pl.Int8
    got = {r["user_id"]: (r["r"], r["f"], r["m"]) for r in out.iter_rows(named=True)}
    assert got == planted
    expected = {
        "u0": "Champions",
        "u1": "New Customers",
        "u2": "Promising",
        "u3": "Loyal Customers",
        "u4": "Need Attention",
        "u5": "About To Sleep",
        "u6": "Can't Lose Them",
        "u7": "At Risk",
        "u8": "Lost",
        "u9": "At Risk",
    }
    assert dict(zip(out["user_id"], out["segment"], strict=True)) == expected


def test_segment_table_covers_the_11_segments() -> None:
    assert len(MARKETER_ORDER) == 11
    assert MARKETER_ORDER[:4] == [
        "Champions",
        "Loyal Customers",
        "Potential Loyalist",
        "New Customers",
    ]
    assert MARKETER_ORDER[-1] == "Lost"
    assert {s for row in SEGMENT_TABLE for s in row} == set(MARKETER_ORDER)
    assert segment_for(5, 2) == "Potential Loyalist"
    assert segment_for(2, 2) == "Hibernating"
    assert segment_for(1, 1) == "Lost"
    assert segment_for(5, 4) == "Champions"


def _tied_population(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    freq = np.where(rng.random(n) < 0.6, 1, rng.integers(2, 6, n))  # 60% bought exactly once
    return pl.DataFrame(
        {
            "user_id": [f"user{i}" for i in range(n)],
            "recency_days": rng.integers(0, 30, n).astype(float),  # heavy ties too
            "frequency": freq,
            "monetary": np.round(rng.gamma(2.0, 20.0, n), 0) * freq,
        }
    )


def test_quintiles_balanced_under_heavy_ties() -> None:
    feats = _tied_population(1000, seed=1)
    out = RFMSegmenter().fit_predict(feats)
    for col in ("r", "f", "m"):
        counts = out.group_by(col).len().sort(col)
        assert counts[col].to_list() == [1, 2, 3, 4, 5]
        assert counts["len"].to_list() == [200] * 5, col
    # a tie never splits against the value order: higher frequency never gets a lower F score
    joined = feats.join(out, on="user_id")
    by_value = (
        joined.group_by("frequency")
        .agg(lo=pl.col("f").min(), hi=pl.col("f").max())
        .sort("frequency")
    )
    assert (by_value["lo"].to_numpy()[1:] >= by_value["hi"].to_numpy()[:-1]).all()


def test_predict_uses_fitted_edges_and_is_order_independent() -> None:
    feats = _tied_population(500, seed=2)
    seg = RFMSegmenter().fit(feats)
    full = seg.predict(feats)
    shuffled = seg.predict(feats.sample(fraction=1.0, shuffle=True, seed=3)).sort("user_id")
    assert shuffled.equals(full.sort("user_id"))
    # a subset scored alone keeps the scores it had in the fitted population
    subset = feats.head(7)
    assert seg.predict(subset).equals(full.head(7))
    # a refit on different users would change edges; new extreme users use the fitted ones
    new = pl.DataFrame(
        {
            "user_id": ["new_best", "new_worst"],
            "recency_days": [0.0, 1000.0],
            "frequency": [1000, 0],
            "monetary": [1e9, 0.0],
        }
    )
    out = seg.predict(new)
    assert out.row(0) == ("new_best", 5, 5, 5, "Champions")
    assert out.row(1) == ("new_worst", 1, 1, 1, "Lost")


def test_segmenter_state_round_trip_and_errors() -> None:
    feats, _ = _hand_features()
    with pytest.raises(NotFittedError, match="fit"):
        RFMSegmenter().predict(feats)
    seg = RFMSegmenter().fit(feats)
    assert seg.n_users_ == 10
    restored = RFMSegmenter.from_dict(json.loads(json.dumps(seg.to_dict())))
    assert restored.predict(feats).equals(seg.predict(feats))
    with pytest.raises(SchemaError, match="at least 5"):
        RFMSegmenter().fit(feats.head(3))
    with pytest.raises(SchemaError, match="monetary"):
        seg.predict(feats.drop("monetary"))


def test_end_to_end_from_events(events: pl.DataFrame) -> None:
    more = _events(
        [(f"x{i}", AS_OF - timedelta(days=i), "purchase", float(i)) for i in range(1, 8)]
    )
    feats = rfm_features(pl.concat([events, more]), AS_OF, monetary_event="purchase")
    out = RFMSegmenter().fit_predict(feats)
    assert out.height == feats.height == 10
    assert set(out["segment"].to_list()) <= set(MARKETER_ORDER)
