"""The habit profile's category weight is chosen per log by how well users group."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tests.conftest import TINY_SETS

EVENTS = ["view", "cart", "purchase", "search"]
CATS = [f"c{i}" for i in range(8)]


def grouped_log(n_per_group: int, by: str, seed: int = 0) -> pl.DataFrame:
    """4 groups of users, 30 events each. by="category": the groups differ only in the categories
    they shop (each its own pair); by="event": only in their mix of event types, categories random."""
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 1)
    rows: dict[str, list] = {k: [] for k in ("user_id", "ts", "event", "category")}
    for g in range(4):
        for u in range(n_per_group):
            t = start + timedelta(days=float(rng.uniform(0, 100)))
            for _ in range(30):
                t += timedelta(minutes=float(rng.exponential(600)))
                if by == "category":
                    ev = EVENTS[rng.integers(4)]
                    cat = CATS[2 * g + rng.integers(2)] if rng.random() < 0.5 else CATS[rng.integers(8)]
                else:
                    p = np.full(4, 0.1)
                    p[g] = 0.7
                    ev, cat = EVENTS[rng.choice(4, p=p)], CATS[rng.integers(8)]
                rows["user_id"].append(f"g{g}u{u}")
                rows["ts"].append(t)
                rows["event"].append(ev)
                rows["category"].append(cat)
    return pl.DataFrame(rows).with_columns(item=pl.lit(None, pl.String), amount=pl.lit(None, pl.Float64))


def encoder_for(events: pl.DataFrame, *sets: str):
    from embeddings.config import load_config
    from training.train import build_encoder, fit_featurizer

    cfg = load_config(overrides=[*TINY_SETS, "cluster.micro_clusters=16", *sets])
    featurizer = fit_featurizer(cfg, events)
    data = featurizer.transform(events)
    return cfg, featurizer, data, build_encoder(cfg, featurizer, data)


def test_groups_that_differ_in_what_they_shop_get_more_category_weight():
    from training.profile_select import category_step, choose_category_weight

    cfg, featurizer, data, enc = encoder_for(grouped_log(60, "category"))
    assert enc.cfg.profile_fields["category"] == 1.0
    chosen = choose_category_weight(enc, featurizer, data, cfg)
    assert chosen is not None and chosen > 1.0
    assert enc.cfg.profile_fields["category"] == 1.0, "choosing changes nothing it was given"
    assert category_step(enc, featurizer, data, cfg).encoder.cfg.profile_fields["category"] == chosen


def test_groups_that_share_categories_keep_the_default():
    from training.profile_select import choose_category_weight

    cfg, featurizer, data, enc = encoder_for(grouped_log(60, "event"))
    assert choose_category_weight(enc, featurizer, data, cfg) == 1.0
    assert enc.cfg.profile_fields["category"] == 1.0


def test_a_pinned_weight_is_used_as_given_and_saved_with_the_encoder(tmp_path):
    from embeddings.model.bundle import load_bundle, save_bundle
    from training.profile_select import choose_category_weight

    cfg, featurizer, data, enc = encoder_for(grouped_log(60, "category"), "model.profile_category=2.5")
    assert enc.cfg.profile_fields["category"] == 2.5
    assert choose_category_weight(enc, featurizer, data, cfg) is None
    save_bundle(tmp_path / "b", enc, featurizer, data_fingerprint="x")
    assert load_bundle(tmp_path / "b", device="cpu").encoder.cfg.profile_fields["category"] == 2.5


def test_too_few_users_to_cluster_leave_the_profile_alone():
    from training.profile_select import choose_category_weight

    cfg, featurizer, data, enc = encoder_for(grouped_log(10, "category"))
    assert choose_category_weight(enc, featurizer, data, cfg) is None
    assert enc.cfg.profile_fields["category"] == 1.0


def test_profile_category_must_be_auto_or_a_weight():
    from embeddings.config import load_config
    from embeddings.errors import ConfigError

    with pytest.raises(ConfigError, match="profile_category"):
        load_config(overrides=["model.profile_category=heavy"])


def test_the_candidates_are_built_as_the_encoder_builds_embeddings():
    """profile_select rebuilds embeddings in numpy; with the encoder's own PCA rows they must be the
    encoder's output, or the silhouettes compared would be of something else."""
    import torch

    from embeddings.features.habits import habit_matrix
    from training.profile_select import _behaviour, _embedding

    cfg, featurizer, data, enc = encoder_for(grouped_log(60, "category"))
    c = enc.cfg
    rows = np.arange(len(data))  # build_encoder fitted the PCA on all of them (fewer than 20,000)
    raw, weight, _ = habit_matrix(featurizer, data, rows, c.profile_fields, c.cardinalities, c.max_len)
    behaviour = _behaviour(enc, featurizer, data, rows, 1024)
    mine = _embedding(behaviour, raw, weight, c.n_profile, c.profile)
    with torch.no_grad():
        theirs = enc.eval()(featurizer.collate_users(data, rows, c.max_len)).numpy()
    # PCA directions are unique up to sign, which fit_habit_pca fixes, so rows agree entry by entry
    np.testing.assert_allclose(mine, theirs, atol=1e-4)
