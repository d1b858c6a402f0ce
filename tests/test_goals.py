"""Tests for embeddings.evaluation.goals: goal parsing, leak-free labels, goal rate by segment."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import polars as pl
import pytest

from embeddings.errors import ConfigError
from embeddings.evaluation.goals import (
    Goal,
    events_before,
    goal_rate_by_segment,
    latest_cutoff,
    make_labels,
    parse_goal,
    parse_horizon,
)
from embeddings.evaluation.rfm import rfm_features

D = datetime
H = timedelta(days=10)
PURCHASE = Goal("purchase", H)


def _events(rows: list[tuple[str, datetime, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "event": [r[2] for r in rows],
            "amount": [1.0 if r[2] == "purchase" else None for r in rows],
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
    return _events(
        [
            ("u1", D(2024, 1, 1), "view"),
            ("u1", D(2024, 1, 5), "purchase"),
            ("u1", D(2024, 1, 25), "purchase"),
            ("u2", D(2024, 1, 3), "view"),
            ("u2", D(2024, 1, 30), "view"),
            ("u2", D(2024, 2, 10), "view"),  # last event of the log: latest cut-off is Jan 31
            ("u3", D(2024, 1, 15), "purchase"),
            ("u4", D(2024, 1, 2), "view"),
        ]
    )


def _as_dict(labels: pl.DataFrame) -> dict[tuple[str, datetime], int]:
    return {(r["user_id"], r["cutoff"]): r["label"] for r in labels.iter_rows(named=True)}


@pytest.mark.parametrize(
    ("text", "days"),
    [("90d", 90), ("12w", 84), ("3m", 90), ("1y", 365), ("48h", 2), (" 7D ", 7)],
)
def test_parse_horizon(text: str, days: float) -> None:
    assert parse_horizon(text) == timedelta(days=days)


@pytest.mark.parametrize("bad", ["90", "0d", "-3d", "3x", "abc", "1.5d", ""])
def test_parse_horizon_rejects_bad_text(bad: str) -> None:
    with pytest.raises(ConfigError, match="horizon"):
        parse_horizon(bad)


def test_parse_goal() -> None:
    assert parse_goal("purchase", "30d") == Goal("purchase", timedelta(days=30), "event")
    assert parse_goal("churn", "3m") == Goal(None, timedelta(days=90), "churn")
    assert parse_goal("none", "12w") == Goal(None, timedelta(days=84), "churn")
    assert parse_goal("churn:purchase", "30d") == Goal("purchase", timedelta(days=30), "churn")
    assert parse_goal("purchase", "30d").describe() == "purchase within 30 days"
    assert parse_goal("churn", "30d").describe() == "churn (no event) within 30 days"
    with pytest.raises(ConfigError):
        parse_goal("", "30d")
    with pytest.raises(ConfigError, match="horizon"):
        parse_goal("purchase", "soon")
    with pytest.raises(ConfigError):
        Goal(None, H, "event")


def test_labels_on_hand_made_data(events: pl.DataFrame) -> None:
    labels = make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 20), D(2024, 1, 4)])
    assert labels.schema == pl.Schema(
        {"user_id": pl.String, "cutoff": pl.Datetime("us"), "label": pl.Int8}
    )
    assert labels["cutoff"].is_sorted()
    assert _as_dict(labels) == {
        # Jan 4: u3 has no history yet, so no row; u1 buys on Jan 5 (inside (Jan 4, Jan 14])
        ("u1", D(2024, 1, 4)): 1,
        ("u2", D(2024, 1, 4)): 0,
        ("u4", D(2024, 1, 4)): 0,
        # Jan 20: u1 buys Jan 25; u3's purchase on Jan 15 is history, not label
        ("u1", D(2024, 1, 20)): 1,
        ("u2", D(2024, 1, 20)): 0,
        ("u3", D(2024, 1, 20)): 0,
        ("u4", D(2024, 1, 20)): 0,
    }


def test_window_boundaries(events: pl.DataFrame) -> None:
    # An event exactly at the cut-off is history; one exactly at cutoff + horizon is in the window.
    at_cut = make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 5)])
    assert _as_dict(at_cut)[("u1", D(2024, 1, 5))] == 0
    at_end = make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 15)])
    assert _as_dict(at_end)[("u1", D(2024, 1, 15))] == 1  # Jan 25 == Jan 15 + 10 days


def test_churn_goals(events: pl.DataFrame) -> None:
    churn = make_labels(events, parse_goal("churn", "10d"), cutoffs=[D(2024, 1, 20)])
    assert _as_dict(churn) == {
        ("u1", D(2024, 1, 20)): 0,  # active Jan 25
        ("u2", D(2024, 1, 20)): 0,  # active Jan 30 (window end is inclusive)
        ("u3", D(2024, 1, 20)): 1,
        ("u4", D(2024, 1, 20)): 1,
    }
    no_purchase = make_labels(events, parse_goal("churn:purchase", "10d"), cutoffs=[D(2024, 1, 20)])
    assert _as_dict(no_purchase)[("u2", D(2024, 1, 20))] == 1  # viewed, but did not buy
    assert _as_dict(no_purchase)[("u1", D(2024, 1, 20))] == 0


def test_default_cutoffs_and_no_peeking_limits(events: pl.DataFrame) -> None:
    assert latest_cutoff(events, PURCHASE) == D(2024, 1, 31)
    labels = make_labels(events, PURCHASE, n_cutoffs=3)
    assert labels["cutoff"].unique().sort().to_list() == [
        D(2024, 1, 11),
        D(2024, 1, 21),
        D(2024, 1, 31),
    ]
    strided = make_labels(events, PURCHASE, n_cutoffs=2, stride=timedelta(days=1))
    assert strided["cutoff"].unique().sort().to_list() == [D(2024, 1, 30), D(2024, 1, 31)]
    earlier = make_labels(events, PURCHASE, n_cutoffs=1, last_cutoff=D(2024, 1, 20))
    assert earlier["cutoff"].unique().to_list() == [D(2024, 1, 20)]
    with pytest.raises(ConfigError, match="latest allowed"):
        make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 31, 0, 0, 1)])
    with pytest.raises(ConfigError, match="too late"):
        make_labels(events, PURCHASE, last_cutoff=D(2024, 2, 5))
    with pytest.raises(ConfigError, match="latest allowed"):
        make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 10)], last_cutoff=D(2024, 1, 5))


def test_cutoffs_before_the_data_are_dropped(
    events: pl.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="embeddings.evaluation.goals"):
        labels = make_labels(events, PURCHASE, n_cutoffs=10)
    assert labels["cutoff"].min() >= D(2024, 1, 1)
    assert "before the first event" in caplog.text
    with pytest.raises(ConfigError, match="No usable cut-off"):
        make_labels(events, PURCHASE, cutoffs=[D(2023, 1, 1)])


def test_planted_future_events_are_invisible_to_earlier_cutoffs(events: pl.DataFrame) -> None:
    cutoffs = [D(2024, 1, 4), D(2024, 1, 20)]
    latest = latest_cutoff(events, PURCHASE)
    planted = _events(
        [
            # after the last earlier cut-off's window: Jan 20 + 10 days + 1 second
            ("u4", cutoffs[-1] + H + timedelta(seconds=1), "purchase"),
            # just after the latest allowed cut-off
            ("u4", latest + timedelta(microseconds=1), "purchase"),
            ("u3", latest + timedelta(microseconds=1), "purchase"),
            # a user who only exists in the future
            ("ghost", latest + timedelta(microseconds=1), "purchase"),
        ]
    )
    poisoned = pl.concat([events, planted])
    assert latest_cutoff(poisoned, PURCHASE) == latest  # the log still ends on Feb 10

    clean_labels = make_labels(events, PURCHASE, cutoffs=cutoffs)
    assert make_labels(poisoned, PURCHASE, cutoffs=cutoffs).equals(clean_labels)
    for cutoff in cutoffs:
        clean = rfm_features(events_before(events, cutoff), cutoff, monetary_event="purchase")
        dirty_history = events_before(poisoned, cutoff)
        assert "ghost" not in dirty_history["user_id"].to_list()
        assert dirty_history["ts"].max() <= cutoff
        assert rfm_features(dirty_history, cutoff, monetary_event="purchase").equals(clean)
        # rfm_features alone does not peek either
        assert rfm_features(poisoned, cutoff, monetary_event="purchase").equals(clean)

    # the planted events do count at the latest cut-off, as they should
    last = _as_dict(make_labels(poisoned, PURCHASE, cutoffs=[latest]))
    assert last[("u4", latest)] == 1 and last[("u3", latest)] == 1
    assert ("ghost", latest) not in last


def test_goal_rate_by_segment(events: pl.DataFrame) -> None:
    labels = make_labels(events, PURCHASE, cutoffs=[D(2024, 1, 4), D(2024, 1, 20)])
    segments = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u9"],
            "segment": ["Lost", "Champions", "Lost", "custom", "Promising"],
        }
    )
    with pytest.raises(ConfigError, match="several cut-offs"):
        goal_rate_by_segment(segments, labels)
    out = goal_rate_by_segment(segments, labels, cutoff=D(2024, 1, 20))
    assert out.columns == ["segment", "n", "n_positive", "rate"]
    assert out["segment"].to_list() == ["Champions", "Promising", "Lost", "custom"]
    rows = {r["segment"]: r for r in out.iter_rows(named=True)}
    assert (rows["Lost"]["n"], rows["Lost"]["n_positive"], rows["Lost"]["rate"]) == (2, 1, 0.5)
    assert rows["Champions"]["rate"] == 0.0
    assert rows["Promising"]["n"] == 0 and rows["Promising"]["rate"] is None

    # per-cut-off segments join on (user_id, cutoff)
    per_cut = pl.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "cutoff": [D(2024, 1, 4), D(2024, 1, 20)],
            "segment": ["New Customers", "Champions"],
        },
        schema_overrides={"cutoff": pl.Datetime("us")},
    )
    both = goal_rate_by_segment(per_cut, labels)
    assert dict(zip(both["segment"], both["rate"], strict=True)) == {
        "Champions": 1.0,
        "New Customers": 1.0,
    }


def test_goal_aliases_count_as_the_goal_everywhere(events: pl.DataFrame) -> None:
    # u2 "buys with a coupon" on Jan 30: a distinct event type the marketer counts as a purchase.
    ev = events.with_columns(
        pl.when((pl.col("user_id") == "u2") & (pl.col("ts") == D(2024, 1, 30)))
        .then(pl.lit("purchase_coupon")).otherwise(pl.col("event")).alias("event"))
    plain = parse_goal("purchase", "10d")
    either = parse_goal("purchase", "10d", ["purchase_coupon", "purchase"])
    assert either.aliases == ("purchase_coupon",)  # the goal's own type is not repeated
    assert either.event_types == ["purchase", "purchase_coupon"]
    assert either.describe() == "purchase or purchase_coupon within 10 days"
    cut = [D(2024, 1, 20)]
    assert _as_dict(make_labels(ev, plain, cutoffs=cut))[("u2", D(2024, 1, 20))] == 0
    assert _as_dict(make_labels(ev, either, cutoffs=cut))[("u2", D(2024, 1, 20))] == 1
    lost = parse_goal("churn:purchase", "10d", ["purchase_coupon"])
    assert _as_dict(make_labels(ev, lost, cutoffs=cut))[("u2", D(2024, 1, 20))] == 0
    # The RFM baseline's transactions take the aliases too.
    feats = rfm_features(ev, D(2024, 2, 1), monetary_event=either.event_types)
    assert feats.filter(pl.col("user_id") == "u2")["frequency"].item() == 1
    assert rfm_features(ev, D(2024, 2, 1), monetary_event="purchase").filter(
        pl.col("user_id") == "u2")["frequency"].item() == 0
    with pytest.raises(ConfigError, match="aliases"):
        parse_goal("churn", "10d", ["purchase_coupon"])


def test_variants_of_the_goal_event_that_do_not_count_are_named(events: pl.DataFrame, caplog) -> None:
    from embeddings.evaluation.goals import warn_unlisted_variants

    ev = pl.concat([events, _events([("u4", D(2024, 1, 3), "purchase_coupon"), ("u4", D(2024, 1, 4), "re_purchase"),
                                     ("u4", D(2024, 1, 5), "purchases_page")])])
    with caplog.at_level(logging.WARNING, logger="embeddings.evaluation.goals"):
        assert warn_unlisted_variants(ev, parse_goal("purchase", "10d")) == ["purchase_coupon", "re_purchase"]
    assert "--goal-alias purchase_coupon --goal-alias re_purchase" in caplog.text
    caplog.clear()
    both = parse_goal("purchase", "10d", ["purchase_coupon", "re_purchase"])
    assert warn_unlisted_variants(ev, both) == [] and not caplog.text
    assert warn_unlisted_variants(ev, parse_goal("churn", "10d")) == []


def test_a_cancellation_after_the_cutoff_is_not_a_purchase(tmp_path) -> None:
    """Order log without an event column, read with the default config: the only line inside the
    horizon is a cancellation (negative quantity), so the user did not reach the purchase goal."""
    from embeddings.config import load_config
    from seqcohort.pipeline import load_events

    path = tmp_path / "orders.csv"
    path.write_text(
        "Customer ID,InvoiceDate,Quantity,Price\n"
        "1,2024-01-02 10:00,3,2.0\n"
        "1,2024-01-25 10:00,-3,2.0\n"  # cancels the January order, after the cut-off
        "2,2024-01-03 10:00,1,5.0\n"
        "2,2024-01-26 10:00,2,5.0\n"
        "3,2024-02-10 10:00,1,1.0\n"
    )
    maps = ["user_id=Customer ID", "ts=InvoiceDate", "amount=Quantity*Price"]
    cfg = load_config(overrides=["data.event_default=purchase"])
    events = load_events(path, cfg, maps)
    labels = _as_dict(make_labels(events, parse_goal("purchase", "10d"), cutoffs=[D(2024, 1, 20)]))
    assert labels[("1", D(2024, 1, 20))] == 0 and labels[("2", D(2024, 1, 20))] == 1
    # the RFM baseline does not count the cancellation as a transaction either
    f = rfm_features(events, D(2024, 2, 1), monetary_event="purchase").sort("user_id")
    assert f["frequency"].to_list()[:2] == [1, 2]
    kept = load_events(path, load_config(overrides=["data.event_default=purchase", "data.return_event=null"]), maps)
    assert _as_dict(make_labels(kept, parse_goal("purchase", "10d"), cutoffs=[D(2024, 1, 20)]))[("1", D(2024, 1, 20))] == 1
