"""Users with 1-3 events placed by the short-history head, everyone else by the nearest centroid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.cohorts.cluster import assign_to_centroids
from embeddings.cohorts.cohort_set import Assigner, CohortSet
from embeddings.cohorts.coldstart import ShortHistoryHead
from embeddings.cohorts.confidence import ConfidenceModel
from embeddings.cohorts.index import l2_normalize
from embeddings.model.embed import read_embeddings
from seqcohort.report import archetype_agreement

LAYOUT = {"learned": 8, "index": 8, "weight": 0.2, "mean": 2.0, "std": 1.0}


def embed(direction: np.ndarray, n_events: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Rows laid out like the encoder's: a unit learned part, then the standardised log event count."""
    learned = l2_normalize(direction + noise * rng.standard_normal(direction.shape))
    freq = LAYOUT["weight"] * (np.log1p(n_events) - LAYOUT["mean"]) / LAYOUT["std"]
    return np.hstack([learned, freq[:, None]]).astype(np.float32)


def test_head_learns_windows_and_touches_only_short_rows() -> None:
    rng = np.random.default_rng(0)
    dirs = np.eye(8)[:3]
    y = rng.integers(0, 3, 900)
    X = embed(dirs[y], rng.integers(1, 4, 900), rng, noise=0.3)
    head = ShortHistoryHead.fit(X, y, LAYOUT)
    assert head is not None and head.info["window_accuracy"] > 0.95
    # new rows: short ones take the head's answer, long ones keep what they had
    yt = rng.integers(0, 3, 200)
    n = np.where(np.arange(200) % 2 == 0, 2, 40)
    Xt = embed(dirs[yt], n, rng, noise=0.3)
    np.testing.assert_array_equal(head.short_rows(Xt), n <= 3)
    keep_pos, keep_conf = np.full(200, 7), np.full(200, 0.5, np.float32)
    pos, conf = head.apply(Xt, keep_pos, keep_conf)
    short = n <= 3
    assert (pos[~short] == 7).all() and (conf[~short] == 0.5).all()
    assert (pos[short] == yt[short]).mean() > 0.95 and ((conf[short] > 0.34) & (conf[short] <= 1)).all()
    assert (keep_pos == 7).all()  # the inputs are not written to
    # a saved head answers the same, one row alone as in a batch
    again = ShortHistoryHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert again is not None
    np.testing.assert_array_equal(again.apply(Xt, keep_pos, keep_conf)[0], pos)
    one = [again.apply(Xt[i : i + 1], keep_pos[:1], keep_conf[:1])[0][0] for i in range(20)]
    np.testing.assert_array_equal(one, pos[:20])


def test_two_cohorts_and_too_little_to_learn() -> None:
    rng = np.random.default_rng(1)
    dirs = np.eye(8)[[2, 5]]
    y = rng.integers(0, 2, 300)
    X = embed(dirs[y], np.ones(300), rng, noise=0.2)
    head = ShortHistoryHead.fit(X, np.array([3, 6])[y], LAYOUT)  # positions need not be 0..k-1
    assert head is not None and head.coef.shape == (2, 9)
    assert (head.predict(X)[0] == np.array([3, 6])[y]).mean() > 0.95
    assert ShortHistoryHead.fit(X[:50], y[:50], LAYOUT) is None  # too few windows
    assert ShortHistoryHead.fit(X, np.zeros(300, np.int64), LAYOUT) is None  # one cohort: nothing to choose
    # the held-out test needs users on both sides; windows of one user cannot show the head helps
    nearest = np.zeros(300, np.int64)
    assert ShortHistoryHead.fit(X, np.array([3, 6])[y], LAYOUT, nearest=nearest, groups=np.full(300, "u1")) is None
    many = ShortHistoryHead.fit(X, np.array([3, 6])[y], LAYOUT, nearest=nearest, groups=np.arange(300) // 3)
    assert many is not None and many.info["held_out_accuracy"] > 0.9 > many.info["held_out_nearest"]


def test_published_cohorts_place_short_users_with_the_head(trained_workspace: Path, synth_small) -> None:
    cur = trained_workspace / "current"
    cs = CohortSet.load(cur / "cohorts.json")
    model = ConfidenceModel.from_dict(cs.confidence_model)
    assert model is not None and model.short_head is not None
    assert model.short_head.info["n_windows"] > 1000
    uids, X = read_embeddings(cur / "embeddings.parquet")
    counts = synth_small.events.group_by("user_id").len()
    n = dict(zip(counts["user_id"].cast(pl.String).to_list(), counts["len"].to_list(), strict=True))
    short = np.array([n[u] <= 3 for u in uids.astype(str)])
    assert 20 < short.sum() < len(short) // 2
    np.testing.assert_array_equal(model.short_head.short_rows(X), short)
    ids, _ = Assigner(cs).assign_arrays(X)
    nearest = cs.ids[(l2_normalize(X) @ cs.centroids.T).argmax(1)]
    np.testing.assert_array_equal(ids[~short], nearest[~short])
    np.testing.assert_array_equal(ids[short], cs.ids[model.short_head.predict(X[short])[0]])
    stored = pl.read_parquet(cur / "assignments.parquet")
    np.testing.assert_array_equal(ids, stored["cohort_id"].to_numpy())  # what `run` wrote
    # kept because on held-out users' windows it beat the nearest centroid; short users land in
    # their archetype's cohort far above chance
    assert model.short_head.info["held_out_accuracy"] > model.short_head.info["held_out_nearest"]
    truth = synth_small.truth.with_columns(pl.col("user_id").cast(pl.String))
    agree = archetype_agreement(stored, truth)
    assert agree["short_accuracy"] > 3 * agree["short_chance"], agree


def test_without_the_head_short_rows_keep_the_nearest_centroid() -> None:
    rng = np.random.default_rng(2)
    C = l2_normalize(np.hstack([np.eye(8)[:3], np.zeros((3, 1))]))
    X = embed(np.eye(8)[rng.integers(0, 3, 50)], np.ones(50), rng, noise=0.5)
    model = ConfidenceModel((0.0, 0.0, 0.0, 0.0), 0.0, LAYOUT, {})
    pos, conf = assign_to_centroids(X, C, 0.05, model)
    np.testing.assert_array_equal(pos, (l2_normalize(X) @ C.T).argmax(1))
    assert np.allclose(conf, 0.5)


def test_no_head_where_short_histories_are_most_of_the_log() -> None:
    """CDNOW-like logs (2-3 purchases each) fit cohorts on everyone: short users keep their own centroid."""
    from datetime import datetime, timedelta

    from embeddings.cohorts.calibrate import history_lengths, short_users_assigned, user_counts
    from embeddings.config import load_config

    as_of = datetime(2025, 6, 1)

    def lengths(n_long: int, n_short: int) -> np.ndarray:
        rows = [(f"u{u}", as_of - timedelta(days=i + 1), "purchase")
                for u in range(n_long + n_short) for i in range(10 if u < n_long else 2)]
        ev = pl.DataFrame(rows, schema=["user_id", "ts", "event"], orient="row")
        n = history_lengths(user_counts(ev, as_of), np.array([f"u{u}" for u in range(n_long + n_short)] + ["nobody"]))
        assert n[-1] == 0 and n[0] == 10 and n[-2] == 2
        return n

    cfg = load_config()
    assert short_users_assigned(cfg, lengths(300, 100))
    assert not short_users_assigned(cfg, lengths(100, 300))
    pinned = load_config(overrides=["cluster.min_events_to_fit=2"])  # short users in the fit by choice
    assert not short_users_assigned(pinned, lengths(300, 100))


def test_the_head_does_not_follow_the_logs_row_order(trained_workspace: Path, synth_small) -> None:
    """Fitted twice on the same events in another row order: the same classifier (group_by order once leaked in)."""
    from conftest import TINY_SETS

    from embeddings.cohorts.calibrate import calibrate_confidence
    from embeddings.cohorts.cluster import SphericalKMeans
    from embeddings.config import load_config
    from embeddings.model.embed import UserEncoder

    cur = trained_workspace / "current"
    enc = UserEncoder.load(cur / "encoder")
    uids, X = read_embeddings(cur / "embeddings.parquet")
    cs = CohortSet.load(cur / "cohorts.json")
    cfg = load_config(overrides=TINY_SETS)
    ev = synth_small.events.with_columns(pl.col("user_id").cast(pl.String))
    as_of = ev["ts"].max()
    heads = []
    for seed in (0, 1):
        km = SphericalKMeans(k=len(cs.cohorts))
        km.centroids_ = cs.centroids
        calibrate_confidence(cfg, enc, ev.sample(fraction=1.0, shuffle=True, seed=seed), as_of, uids, X, km)
        assert km.confidence_model is not None
        heads.append(km.confidence_model.short_head)
    assert heads[0] is not None and heads[1] is not None
    np.testing.assert_array_equal(heads[0].coef, heads[1].coef)
