"""Fitting what turns an embedding into a cohort and a confidence, after the cohorts are fitted.

`calibrate_confidence` cuts fitted users' histories into windows and learns from them the
confidence model (embeddings.cohorts.confidence) and the short-history head (embeddings.cohorts.coldstart).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl

from embeddings.cohorts.cluster import SphericalKMeans, fit_rows
from embeddings.cohorts.coldstart import MAX_EVENTS as MAX_SHORT_EVENTS
from embeddings.cohorts.coldstart import ShortHistoryHead
from embeddings.cohorts.confidence import ConfidenceModel, crop_histories
from embeddings.cohorts.index import l2_normalize
from embeddings.cohorts.layout import frequency_layout
from embeddings.cohorts.tiers import IntentTiers
from embeddings.config import Config
from embeddings.model.embed import UserEncoder
from embeddings.model.intent import split_embedding

log = logging.getLogger("seqcohort")


def calibrate_confidence(cfg: Config, enc: UserEncoder, events: pl.DataFrame, as_of: datetime,
                         user_ids: np.ndarray, X: np.ndarray, km: SphericalKMeans | IntentTiers,
                         counts: pl.DataFrame | None = None) -> None:
    """Fit `km.confidence_model` on windows of the fitted users' histories (see embeddings.cohorts.confidence),
    and its short-history head on 1-3-event windows (see embeddings.cohorts.coldstart). `counts`: the
    events' `user_counts`, when the caller has them already."""
    n = cfg.cluster.calibration_crops
    if n <= 0:
        return
    base = getattr(enc.bundle.encoder, "base", enc.bundle.encoder)
    layout = frequency_layout(base.cfg)
    row = {u: i for i, u in enumerate(np.asarray(user_ids).astype(str))}
    if isinstance(km, IntentTiers):  # the confidence is the behaviour cluster's
        C, behaviour = km.behaviour, (lambda Z: split_embedding(Z, km.intent)[0])
    else:
        assert km.centroids_ is not None
        C, behaviour = km.centroids_, (lambda Z: Z)
    full = (l2_normalize(np.asarray(behaviour(X), dtype=np.float32)) @ C.T).argmax(1)  # each user's cohort position

    def windows(crops: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(behaviour embeddings of the windows, their whole history's cohort position, their user)."""
        data = enc.featurize(crops, as_of)
        users = data.user_ids.astype(str)
        return np.asarray(behaviour(enc.encode(data).vectors), dtype=np.float32), full[[row[u] for u in users]], users

    crops = crop_histories(events, as_of, n, seed=cfg.cluster.seed)
    if crops.is_empty():
        return
    Zc, own, _ = windows(crops)
    sims = l2_normalize(Zc) @ C.T
    agree = sims.argmax(1) == own
    km.confidence_model = ConfidenceModel.fit(sims, Zc, agree, layout)
    log.info("confidence calibrated on %d windows of 1-128 events of fitted users: %.0f%% in their user's cohort",
             len(agree), 100 * agree.mean())
    if cfg.cluster.short_history_windows > 0 and layout is not None:
        counts = user_counts(events, as_of) if counts is None else counts
        if short_users_assigned(cfg, history_lengths(counts, user_ids)):
            km.confidence_model.short_head = fit_short_head(cfg, events, as_of, counts, windows, C, layout)


def user_counts(events: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """user_id (string), n (events up to as_of), last (the last one's ts)."""
    return (events.lazy().filter(pl.col("ts") <= as_of).group_by("user_id")
            .agg(n=pl.len(), last=pl.col("ts").max()).with_columns(pl.col("user_id").cast(pl.String)).collect())


def history_lengths(counts: pl.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """Events of each of `user_ids` (0 where `counts` has none), from `user_counts`."""
    return (pl.DataFrame({"user_id": np.asarray(user_ids).astype(str)})
            .join(counts, on="user_id", how="left", maintain_order="left")["n"].fill_null(0).to_numpy())


def short_users_assigned(cfg: Config, lengths: np.ndarray) -> bool:
    """Whether the cohorts were fitted without the 1-3-event users (who are then only assigned).

    Where most users have short histories (CDNOW: 2-3 purchases each) they are part of the fit,
    their cohorts are their own, and windows of the few long histories would not know them.
    """
    if cfg.cluster.min_events_to_fit <= MAX_SHORT_EVENTS:
        return False
    if fit_rows(cfg.cluster, lengths) is None:
        log.info("short-history head not used: most users have fewer than %d events, so the cohorts were "
                 "fitted on everyone and each user takes their nearest centroid", cfg.cluster.min_events_to_fit)
        return False
    return True


def fit_short_head(cfg: Config, events: pl.DataFrame, as_of: datetime, counts: pl.DataFrame,
                   windows: Callable[[pl.DataFrame], tuple[np.ndarray, np.ndarray, np.ndarray]],
                   C: np.ndarray, layout: dict[str, float]) -> ShortHistoryHead | None:
    """The classifier for 1-3-event users, on windows of fitted users shaped like the log's own short users."""
    c = cfg.cluster
    short = counts.filter(pl.col("n") <= MAX_SHORT_EVENTS)
    # sorted: the draws from it must not follow group_by's row order, which varies run to run;
    # None (under 20 short users): windows end like live sessions, in the week before as_of
    ago = short.select((pl.lit(as_of, dtype=pl.Datetime("us")) - pl.col("last")).dt.total_seconds()).to_series()
    recency = np.sort(ago.to_numpy()) if short.height >= 20 else None
    # half the windows end where their own user's history ends: one visit long ago is a dormant
    # user, not a new one (on our generator lapsed users' short histories are old; on the two
    # held-out ones every short history is recent, which the other half covers)
    parts = [windows(crop_histories(events, as_of, c.short_history_windows // 3, seed=c.seed + 1 + r,
                                    lengths=(1, 2, 3), min_events=c.min_events_to_fit, first_share=0.5,
                                    recency_s=recency, own_share=0.5))
             for r in range(3)]  # three windows of most users: many more windows than users with 4+ events
    Z = np.vstack([p[0] for p in parts])
    nearest = (l2_normalize(Z) @ C.T).argmax(1)
    head = ShortHistoryHead.fit(Z, np.concatenate([p[1] for p in parts]), layout, nearest=nearest,
                                groups=np.concatenate([p[2] for p in parts]),
                                recency="log's short users" if recency is not None else "live (last week)")
    if head is None:
        log.info("short-history head not used: on held-out 1-3-event windows it did no better than the nearest "
                 "centroid (or there was too little to learn); users with 1-3 events take the nearest centroid")
    else:
        log.info("short-history head fitted on %d windows of 1-3 events: on held-out users' windows %.0f%% in "
                 "their user's cohort (nearest centroid %.0f%%)", head.info["n_windows"],
                 100 * head.info["held_out_accuracy"], 100 * head.info["held_out_nearest"])
    return head
