"""Goal-aware training: leak-free labelled histories, a calibrated head beside a loadable encoder bundle."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.errors import BundleError, ConfigError
from embeddings.evaluation.goals import events_before, parse_goal
from embeddings.model.bundle import load_bundle
from embeddings.model.embed import UserEncoder
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


def test_label_cutoffs_overlap_their_windows_only_when_the_log_is_too_short() -> None:
    """Four 30-day cut-offs need 120 days of history; with 60 they step by 15 days (windows
    overlap) instead of losing all but two cut-offs, and never peek past the end."""
    from training.propensity import label_cutoffs

    start = datetime(2025, 1, 1)
    rows = [(f"u{u}", start + timedelta(days=d), "purchase") for u in range(20) for d in range(0, 91, 3 + u % 5)]
    short = pl.DataFrame(rows, schema=["user_id", "ts", "event"], orient="row")
    labels = label_cutoffs(short, GOAL, None, n_cutoffs=4)
    cuts = sorted(labels["cutoff"].unique().to_list())
    last = short["ts"].max() - GOAL.horizon
    assert len(cuts) == 4 and cuts[-1] == last
    assert all(b - a == (last - start) / 4 for a, b in zip(cuts, cuts[1:], strict=False))
    assert cuts[0] > start
    long = make_events(40, seed=5)  # a year of events: whole horizons apart, as before
    cuts = sorted(label_cutoffs(long, GOAL, None, n_cutoffs=4)["cutoff"].unique().to_list())
    assert [b - a for a, b in zip(cuts, cuts[1:], strict=False)] == [GOAL.horizon] * 3


def test_fit_head_scores_no_latest_pair_with_a_head_that_saw_the_same_user() -> None:
    """Overlapping label windows: a user's earlier pairs carry the label the latest pair is scored
    on. Embeddings here are user noise, so a head that saw the user memorises them; grouped by
    user, the choice and the calibration see only what transfers to new users (nothing)."""
    from training.head_fit import fit_head

    rng = np.random.default_rng(3)
    n_users, n_cut, d = 120, 3, 80  # as many embedding columns as users: a linear head can memorise them
    user_z, user_y = rng.normal(size=(n_users, d)), (rng.uniform(size=n_users) < 0.5).astype(float)
    users = np.tile(np.arange(n_users), n_cut)
    cut = np.repeat(np.array(["2024-01-01", "2024-02-01", "2024-03-01"], dtype="datetime64[us]"), n_users)
    Z, y = user_z[users] + 0.01 * rng.normal(size=(len(users), d)), user_y[users]
    F, held = rng.normal(size=(len(users), 3)), np.ones(len(users), dtype=bool)
    leaky = fit_head(Z, F, y, cut, held)  # each pair its own group: the user's other pairs train it
    grouped = fit_head(Z, F, y, cut, held, groups=users)
    assert leaky.validation_auc["embedding+aggregates"] > 0.85, leaky.validation_auc
    assert abs(grouped.validation_auc["embedding+aggregates"] - 0.5) < 0.15, grouped.validation_auc
    assert leaky.calibration["auc"] > 0.85 and abs(grouped.calibration["auc"] - 0.5) < 0.15
    assert abs(grouped.a) < 0.2 < leaky.a  # Platt: no slope (the base rate for all) vs an overconfident one


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


def test_bundle_loads_as_an_intent_encoder_whose_embeddings_carry_the_propensity(trained: Path, events: pl.DataFrame) -> None:
    from embeddings.model.intent import IntentEncoder, split_embedding
    from embeddings.model.propensity import PropensityHead, predict_propensity

    bundle = load_bundle(trained)  # strict key check: the head is not in model.safetensors
    assert isinstance(bundle.encoder, IntentEncoder)
    meta = json.loads((trained / "propensity.json").read_text())
    assert meta["calibration"]["method"] == "platt" and meta["goal"]["horizon_days"] == 30
    from training.head_fit import CANDIDATES

    assert meta["head"]["inputs"] in CANDIDATES
    assert bundle.manifest["propensity"]["calibration"] == meta["calibration"]
    p = predict_propensity(trained, events)
    assert p.shape == (events["user_id"].n_unique(),)
    assert np.all((p > 0) & (p < 1))
    enc = UserEncoder(bundle)
    ids, X = enc.encode(events)
    assert X.shape[1] == bundle.dim == bundle.encoder.base.cfg.dim + 2  # the intent logit, then the recent-goal flag
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    from embeddings.model.intent import recent_of

    as_of = events["ts"].max()
    # users whose last 30 days hold a purchase (among the events held: every one here, at this max_len)
    recent = events.filter((pl.col("event") == "purchase") & (pl.col("ts") >= as_of - timedelta(days=30)))
    truth = np.isin(ids.astype(str), recent["user_id"].unique().to_list())
    assert 0 < truth.sum() < len(truth)
    np.testing.assert_array_equal(recent_of(X, bundle.encoder.intent), truth)
    head = PropensityHead.load(trained)
    np.testing.assert_allclose(head.predict(X), p, rtol=1e-5, atol=1e-6)
    z, logit = split_embedding(X, head.intent)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # the coordinate is the standardised logit: centred on the training users
    assert abs((logit.mean() - head.intent.mean) / head.intent.std) < 1e-3
    again = load_bundle(trained)
    np.testing.assert_array_equal(UserEncoder(again).encode(events).vectors, X)  # rebuilt exactly
    assert again.version == bundle.version


def test_a_head_of_an_earlier_format_names_the_file_and_the_fix(trained: Path, tmp_path: Path) -> None:
    import shutil

    from embeddings.model.propensity import PropensityHead

    b = tmp_path / "b"
    shutil.copytree(trained, b)
    meta = json.loads((b / "propensity.json").read_text())
    meta["format"] = "seqcohort.propensity/2"
    meta["embedding"]["history_context"] = True
    (b / "propensity.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"propensity\.json has format 'seqcohort\.propensity/2'; .*"
                                          r"'seqcohort\.propensity/3'.*retrain with `seqcohort run`"):
        PropensityHead.load(b)


def test_intent_features_read_the_goal_events_of_each_row() -> None:
    import torch

    from embeddings.features.featurizer import N_CONTEXT
    from embeddings.model.intent import N_INTENT, intent_features

    ev = torch.tensor([[5, 6, 5, 0], [6, 6, 0, 0]])
    rec = torch.log1p(torch.tensor([[30.0, 20.0, 10.0, 0.0], [5.0, 1.0, 0.0, 0.0]])) / 3.0
    batch = {"event": ev, "log_recency": rec, "lengths": torch.tensor([3, 2]), "context": torch.zeros(2, N_CONTEXT)}
    f = intent_features(batch, goal_event=5).numpy()
    assert f.shape == (2, N_INTENT)
    np.testing.assert_allclose(np.expm1(f[:, N_CONTEXT] * 5), [2, 0], atol=1e-5)  # goal events per row
    np.testing.assert_allclose(np.expm1(f[0, N_CONTEXT + 1] * 5), 10.0, rtol=1e-4)  # days since the last one
    assert f[:, N_CONTEXT + 2].tolist() == [1.0, 0.0] and f[1, N_CONTEXT + 1] == 0.0
    anything = intent_features(batch, goal_event=None).numpy()
    np.testing.assert_allclose(np.expm1(anything[:, N_CONTEXT] * 5), [3, 2], atol=1e-5)
    aliased = intent_features(batch, goal_event=[5, 6]).numpy()  # a goal with an alias: both types count
    np.testing.assert_allclose(aliased, anything, atol=1e-6)


def test_the_head_reads_aggregates_of_the_whole_history_beyond_max_len(trained: Path, events: pl.DataFrame) -> None:
    from embeddings.features.featurizer import N_CONTEXT
    from embeddings.model.intent import intent_features

    bundle = load_bundle(trained)
    data = UserEncoder(bundle).featurize(events, events["ts"].max())
    f, rows, n, cap = bundle.featurizer, np.arange(len(data)), np.diff(data.offsets), 8
    assert (n > cap).sum() > 10
    batch = f.collate_users(data, rows, cap)
    assert batch["n_events"].tolist() == n.tolist()
    whole = f.collate_users(data, rows, int(n.max()))["context"]  # a batch that holds every event
    torch.testing.assert_close(batch["history_context"], whole)
    np.testing.assert_allclose(np.expm1(batch["context"][:, 0].double().numpy() * 5), np.minimum(n, cap), rtol=1e-4)
    torch.testing.assert_close(intent_features(batch, None)[:, :N_CONTEXT], whole.float())
    held = {k: v for k, v in batch.items() if k != "history_context"}  # as a plain `collate` batch: its rows only
    torch.testing.assert_close(intent_features(held, None)[:, :N_CONTEXT], batch["context"].float())


def test_goal_event_ids_take_the_aliases() -> None:
    from datetime import timedelta

    from embeddings.evaluation.goals import Goal
    from embeddings.features.featurizer import N_SPECIAL, OOV, Featurizer
    from training.propensity import goal_event_id

    f = Featurizer()
    f.vocabs_ = {"event": ["view", "purchase", "purchase_coupon"]}
    h = timedelta(days=30)
    assert goal_event_id(f, Goal("purchase", h)) == f.vocabs_["event"].index("purchase") + N_SPECIAL
    ids = goal_event_id(f, Goal("purchase", h, aliases=("purchase_coupon", "refund")))
    assert isinstance(ids, list) and len(ids) == 3 and OOV in ids  # a type never seen maps to OOV
    assert goal_event_id(f, Goal(None, h, "churn")) is None


def test_fit_head_keeps_the_embedding_out_when_it_does_not_transfer_to_the_latest_cutoff() -> None:
    from training.head_fit import fit_head

    rng = np.random.default_rng(0)
    n = 6000
    cut = np.repeat(np.array(["2024-01-01", "2024-04-01", "2024-07-01"], dtype="datetime64[us]"), n // 3)
    F = rng.normal(size=(n, 3))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-1.5 * F[:, 0]))).astype(float)
    Z = rng.normal(size=(n, 4)) * 0.1
    latest = cut == cut.max()
    Z[:, 0] += np.where(latest, -1.0, 1.0) * (y - 0.5)  # predictive early, reversed at the latest cut-off
    held = rng.uniform(size=n) < 0.5  # only the held-out users' pairs are used
    fit = fit_head(Z, F, y, cut, held)
    assert fit.inputs == "aggregates" and np.all(fit.weight[:4] == 0)
    assert fit.validation_auc["aggregates"] > fit.validation_auc["embedding+aggregates"]
    assert fit.calibration["n"] == int((held & latest).sum()) and fit.calibration["auc"] > 0.7
    assert fit.calibration["n_fit"] == int(held.sum())
    Z[:, 0] = 2.0 * (y - 0.5) + rng.normal(size=n) * 0.1  # now the embedding helps everywhere
    assert fit_head(Z, F, y, cut, held).inputs.startswith("embedding+aggregates")


def test_fit_head_leaves_the_habit_profile_out_unless_it_helps_at_the_latest_cutoff() -> None:
    """Many noisy habit columns and few held-out users: the head must not fit them."""
    from training.head_fit import fit_head

    rng = np.random.default_rng(2)
    n, n_profile = 1500, 40
    cut = np.repeat(np.array(["2024-01-01", "2024-04-01", "2024-07-01"], dtype="datetime64[us]"), n // 3)
    Z = rng.normal(size=(n, 4 + n_profile))
    F = rng.normal(size=(n, 3))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(1.5 * Z[:, 0] + F[:, 0])))).astype(float)
    held = np.ones(n, dtype=bool)
    fit = fit_head(Z, F, y, cut, held, n_profile=n_profile)
    assert fit.inputs.startswith("embedding w/o habits") and not fit.weight[4 : 4 + n_profile].any()
    assert fit.weight[0] != 0 and set(fit.validation_auc) == {
        "aggregates", "embedding w/o habits+aggregates (strong L2)", "embedding w/o habits+aggregates",
        "embedding+aggregates (strong L2)", "embedding+aggregates"}
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(2.0 * Z[:, 10] + 2.0 * Z[:, 20])))).astype(float)
    fit = fit_head(Z, F, y, cut, held, n_profile=n_profile)
    assert fit.inputs.startswith("embedding+aggregates") and fit.weight[10] != 0
    assert "embedding w/o habits+aggregates" not in fit_head(Z, F, y, cut, held).validation_auc


def test_fit_head_penalises_inputs_by_their_information_not_their_scale() -> None:
    """A unit-vector embedding (coordinates ~1/sqrt(d)) must not be taxed harder than O(1) aggregates."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.head_fit import _fit, _raw

    rng = np.random.default_rng(1)
    n, d = 3000, 16
    Z = rng.normal(size=(n, d))
    F = rng.normal(size=(n, 3))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(Z[:, 0] + F[:, 0])))).astype(float)
    every = np.ones(d, dtype=bool)
    w, b = _fit(Z / 8, F, y, every, 0.05)
    w_big, b_big = _fit(Z, F, y, every, 0.05)
    np.testing.assert_allclose(_raw(Z / 8, F, w, b), _raw(Z, F, w_big, b_big), rtol=1e-5, atol=1e-6)
    # the weights act on the raw inputs: the same scores as a standardising pipeline
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)).fit(np.hstack([Z / 8, F]), y)
    np.testing.assert_allclose(_raw(Z / 8, F, w, b), ref.decision_function(np.hstack([Z / 8, F])), rtol=1e-4, atol=1e-5)
    assert abs(w[0] / 8 * Z[:, 0].std() - w[d] * F[:, 0].std()) < 0.1  # equal signals, equal standardised weights


def test_fit_platt_recovers_a_known_calibration() -> None:
    from training.head_fit import fit_platt

    rng = np.random.default_rng(0)
    z = rng.normal(size=20000)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(float)
    cal = fit_platt(z, y)
    assert cal["a"] == pytest.approx(2.0, abs=0.15) and cal["b"] == pytest.approx(-1.0, abs=0.1)


def test_a_behaviour_bundle_or_a_broken_head_is_a_clear_error(trained: Path, tmp_path: Path) -> None:
    import shutil

    from embeddings.model.propensity import predict_propensity

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "propensity.safetensors").unlink()
    with pytest.raises(BundleError, match="no propensity.safetensors"):
        load_bundle(broken)
    (broken / "propensity.json").unlink()
    assert not hasattr(load_bundle(broken).encoder, "intent")  # the behaviour encoder alone
    with pytest.raises(BundleError, match="no propensity head"):
        predict_propensity(broken, make_events(5, seed=1))


def test_errors_are_clear(tmp_path: Path, events: pl.DataFrame) -> None:
    from embeddings.config import load_config
    from embeddings.model.propensity import PropensityHead
    from training.propensity import train_goal_aware

    with pytest.raises(BundleError, match="no propensity head"):
        PropensityHead.load(tmp_path)
    with pytest.raises(ConfigError, match="one class"):
        train_goal_aware(load_config(overrides=FAST), events, parse_goal("no_such_event", "30d"), tmp_path / "b")
    assert timedelta(days=30) == GOAL.horizon


def test_goal_aware_training_takes_the_shuffled_order_term(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from embeddings.config import load_config
    from embeddings.synthetic.synth import generate
    from training.propensity import train_goal_aware

    events = generate(200, seed=3).events  # sessions of several events: something to reorder
    cfg = load_config(overrides=[*FAST, "trainer.max_steps=4", "trainer.order_weight=4"])
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.NOTSET)  # as in a fresh `seqcohort run --goal`
    with caplog.at_level(logging.INFO):
        res = train_goal_aware(cfg, events, GOAL, tmp_path / "b", as_of=events["ts"].max())
    assert res.metrics["steps"] == 4 and "train/order_sim" in res.metrics
    banners = [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    assert not banners, f"Lightning's INFO banners reach the user: {banners}"


def test_bce_term_shapes_the_encoder_only_when_weighted(events: pl.DataFrame, tmp_path: Path) -> None:
    """Default (0): contrastive training only, the head is fitted afterwards; > 0 adds BCE on labels."""
    from embeddings.config import load_config
    from training.propensity import train_goal_aware

    cfg = load_config(overrides=[*FAST, "trainer.max_steps=4"])
    runs = {w: train_goal_aware(cfg, events, GOAL, tmp_path / f"b{w}", as_of=events["ts"].max(), bce_weight=w)
            for w in (0.0, 1.0)}
    assert "train/bce" not in runs[0.0].metrics and runs[1.0].metrics["train/bce"] > 0
    w0, w1 = (r.bundle.encoder.base.head[0].weight for r in (runs[0.0], runs[1.0]))
    assert not torch.equal(w0, w1), "same seed, same data: only the BCE term can move the encoder"
