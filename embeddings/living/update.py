"""The steps of a refresh that need no training: re-embed changed users, move everyone else's recency,
reassign with a margin, and measure how far the population drifted from the cohorts."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.index import l2_normalize
from embeddings.cohorts.model import CohortModel
from embeddings.living.recency import recency_encoder, with_recency
from embeddings.model.embed import Embeddings, UserEncoder

log = logging.getLogger("seqcohort")


def updated_embeddings(previous: CohortModel, encoder: UserEncoder, events: pl.DataFrame, changed: set[str],
                       as_of: datetime) -> tuple[Embeddings, np.ndarray]:
    """Everyone's embedding at `as_of`: changed users re-embedded from their whole stored history, the
    others' recency moved analytically (the transformer is not run for them).

    Returns (embeddings sorted by user id, the rows of users whose embedding was only moved).
    """
    prev_ids = np.asarray(previous.user_ids_).astype(str)
    cfg = recency_encoder(encoder.bundle.encoder)
    if cfg is None:  # a layout whose time-dependent parts cannot be moved alone: embed everyone
        log.info("refresh: this encoder's embeddings cannot be moved in time alone; re-embedding every user")
        ids, X = encoder.encode(events, as_of=as_of)
        ids = np.asarray(ids).astype(str)
        return Embeddings(ids, X), np.flatnonzero(~np.isin(ids, list(changed)))
    sub = events.filter(pl.col("user_id").is_in(pl.Series(sorted(changed), dtype=pl.String).implode()))
    ch_ids, ch_X = encoder.encode(sub, as_of=as_of) if sub.height else (np.zeros(0, str), np.zeros((0, encoder.dim)))
    keep = ~np.isin(prev_ids, list(changed))
    rest_ids = prev_ids[keep]
    last = events.group_by("user_id").agg(pl.col("ts").max()).filter(
        pl.col("user_id").is_in(pl.Series(rest_ids, dtype=pl.String).implode()))
    last_ts = dict(zip(last["user_id"].to_list(), last["ts"].to_list(), strict=True))
    days = np.array([(as_of - last_ts[u]).total_seconds() / 86400.0 if u in last_ts else np.nan for u in rest_ids])
    rest_X = np.asarray(previous.embeddings_, dtype=np.float32)[keep]
    known = ~np.isnan(days)  # a stored user without stored events keeps the embedding as it was
    rest_X[known] = with_recency(cfg, rest_X[known], days[known])
    ids = np.concatenate([np.asarray(ch_ids).astype(str), rest_ids])
    X = np.concatenate([np.asarray(ch_X, dtype=np.float32).reshape(-1, rest_X.shape[1]), rest_X])
    order = np.argsort(ids, kind="stable")
    moved_only = np.zeros(len(ids), dtype=bool)
    moved_only[len(ch_ids):] = True
    return Embeddings(ids[order], np.ascontiguousarray(X[order])), np.flatnonzero(moved_only[order])


def reassign(previous: CohortModel, emb: Embeddings, moved_only: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(cohort ids, confidences) with the previous cohorts.

    Users with new events (and new users) take the assigner's answer. A user whose embedding was only
    moved in time keeps their cohort unless the move took them to another nearest centroid that is
    closer than their own cohort's by more than `margin` (cosine): recency has to really move them.
    """
    assigner = previous.assigner
    cids, conf = assigner.assign_arrays(emb.vectors)
    if not len(moved_only):
        return cids, conf
    prev = previous.assignments_
    assert prev is not None
    prev_map = dict(zip(prev["user_id"].to_list(), zip(prev["cohort_id"].to_list(), prev["confidence"].to_list(),
                                                       strict=True), strict=True))
    pos_of = {int(c): i for i, c in enumerate(assigner.ids)}
    C = assigner.centroids
    sims = l2_normalize(emb.vectors[moved_only]) @ C.T  # (m, k)
    row_of = {u: i for i, u in enumerate(np.asarray(previous.user_ids_).astype(str))}
    old_X = previous.embeddings_[[row_of[str(u)] for u in emb.user_ids[moved_only]]]
    old_nearest = assigner.assign_arrays(old_X)[0]
    cids, conf = cids.copy(), conf.copy()
    for j, row in enumerate(moved_only):
        before = prev_map.get(str(emb.user_ids[row]))
        if before is None:
            continue
        own = sims[j, pos_of[int(before[0])]] if int(before[0]) in pos_of else -np.inf
        crossed = cids[row] != old_nearest[j] and sims[j].max() - own > margin
        if not crossed:
            if cids[row] != before[0]:
                conf[row] = before[1]
            cids[row] = before[0]
    return cids, conf


def fit_quality(X: np.ndarray, centroids: np.ndarray) -> float:
    """Mean cosine similarity of users to their nearest centroid: how well the cohorts describe them."""
    if not len(X):
        return float("nan")
    return float((l2_normalize(X) @ l2_normalize(centroids).T).max(axis=1).mean())


def oov_share(encoder: UserEncoder, fresh: pl.DataFrame) -> float:
    """Share of new events whose event type, or non-null category, the encoder's vocabulary lacks."""
    vocabs = encoder.featurizer.vocabs_ or {}
    if not fresh.height:
        return 0.0
    unseen = pl.repeat(False, fresh.height, eager=True)
    for col in ("event", "category"):
        if col in vocabs and col in fresh.columns:
            s = fresh.get_column(col)
            unseen = unseen | (s.is_not_null() & ~s.is_in(pl.Series(vocabs[col], dtype=pl.String).implode()))
    return float(unseen.mean() or 0.0)


def event_mix_shift(before: pl.DataFrame, fresh: pl.DataFrame) -> float:
    """Total variation distance between the event-type mix of the stored and of the new events (0..1)."""
    if not before.height or not fresh.height:
        return 0.0
    a = before.get_column("event").value_counts(normalize=True, name="p")
    b = fresh.get_column("event").value_counts(normalize=True, name="q")
    j = a.join(b, on="event", how="full", coalesce=True).fill_null(0.0)
    return float(0.5 * (j["p"] - j["q"]).abs().sum())


def decide(cfg: Any, retrain: str, oov: float, fit_drop: float) -> dict[str, Any]:
    """Whether to retrain the encoder and refit the clusters, and which measured number said so."""
    r = cfg.refresh
    why: list[str] = []
    recommend = []
    if oov > 0 and oov >= r.retrain_oov:
        recommend.append(f"{oov:.1%} of new events have an event type or category the encoder never saw "
                         f"(>= refresh.retrain_oov {r.retrain_oov:.1%})")
    if fit_drop >= r.retrain_fit_drop:
        recommend.append(f"fit to the cohorts fell by {fit_drop:.1%} (>= refresh.retrain_fit_drop {r.retrain_fit_drop:.1%})")
    do_retrain = retrain == "always" or (retrain == "auto" and bool(recommend))
    if retrain == "always":
        why.append("--retrain always")
    elif do_retrain:
        why.extend(recommend)
    refit = do_retrain or fit_drop >= r.refit_fit_drop
    if refit and not do_retrain:
        why.append(f"fit to the cohorts fell by {fit_drop:.1%} (>= refresh.refit_fit_drop {r.refit_fit_drop:.1%})")
    return {"retrain": do_retrain, "refit": refit, "why": "; ".join(why) or "drift below every threshold",
            "retrain_recommended": bool(recommend), "retrain_why": "; ".join(recommend) or None}
