"""Assignment confidence calibrated on windows of the fitted users' histories."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.cohorts.cohort_set import Assigner, CohortSet
from embeddings.cohorts.confidence import crop_histories
from embeddings.cohorts.layout import frequency_layout, log_events
from embeddings.model.embed import UserEncoder, read_embeddings


def test_windows_are_contiguous_parts_of_a_history_ending_in_the_week_before_as_of() -> None:
    start, as_of = datetime(2025, 1, 1), datetime(2025, 6, 1)
    rows = [(f"u{u}", start + timedelta(days=3 * i + u, hours=u % 24), f"e{i}") for u in range(30) for i in range(1 + u)]
    ev = pl.DataFrame(rows, schema=["user_id", "ts", "event"], orient="row")
    crops = crop_histories(ev, as_of, n_users=100, seed=1)
    assert "u0" not in set(crops["user_id"])  # one event: no part shorter than the history
    orig = dict(zip(zip(ev["user_id"], ev["event"], strict=True), ev["ts"], strict=True))
    for u, g in crops.group_by("user_id"):
        full = ev.filter(pl.col("user_id") == u[0])
        assert 1 <= g.height < full.height and as_of - timedelta(days=7) < g["ts"].max() <= as_of
        idx = [int(e[1:]) for e in g["event"]]
        assert idx == list(range(idx[0], idx[0] + len(idx)))  # consecutive events, in order
        # moved by whole weeks: gaps, hour of day and weekday are the user's own
        moved = [t - orig[(u[0], e)] for t, e in zip(g["ts"], g["event"], strict=True)]
        assert len(set(moved)) == 1 and moved[0] % timedelta(days=7) == timedelta(0)
    again = crop_histories(ev, as_of, n_users=100, seed=1)
    assert again.equals(crops)


def test_first_windows_and_recency_like_the_logs_short_users_or_their_own() -> None:
    start, as_of = datetime(2025, 1, 1), datetime(2025, 6, 1)
    rows = [(f"u{u}", start + timedelta(days=2 * i, hours=u % 24), f"e{i}") for u in range(60) for i in range(10 + u)]
    ev = pl.DataFrame(rows, schema=["user_id", "ts", "event"], orient="row")
    crops = crop_histories(ev, as_of, n_users=60, seed=3, lengths=(1, 2, 3), min_events=4, first_share=1.0,
                           recency_s=np.array([30 * 86400.0]))
    per_user = crops.group_by("user_id").agg(pl.col("event"), last=pl.col("ts").max())
    assert per_user.height == 60
    for events in per_user["event"].to_list():
        assert 1 <= len(events) <= 3 and events == [f"e{i}" for i in range(len(events))]  # the first events
    # ends 30 days before as_of, give or take the week the shift is rounded to
    days = np.array([(as_of - t).total_seconds() / 86400 for t in per_user["last"]])
    assert ((days >= 30) & (days < 37)).all(), days
    # own_share=1: each window ends in the week before its own user's last event
    own = crop_histories(ev, as_of, n_users=60, seed=4, lengths=(1, 2, 3), min_events=4, own_share=1.0,
                         recency_s=np.array([30 * 86400.0]))
    last = dict(zip(ev["user_id"], ev["ts"], strict=True))  # rows are in time order: the last one wins
    for (u,), g in own.group_by("user_id"):
        assert last[u] - timedelta(days=7) < g["ts"].max() <= last[u]


def test_event_count_is_read_off_the_frequency_coordinate(trained_workspace: Path, synth_small) -> None:
    cur = trained_workspace / "current"
    enc = UserEncoder.load(cur / "encoder")
    uids, X = read_embeddings(cur / "embeddings.parquet")
    counts = synth_small.events.group_by("user_id").len()
    n = dict(zip(counts["user_id"].cast(pl.String).to_list(), counts["len"].to_list(), strict=True))
    truth = np.log1p([n[u] for u in uids.astype(str)])
    layout = frequency_layout(enc.bundle.encoder.cfg)
    assert layout is not None
    np.testing.assert_allclose(log_events(X, layout), truth, atol=1e-3)


def test_short_histories_get_low_confidence_long_ones_high(trained_workspace: Path, synth_small, tmp_path) -> None:
    cur = trained_workspace / "current"
    cs = CohortSet.load(cur / "cohorts.json")
    assert cs.confidence_model and cs.confidence_model["info"]["n_crops"] > 100
    a = pl.read_parquet(cur / "assignments.parquet")
    counts = synth_small.events.group_by("user_id").len().with_columns(pl.col("user_id").cast(pl.String))
    a = a.join(counts, on="user_id")
    short = a.filter(pl.col("len") <= 3)["confidence"].median()
    long = a.filter(pl.col("len") >= 50)["confidence"].median()
    assert short is not None and long is not None and short < 0.7 < long, (short, long)
    # the same users assigned afresh, one alone or in a batch: the same confidences as stored
    enc = UserEncoder.load(cur / "encoder")
    uids, X = read_embeddings(cur / "embeddings.parquet")
    ids, conf = Assigner(cs).assign_arrays(X)
    stored = dict(zip(a["user_id"], a["confidence"], strict=True))
    np.testing.assert_allclose(conf, [stored[u] for u in uids.astype(str)], rtol=1e-5)
    one = np.array([Assigner(cs).assign_arrays(X[i : i + 1])[1][0] for i in range(10)])
    np.testing.assert_allclose(one, conf[:10], rtol=1e-6)
    assert enc is not None
    # a cohorts.json from before the calibration keeps its softmax confidence
    d = json.loads((cur / "cohorts.json").read_text())
    d.pop("confidence_model")
    old = tmp_path / "cohorts.json"
    old.write_text(json.dumps(d))
    _, conf_old = Assigner(CohortSet.load(old)).assign_arrays(X)
    assert float(np.median(conf_old)) > 0.9 and not np.allclose(conf_old, conf)
