"""The held-out generators' new users keep what tells their archetype apart."""

from __future__ import annotations

import polars as pl

from bench.heldout_synth import generate


def test_new_users_keep_their_archetypes_hours():
    """lunch_break and night_owl differ only in hour of day: a new user moved into the last 60 days
    must be moved by whole weeks, or their 1-3 events land at random hours and nothing can place them."""
    events, truth = generate(1500, seed=3)
    hours = (
        events.join(truth, on="user_id")
        .filter(pl.col("short_history") & pl.col("archetype").is_in(["lunch_break", "night_owl"]))
        .with_columns(h=pl.col("ts").dt.hour())
    )
    assert hours["user_id"].n_unique() >= 10
    lunch = hours.filter(pl.col("archetype") == "lunch_break")["h"]
    night = hours.filter(pl.col("archetype") == "night_owl")["h"]
    assert lunch.is_between(11, 14).all(), lunch.value_counts().to_dicts()
    assert (night.is_between(21, 23) | night.is_between(0, 3)).all(), night.value_counts().to_dicts()
