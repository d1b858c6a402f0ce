"""Habit profile: exact shares on hand-made batches, a deterministic PCA, and an encoder that keeps it."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.config import load_config
from embeddings.features.habits import fit_habit_pca, habit_fields, habit_raw
from embeddings.model.bundle import load_bundle, save_bundle
from embeddings.model.embed import UserEncoder
from training.train import build_encoder, fit_featurizer

CARD = {"event": 6, "hour": 5}


def _batch(events: list[list[int]], hours: list[list[int]]) -> dict[str, torch.Tensor]:
    T = max(len(e) for e in events)
    pad = lambda rows: torch.tensor([r + [0] * (T - len(r)) for r in rows])  # noqa: E731
    return {"event": pad(events), "hour": pad(hours), "lengths": torch.tensor([len(e) for e in events])}


def test_habit_raw_is_weighted_square_root_shares_and_ignores_padding() -> None:
    b = _batch([[3, 3, 4, 3], [5]], [[1, 1, 1, 2], [4]])
    raw, seen = habit_raw(b, {"event": 3.0, "hour": 1.0}, CARD)
    assert seen.all()
    assert raw.shape == (2, 11)
    # user 0: events 3,3,4,3 -> shares 3/4, 1/4 at ids 3, 4; hours 1,1,1,2 -> 3/4, 1/4
    want = np.zeros(11)
    want[[3, 4]] = np.sqrt(3.0 * np.array([0.75, 0.25]) / 4.0)
    want[6 + 1], want[6 + 2] = math.sqrt(0.75 / 4.0), math.sqrt(0.25 / 4.0)
    np.testing.assert_allclose(raw[0].numpy(), want, atol=1e-6)
    np.testing.assert_allclose(raw.norm(dim=1).numpy(), [1.0, 1.0], atol=1e-6)
    assert raw[1, 0] == 0 and raw[1, 6] == 0, "padding id 0 never counts"
    padded, _ = habit_raw(_batch([[5], [3, 3, 4, 3, 4, 4]], [[4], [1] * 6]), {"event": 3.0, "hour": 1.0}, CARD)
    torch.testing.assert_close(padded[0], raw[1])


def test_event_order_shows_in_pairs_not_in_event_shares(synth_small) -> None:
    """browse -> buy and buy -> browse hold the same events; only the pair block tells them apart."""
    f = fit_featurizer(load_config(), synth_small.events)
    ev = pl.DataFrame({
        "user_id": ["a"] * 4 + ["b"] * 4,
        "ts": pl.datetime_range(pl.datetime(2025, 1, 1), pl.datetime(2025, 1, 1, 0, 7), "1m", eager=True),
        "event": ["view", "purchase", "view", "purchase", "purchase", "view", "purchase", "view"],
        "item": [None] * 8, "category": [None] * 8, "amount": [None] * 8,
    })
    data = f.transform(ev)
    batch = f.collate_users(data, np.arange(2), 16)
    card = f.cardinalities
    ev_raw, _ = habit_raw(batch, {"event": 1.0}, card)
    pair_raw, seen = habit_raw(batch, {"transition": 1.0}, card)
    torch.testing.assert_close(ev_raw[0], ev_raw[1])
    assert (pair_raw[0] - pair_raw[1]).norm() > 0.3
    # 3 pairs each (the first event has none): view>purchase x2 + purchase>view vs the reverse
    assert seen.all() and sorted((pair_raw[0] ** 2).numpy()[pair_raw[0].numpy() > 0].round(4)) == [0.3333, 0.6667]
    one, seen1 = habit_raw(f.collate_users(f.transform(ev.head(1)), np.arange(1), 16), {"transition": 1.0}, card)
    assert not seen1.any() and not one.any(), "a one-event history has no pairs: the block is unseen"


def test_fit_habit_pca_is_deterministic_and_leaves_constant_columns_out() -> None:
    rng = np.random.default_rng(0)
    n = 500
    t = rng.normal(size=(n, 1))
    raw = np.hstack([t @ np.array([[2.0, 1.0, 0.0]]) + 0.01 * rng.normal(size=(n, 3)), np.full((n, 2), 0.3)])
    seen = np.ones_like(raw, dtype=bool)
    mean, basis = fit_habit_pca(raw, seen, 4)
    mean2, basis2 = fit_habit_pca(raw.copy(), seen, 4)
    np.testing.assert_array_equal(basis, basis2)
    assert basis.shape == (5, 4) and mean.shape == (5,)
    np.testing.assert_allclose(basis[:, 0], np.array([2.0, 1.0, 0.0, 0, 0]) / math.sqrt(5), atol=1e-2)
    assert not basis[3:].any(), "constant columns get zero rows"
    assert not basis[:, 3:].any(), "only 3 columns vary: the 4th direction is zero"
    np.testing.assert_allclose(basis[:, :3].T @ basis[:, :3], np.eye(3), atol=1e-5)
    assert habit_fields({"event": 9, "hour": 25}, {"event": 1.0, "transition": 3.0, "hour": 0.0}) == {"event": 1.0}


def test_unseen_blocks_take_the_mean_and_add_no_variance() -> None:
    """A block seen as the same value by everyone who has it is constant, whoever lacks it."""
    raw = np.array([[1.0, 0.5], [1.0, 0.1], [0.0, 0.9], [0.0, 0.3]])
    seen = np.array([[True, True], [True, True], [False, True], [False, True]])
    mean, basis = fit_habit_pca(raw, seen, 2)
    np.testing.assert_allclose(mean, [1.0, 0.45], atol=1e-6)
    assert not basis[0].any() and abs(basis[1, 0]) == 1.0


def test_a_log_without_varying_habits_gets_no_profile(tiny_cfg) -> None:
    """CDNOW-like: one event type, no categories, dates only -> the profile is zero for everyone."""
    rng = np.random.default_rng(0)
    n_ev = rng.integers(1, 12, size=300)
    ev = pl.DataFrame({
        "user_id": np.repeat([f"u{i}" for i in range(300)], n_ev),
        "ts": [datetime(2024, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 500, size=int(n_ev.sum()))],
        "event": "purchase", "item": None, "category": None, "amount": rng.gamma(2.0, 20.0, size=int(n_ev.sum())),
    }).with_columns(pl.col("item").cast(pl.String), pl.col("category").cast(pl.String))
    f = fit_featurizer(tiny_cfg, ev)
    data = f.transform(ev)
    enc = build_encoder(tiny_cfg, f, data).eval()
    assert enc.cfg.n_profile > 0 and not enc.profile_basis.any()
    with torch.no_grad():
        batch = f.collate_users(data, np.arange(len(data)), tiny_cfg.model.max_len)
        q, X = enc.habits(batch), enc(batch)
    assert not q.any()
    assert not X[:, -enc.cfg.n_profile:].any(), "no profile: the embedding is the behaviour part alone"
    torch.testing.assert_close(X.norm(dim=1), torch.ones(len(X)))


def test_encoder_profile_separates_order_twins_and_survives_the_bundle(tmp_path, synth_small, tiny_cfg) -> None:
    """Untrained encoder, fitted profile: the habit coordinates alone tell order twins apart."""
    ev = synth_small.events
    f = fit_featurizer(tiny_cfg, ev)
    data = f.transform(ev)
    torch.manual_seed(0)
    enc = build_encoder(tiny_cfg, f, data).eval()
    assert enc.cfg.n_profile == tiny_cfg.model.profile_dim and enc.profile_basis.abs().sum() > 0
    b = save_bundle(tmp_path / "bundle", enc, f, data_fingerprint="x")
    X = UserEncoder(load_bundle(tmp_path / "bundle")).encode(data).vectors
    np.testing.assert_array_equal(X, UserEncoder(b).encode(data).vectors)
    assert X.shape[1] == tiny_cfg.model.dim + 4 + tiny_cfg.model.profile_dim  # + recency, frequency, monetary, visits
    Q = X[:, -enc.cfg.n_profile:]
    truth = pl.DataFrame({"user_id": data.user_ids.astype(str)}).join(
        synth_small.truth, on="user_id", how="left", maintain_order="left")
    arch = truth["archetype"].to_numpy()
    keep = (data.lengths >= 10) & np.isin(arch, ["researchers", "impulse_buyers"])
    y = arch[keep] == "researchers"
    assert 20 <= y.sum() <= keep.sum() - 20
    # nearest class mean, leave-one-out free: split in halves
    q = Q[keep]
    half = np.arange(len(y)) % 2 == 0
    mu1, mu0 = q[half & y].mean(0), q[half & ~y].mean(0)
    pred = ((q - mu1) ** 2).sum(1) < ((q - mu0) ** 2).sum(1)
    acc = (pred[~half] == y[~half]).mean()
    assert acc > 0.9, f"habit coordinates tell order twins apart only {acc:.2f} of the time"


def test_next_block_is_what_follows_each_event_within_sessions(synth_small) -> None:
    """P(next | previous) per previous event, session starts as their own row, shrunk by n / (n + 4)."""
    from embeddings.features.featurizer import MISSING, TRANSITION_TYPES
    from embeddings.features.habits import NEXT_PRIOR, active_columns

    f = fit_featurizer(load_config(), synth_small.events)
    t0 = datetime(2025, 1, 1)
    minutes = [0, 1, 2, 120, 121]  # two sessions: view purchase view | view view
    ev = pl.DataFrame({
        "user_id": ["a"] * 5,
        "ts": [t0 + timedelta(minutes=m) for m in minutes],
        "event": ["page_view", "purchase", "page_view", "page_view", "page_view"],
        "item": [None] * 5, "category": [None] * 5, "amount": [None] * 5,
    })
    data = f.transform(ev)
    batch = f.collate_users(data, np.arange(1), 16)
    raw, weight = habit_raw(batch, {"next": 1.0}, f.cardinalities)
    tt = TRANSITION_TYPES
    view, buy = int(data.fields["event"][0]), int(data.fields["event"][1])
    assert view != buy
    got = {(int(i) // tt, int(i) % tt): float(raw[0, i]) ** 2 for i in np.flatnonzero(raw[0].numpy())}
    # start -> view twice; view -> purchase once, view -> view once; purchase -> view once.
    # The view that ends session 1 is not followed by the view that starts session 2.
    assert got == pytest.approx({(MISSING, view): 1.0, (view, buy): 0.5, (view, view): 0.5, (buy, view): 1.0})
    w = weight[0].view(tt, tt)[:, 0].numpy()
    assert w[MISSING] == pytest.approx(2 / (2 + NEXT_PRIOR)) and w[view] == pytest.approx(2 / (2 + NEXT_PRIOR))
    assert w[buy] == pytest.approx(1 / (1 + NEXT_PRIOR)) and w[0] == 0, "rows never seen weigh nothing"
    cols = active_columns({"next": 1.0}, f.cardinalities, data.fields)
    assert set(np.flatnonzero(raw[0].numpy())) <= set(cols.tolist())


def test_next_block_tells_order_twins_apart_where_rows_are_rare(synth_small) -> None:
    """Buy-then-browse vs browse-then-buy with one purchase in ten events: the purchase row differs fully."""
    from embeddings.features.habits import habit_width

    f = fit_featurizer(load_config(), synth_small.events)
    t0 = datetime(2025, 1, 1)
    sessions = {"researcher": ["search", "page_view", "page_view", "page_view", "add_to_cart", "purchase"],
                "restocker": ["add_to_cart", "purchase", "search", "page_view", "page_view", "page_view"]}
    rows = []
    for user, evs in sessions.items():
        for s in range(3):
            rows += [(user, t0 + timedelta(hours=5 * s, minutes=j), e) for j, e in enumerate(evs)]
    ev = pl.DataFrame(rows, schema=["user_id", "ts", "event"], orient="row").with_columns(
        item=pl.lit(None, pl.String), category=pl.lit(None, pl.String), amount=pl.lit(None, pl.Float64))
    data = f.transform(ev)
    batch = f.collate_users(data, np.arange(2), 32)
    card = f.cardinalities
    ev_raw, _ = habit_raw(batch, {"event": 1.0}, card)
    nxt, _ = habit_raw(batch, {"next": 1.0}, card)
    joint, _ = habit_raw(batch, {"transition": 1.0}, card)
    torch.testing.assert_close(ev_raw[0], ev_raw[1])
    assert nxt.shape[1] == habit_width({"next": 1.0}, card)
    # the conditional rows differ more than the joint pair shares do
    assert (nxt[0] - nxt[1]).norm() > 1.5 * (joint[0] - joint[1]).norm()
