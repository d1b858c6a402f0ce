"""Cohort profiles: what each cohort does, relative to the whole population, plus diverse exemplars."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from embeddings.cohorts.index import l2_normalize
from embeddings.data.schema import sort_by_user_time
from embeddings.naming.profile_types import CohortProfile, Exemplar, ExemplarEvent, Share

SESSION_GAP = "30m"  # a new session starts after 30 minutes without events
PROFILE_USERS = 50_000  # users a profile's shares are read from (docs/decisions.md#profiles-from-a-sample-of-users)
DAYPARTS = {"night": range(0, 6), "morning": range(6, 12), "afternoon": range(12, 18), "evening": range(18, 24)}


def user_stats(events: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Per user: recency_days, frequency, monetary, engagement (active days), tenure_days."""
    return events.group_by("user_id").agg(
        recency_days=(pl.lit(as_of) - pl.col("ts").max()).dt.total_seconds() / 86400.0,
        frequency=pl.len().cast(pl.Float64),
        monetary=pl.col("amount").fill_nan(None).sum().fill_null(0.0),
        engagement=pl.col("ts").dt.date().n_unique().cast(pl.Float64),
        tenure_days=(pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds() / 86400.0,
    )


def _summary(stats: pl.DataFrame) -> dict[str, float]:
    return {
        "recency": float(stats["recency_days"].median() or 0.0),
        "frequency": float(stats["frequency"].median() or 0.0),
        "monetary": float(stats["monetary"].mean() or 0.0),
        "engagement": float(stats["engagement"].median() or 0.0),
        "tenure": float(stats["tenure_days"].median() or 0.0),
    }


def _ratio(a: float, b: float) -> float:
    if b <= 1e-9:
        return 1.0 if a <= 1e-9 else float("inf") if a > 0 else 1.0
    return round(a / b, 3)


def _shares(df: pl.DataFrame, col: str, pop: dict[str, float], top: int) -> list[Share]:
    s = df.get_column(col).drop_nulls()
    if len(s) == 0:
        return []
    vc = s.value_counts(sort=True, name="n").sort(["n", col], descending=[True, False]).head(top)
    total = len(s)
    return [
        Share(value=str(v), share=round(n / total, 4), lift=round((n / total) / max(pop.get(str(v), 1e-9), 1e-9), 3))
        for v, n in zip(vc[col].to_list(), vc["n"].to_list(), strict=True)
    ]


def _pop_shares(events: pl.DataFrame, col: str) -> dict[str, float]:
    s = events.get_column(col).drop_nulls()
    if len(s) == 0:
        return {}
    vc = s.value_counts(name="n")
    return {str(v): n / len(s) for v, n in zip(vc[col].to_list(), vc["n"].to_list(), strict=True)}


def _session_edges(events: pl.DataFrame) -> pl.DataFrame:
    """Adds `opener`/`closer` flags: first/last event of each session (30-minute gap rule)."""
    gap = pl.col("ts").diff().over("user_id")
    prev_gap_big = gap.is_null() | (gap > pl.duration(minutes=30))
    next_gap = pl.col("ts").shift(-1).over("user_id") - pl.col("ts")
    next_gap_big = next_gap.is_null() | (next_gap > pl.duration(minutes=30))
    return sort_by_user_time(events).with_columns(
        opener=prev_gap_big, closer=next_gap_big
    )


MIN_POSITION_SESSIONS = 3  # events a session needs before the place of an event in it means anything
MIN_POSITION_COUNT = 20  # occurrences of an event type before its mean place is reported


def _event_positions(ev: pl.DataFrame) -> pl.DataFrame:
    """Per event row with `opener` flags: `place` in its session, 0 = first .. 1 = last (null if short)."""
    session = pl.col("opener").cast(pl.Int32).cum_sum().over("user_id")
    ev = ev.with_columns(_session=session)
    n = pl.len().over("user_id", "_session")
    i = pl.int_range(pl.len()).over("user_id", "_session")
    place = pl.when(n >= MIN_POSITION_SESSIONS).then(i / (n - 1)).otherwise(None)
    return ev.with_columns(place=place).drop("_session")


def _mean_places(ev: pl.DataFrame) -> dict[str, tuple[float, int]]:
    """Event type -> (mean place in its session, occurrences) over sessions long enough to have one."""
    g = (ev.filter(pl.col("place").is_not_null()).group_by("event")
         .agg(pl.col("place").mean().alias("m"), pl.len().alias("n")))
    return {str(e): (float(m), int(k)) for e, m, k in g.iter_rows()}


def _diverse(X: np.ndarray, centroid: np.ndarray, n: int, pool: int = 64) -> list[int]:
    """Indices (into X) of n exemplars: nearest `pool` to the centroid, then farthest-point picks."""
    if len(X) == 0 or n == 0:
        return []
    sims = X @ centroid
    cand = np.argsort(-sims, kind="stable")[: max(pool, n)]
    chosen = [int(cand[0])]
    while len(chosen) < min(n, len(cand)):
        d = 1.0 - X[cand] @ X[chosen].T  # (pool, chosen) cosine distance
        nxt = int(cand[int(np.argmax(d.min(axis=1)))])
        if nxt in chosen:
            break
        chosen.append(nxt)
    return chosen


def _exemplar(events_by_user: pl.DataFrame, user_id: str, max_events: int) -> Exemplar:
    ev = events_by_user.filter(pl.col("user_id") == user_id)
    tail = ev.tail(max_events)
    out = []
    for r in tail.iter_rows(named=True):
        amt = r.get("amount")
        out.append(
            ExemplarEvent(
                ts=r["ts"].isoformat(),
                event=r["event"],
                item=r.get("item"),
                category=r.get("category"),
                amount=None if amt is None or amt != amt else round(float(amt), 2),
                text=r.get("text"),
            )
        )
    return Exemplar(user_id=user_id, n_events=ev.height, events=out)


def compute_profiles(
    events: pl.DataFrame,
    assignments: pl.DataFrame,
    as_of: datetime,
    *,
    user_ids: np.ndarray | None = None,
    X: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    n_exemplars: int = 4,
    exemplar_events: int = 12,
    top: int = 5,
    max_users: int | None = PROFILE_USERS,
) -> list[CohortProfile]:
    """One profile per cohort in `assignments` (user_id, cohort_id), sorted by cohort id.

    Sizes and shares count every user; above `max_users` users, what they do (shares, medians,
    exemplars) is read from a uniform sample of `max_users` of them, so memory stays bounded.
    """
    assignments = assignments.join(events.select(pl.col("user_id").unique()), on="user_id", how="semi")
    sizes = dict(assignments.group_by("cohort_id").len().iter_rows())
    n_all = assignments.height
    if max_users is not None and assignments.height > max_users:
        assignments = assignments.sample(max_users, seed=0)
    ev = _session_edges(events.join(assignments.select("user_id", "cohort_id"), on="user_id", how="inner",
                                    maintain_order="left"))  # a sorted log stays sorted: no copy to sort
    ev = _event_positions(ev)
    pop_places = _mean_places(ev)
    stats = user_stats(ev, as_of).join(assignments.select("user_id", "cohort_id"), on="user_id")
    pop = _summary(stats)
    items_col = "text" if ev.get_column("text").null_count() < ev.height else "item"
    pops = {c: _pop_shares(ev, c) for c in ("event", "category", items_col)}
    pop_open = _pop_shares(ev.filter(pl.col("opener")), "event")
    pop_close = _pop_shares(ev.filter(pl.col("closer")), "event")
    row_of = {u: i for i, u in enumerate(user_ids)} if user_ids is not None else {}
    Xn = l2_normalize(X) if X is not None else None
    profiles = []
    for cid in sorted(sizes):
        cev = ev.filter(pl.col("cohort_id") == cid)
        cst = stats.filter(pl.col("cohort_id") == cid)
        s = _summary(cst)
        hours = np.bincount(cev.get_column("ts").dt.hour().to_numpy(), minlength=24)[:24]
        hours = hours / max(hours.sum(), 1)
        wd = np.bincount(cev.get_column("ts").dt.weekday().to_numpy() - 1, minlength=7)[:7]
        wd = wd / max(wd.sum(), 1)
        daypart = max(DAYPARTS, key=lambda p: hours[list(DAYPARTS[p])].sum())
        exemplars: list[Exemplar] = []
        if Xn is not None and centroids is not None and n_exemplars:
            members = [u for u in cst.get_column("user_id").to_list() if u in row_of]
            rows = np.array([row_of[u] for u in members], dtype=np.int64)
            picks = _diverse(Xn[rows], centroids[cid], n_exemplars) if len(rows) else []
            exemplars = [_exemplar(cev, members[p], exemplar_events) for p in picks]
        profiles.append(
            CohortProfile(
                cohort_id=int(cid),
                size=sizes[cid],
                share=round(sizes[cid] / max(n_all, 1), 4),
                as_of=as_of.isoformat(),
                recency_days=round(s["recency"], 2),
                frequency=round(s["frequency"], 2),
                monetary=round(s["monetary"], 2),
                engagement=round(s["engagement"], 2),
                tenure_days=round(s["tenure"], 2),
                relative={k: _ratio(s[k], pop[k]) for k in s},
                top_events=_shares(cev, "event", pops["event"], top),
                top_categories=_shares(cev, "category", pops["category"], top),
                top_items=_shares(cev, items_col, pops[items_col], top),
                hour_hist=[round(float(h), 4) for h in hours],
                weekday_hist=[round(float(w), 4) for w in wd],
                daypart=daypart,
                exemplars=exemplars,
                extra={
                    "session_openers": [vars(x) for x in _shares(cev.filter(pl.col("opener")), "event", pop_open, 3)],
                    "session_closers": [vars(x) for x in _shares(cev.filter(pl.col("closer")), "event", pop_close, 3)],
                    "population": {k: round(v, 3) for k, v in pop.items()},
                    # where in a session each event type falls (0 first .. 1 last), this cohort vs all
                    "event_place": {
                        e: {"cohort": round(m, 3), "population": round(pop_places[e][0], 3), "n": k}
                        for e, (m, k) in sorted(_mean_places(cev).items()) if k >= MIN_POSITION_COUNT
                    },
                },
            )
        )
    return profiles
