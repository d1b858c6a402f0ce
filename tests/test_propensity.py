"""Goal-aware training: leak-free labelled histories, a calibrated head beside a loadable encoder bundle."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embeddings.bundle import load_bundle
from embeddings.embed import UserEncoder
from embeddings.errors import BundleError, ConfigError
from embeddings.goals import events_before, parse_goal
from tests.conftest import TINY_SETS, make_events

GOAL = parse_goal("purchase", "30d")
FAST = (*TINY_SETS, "trainer.max_steps=20", "trainer.batch_size=32")


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return make_events(150, seed=2)


@pytest.fixture(scope="module")
def trained(events: pl.DataFrame, tmp_path_factory) -> Path:
    from embeddings.config import load_config
    from training.propensity import train_goal_aware

    out = tmp_path_factory.mktemp("goal") / "bundle"
    res = train_goal_aware(load_config(overrides=FAST), events, GOAL, out, as_of=events["ts"].max())
    assert res.metrics["steps"] == 20
    return out


def test_label_cutoffs_never_peek_past_as_of(events: pl.DataFrame) -> None:
    from training.propensity import label_cutoffs

    as_of = datetime(2025, 5, 1)
    labels = label_cutoffs(events, GOAL, as_of, n_cutoffs=3)
    assert labels["cutoff"].max() == as_of - GOAL.horizon
    assert labels["cutoff"].n_unique() == 3


def test_labelled_sequences_hold_only_history_up_to_each_cutoff(events: pl.DataFrame) -> None:
    from embeddings.config import load_config
    from training.propensity import label_cutoffs, labelled_sequences
    from training.train import fit_featurizer

    labels = label_cutoffs(events, GOAL, None, n_cutoffs=2)
    lab = labelled_sequences(fit_featurizer(load_config(overrides=FAST), events), events, labels)
    assert len(lab.y) == labels.height and set(np.unique(lab.y)) <= {0.0, 1.0}
    want = labels.sort("cutoff", "user_id")
    for i in (0, len(lab.y) // 2, len(lab.y) - 1):
        u, c = lab.user_ids[i], lab.cutoffs[i].astype(datetime)
        n_hist = events_before(events, c).filter(pl.col("user_id") == u).height
        assert lab.data.lengths[i] == n_hist
        row = want.filter((pl.col("user_id") == u) & (pl.col("cutoff") == c))
        assert row["label"][0] == lab.y[i]


def test_bundle_loads_strictly_and_carries_a_calibrated_head(trained: Path, events: pl.DataFrame) -> None:
    from training.propensity import PropensityHead, predict_propensity

    bundle = load_bundle(trained)  # strict key check: the head is not in model.safetensors
    assert (trained / "propensity.safetensors").is_file()
    meta = json.loads((trained / "propensity.json").read_text())
    assert meta["calibration"]["method"] == "platt" and meta["goal"]["horizon_days"] == 30
    assert bundle.manifest["propensity"]["calibration"] == meta["calibration"]
    p = predict_propensity(trained, events)
    assert p.shape == (events["user_id"].n_unique(),)
    assert np.all((p > 0) & (p < 1))
    enc = UserEncoder(bundle)
    X = enc.encode(events)
    head = PropensityHead.load(trained)
    np.testing.assert_allclose(head.predict(X), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_propensity(bundle, events, bundle_dir=trained), p, rtol=1e-6)


def test_intent_space_appends_a_unit_norm_intent_axis(trained: Path, events: pl.DataFrame) -> None:
    from training.propensity import PropensityHead, intent_space

    X = UserEncoder.load(trained).encode(events)
    Z = intent_space(X, PropensityHead.load(trained), 1.0)
    assert Z.shape == (X.shape[0], X.shape[1] + 1) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(intent_space(X, PropensityHead.load(trained), 0.0)[:, :-1], X, atol=1e-6)


def test_fit_platt_recovers_a_known_calibration() -> None:
    from training.propensity import fit_platt

    rng = np.random.default_rng(0)
    z = rng.normal(size=20000)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(float)
    cal = fit_platt(z, y)
    assert cal["a"] == pytest.approx(2.0, abs=0.15) and cal["b"] == pytest.approx(-1.0, abs=0.1)


def test_errors_are_clear(tmp_path: Path, events: pl.DataFrame) -> None:
    from embeddings.config import load_config
    from training.propensity import PropensityHead, train_goal_aware

    with pytest.raises(BundleError, match="no propensity head"):
        PropensityHead.load(tmp_path)
    with pytest.raises(ConfigError, match="one class"):
        train_goal_aware(load_config(overrides=FAST), events, parse_goal("no_such_event", "30d"), tmp_path / "b")
    assert timedelta(days=30) == GOAL.horizon
