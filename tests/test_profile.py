"""Cohort profiles: the statistics the namers and marketers read."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from embeddings.cohorts.profile import MIN_POSITION_COUNT, compute_profiles


def _sessions(user: str, order: list[str], n: int, start: datetime) -> list[dict]:
    """`n` sessions of `order`, a minute between events and a day between sessions."""
    rows = []
    for s in range(n):
        t0 = start + timedelta(days=s)
        rows += [{"user_id": user, "ts": t0 + timedelta(minutes=i), "event": e, "item": None, "category": "sports",
                  "amount": 10.0 if e == "purchase" else None, "text": None} for i, e in enumerate(order)]
    return rows


def test_event_place_says_where_in_a_session_each_cohort_buys():
    t0 = datetime(2026, 1, 1)
    rows = []
    for u in range(6):  # cohort 0 buys last, cohort 1 buys first; 5 sessions each
        rows += _sessions(f"a{u}", ["search", "view", "purchase"], 5, t0)
        rows += _sessions(f"b{u}", ["purchase", "view", "search"], 5, t0)
    rows += [{"user_id": "c0", "ts": t0, "event": "purchase", "item": None, "category": "sports", "amount": 1.0,
              "text": None}]  # a one-event session has no place
    ev = pl.DataFrame(rows, schema_overrides={"item": pl.String, "text": pl.String, "amount": pl.Float64})
    users = sorted(ev["user_id"].unique().to_list())
    a = pl.DataFrame({"user_id": users, "cohort_id": [0 if u[0] in "ac" else 1 for u in users]})
    last, first = compute_profiles(ev, a, t0 + timedelta(days=10), n_exemplars=0)
    assert 30 >= MIN_POSITION_COUNT
    assert last.extra["event_place"]["purchase"] == {"cohort": 1.0, "population": 0.5, "n": 30}
    assert first.extra["event_place"]["purchase"]["cohort"] == 0.0
    assert first.extra["event_place"]["view"]["cohort"] == pytest.approx(0.5)
