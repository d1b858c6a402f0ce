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


def test_profiles_of_a_large_log_read_a_sample_but_count_everyone(synth_small):
    """Above `max_users` users the shares come from a sample: sizes and shares stay exact, every
    cohort keeps a profile (even one the sample misses), and what they do is close to the full read."""
    ev, truth = synth_small.events, synth_small.truth
    names = sorted(truth["archetype"].unique().to_list())
    a = truth.select("user_id", cohort_id=pl.col("archetype").replace_strict({n: i for i, n in enumerate(names)}))
    tiny = a.head(1).with_columns(cohort_id=pl.lit(len(names), dtype=a.schema["cohort_id"]))  # a cohort of one user
    a = pl.concat([a.slice(1), tiny])
    as_of = synth_small.as_of
    full = compute_profiles(ev, a, as_of, n_exemplars=0)
    part = compute_profiles(ev, a, as_of, n_exemplars=0, max_users=300)
    assert [p.cohort_id for p in part] == [p.cohort_id for p in full] == list(range(len(names) + 1))
    assert [(p.size, p.share) for p in part] == [(p.size, p.share) for p in full]
    for f, p in zip(full[:-1], part[:-1], strict=True):
        fs = {s.value: s.share for s in f.top_events}
        for s in p.top_events[:2]:
            assert abs(s.share - fs.get(s.value, 0.0)) < 0.1
