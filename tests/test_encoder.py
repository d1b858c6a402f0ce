from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from embeddings.errors import BundleError
from embeddings.features.featurizer import LOG_RECENCY_SCALE, Featurizer
from embeddings.model.bundle import load_bundle, save_bundle
from embeddings.model.embed import UserEncoder, read_embeddings, write_embeddings
from embeddings.model.encoder import EncoderConfig, EventEncoder


@pytest.fixture(scope="module")
def model_and_data(tiny_events):
    f = Featurizer().fit(tiny_events)
    cfg = EncoderConfig(cardinalities=f.cardinalities, numeric_fields=f.numeric_fields, d_model=32,
                        n_heads=2, n_layers=1, d_ff=64, dim=16, max_len=32)
    torch.manual_seed(0)
    return EventEncoder(cfg).eval(), f, f.transform(tiny_events)


def test_output_shape_and_norm(model_and_data):
    enc, f, data = model_and_data
    batch = f.collate_users(data, np.arange(10), 32)
    z = enc(batch)
    assert z.shape == (10, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(10))


def test_padding_does_not_change_the_result(model_and_data):
    enc, f, data = model_and_data
    short = int(np.argmin(data.lengths))
    alone = enc(f.collate_users(data, np.array([short]), 32))
    longest = int(np.argmax(data.lengths))
    padded = enc(f.collate_users(data, np.array([short, longest]), 32))[0:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_training_mode_dropout_changes_output(model_and_data):
    enc, f, data = model_and_data
    m = copy.deepcopy(enc).train()
    b = f.collate_users(data, np.arange(4), 32)
    assert not torch.allclose(m(b), m(b))


def test_bundle_round_trip_is_exact(tmp_path, model_and_data, tiny_events):
    enc, f, data = model_and_data
    b = save_bundle(tmp_path / "bundle", enc, f, data_fingerprint="x", metrics={"m": 1.0})
    assert len(b.version) == 12
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.version == b.version
    u1 = UserEncoder(b).encode(data)
    u2 = UserEncoder(loaded).encode(data)
    np.testing.assert_array_equal(u1, u2)
    assert not list(tmp_path.glob(".bundle*")), "no temp leftovers"
    assert not list((tmp_path / "bundle").glob("*.pt")), "no pickles"


def test_bundle_errors(tmp_path, model_and_data):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    enc, f, _ = model_and_data
    save_bundle(tmp_path / "b", enc, f)
    (tmp_path / "b" / "featurizer.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path / "b")


def test_encode_batch_equals_one_by_one(model_and_data):
    enc, f, data = model_and_data
    from embeddings.model.bundle import Bundle

    ue = UserEncoder(Bundle(enc, f, {}))
    X = ue.encode(data, batch_size=7)
    for i in (0, 5, 17):
        xi = ue.encode(data.subset(np.array([i])))
        np.testing.assert_allclose(xi[0], X[i], atol=1e-5)


def test_embeddings_parquet_round_trip(tmp_path, model_and_data):
    enc, f, data = model_and_data
    X = np.random.default_rng(0).normal(size=(len(data), 16)).astype(np.float32)
    p = write_embeddings(tmp_path / "e.parquet", data.user_ids, X, data.as_of)
    ids, Y = read_embeddings(p)
    assert list(ids) == list(data.user_ids)
    np.testing.assert_array_equal(X, Y)
    import polars as pl

    dt = pl.read_parquet(p).schema["embedding"]
    assert dt == pl.Array(pl.Float32, 16)


def test_state_coordinates_are_the_standardised_recency_and_frequency(model_and_data, tmp_path):
    _, f, data = model_and_data
    cfg = EncoderConfig(cardinalities=f.cardinalities, numeric_fields=f.numeric_fields, d_model=32,
                        n_heads=2, n_layers=1, d_ff=64, dim=16, max_len=8,  # max_len < most histories
                        recency=0.5, recency_mean=0.4, recency_std=0.3,
                        frequency=0.25, frequency_mean=1.5, frequency_std=0.5)
    torch.manual_seed(0)
    enc = EventEncoder(cfg).eval()
    X = UserEncoder(save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")).encode(data)
    assert X.shape == (len(data), 16)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    last = data.fields["log_recency"][data.offsets[1:] - 1]  # the most recent event, kept by any max_len
    r = 0.5 * (last - 0.4) / 0.3
    q = 0.25 * (np.log1p(np.minimum(np.diff(data.offsets), 8)) - 1.5) / 0.5  # events the encoder holds
    # the 14 learned outputs are a unit vector, so each coordinate is its value / |(z, r, q)|
    norm = np.sqrt(1 + r**2 + q**2)
    np.testing.assert_allclose(X[:, -2], r / norm, atol=1e-5)
    np.testing.assert_allclose(X[:, -1], q / norm, atol=1e-5)
    # new bundles count the whole history's events, beyond the max_len the transformer reads
    assert np.diff(data.offsets).max() > 8
    enc_h = EventEncoder(replace(cfg, frequency_history=True))
    enc_h.load_state_dict(enc.state_dict())
    Xh = UserEncoder(save_bundle(tmp_path / "h", enc_h.eval(), f, data_fingerprint="x")).encode(data)
    qh = 0.25 * (np.log1p(np.diff(data.offsets)) - 1.5) / 0.5
    nh = np.sqrt(1 + r**2 + qh**2)
    np.testing.assert_allclose(Xh[:, -1], qh / nh, atol=1e-5)
    np.testing.assert_allclose(Xh[:, :-1] * nh[:, None], X[:, :-1] * norm[:, None], atol=1e-5)  # the rest as before


def test_square_root_recency_is_clipped_and_visits_count_days(model_and_data, tmp_path):
    _, f, data = model_and_data
    days = np.expm1(data.fields["log_recency"][data.offsets[1:] - 1].astype(np.float64) * LOG_RECENCY_SCALE)
    mean, std = float(np.sqrt(days).mean()), float(np.sqrt(days).std()) / 2  # half the std: some rows pass the clip
    cfg = EncoderConfig(cardinalities=f.cardinalities, numeric_fields=f.numeric_fields, d_model=32,
                        n_heads=2, n_layers=1, d_ff=64, dim=16, max_len=8,
                        recency=0.5, recency_mean=mean, recency_std=std, recency_shape="sqrt", recency_clip=1.5,
                        visits=0.25, visits_mean=0.5, visits_std=0.2)
    torch.manual_seed(0)
    enc = EventEncoder(cfg).eval()
    X = UserEncoder(save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")).encode(data)
    z = (np.sqrt(days) - mean) / std
    assert (np.abs(z) > 1.5).any() and (np.abs(z) < 1.5).any()
    r = 0.5 * np.clip(z, -1.5, 1.5)
    # visits: log1p of the distinct days (counted back from as_of) with events, over the whole history
    back = np.floor(np.expm1(data.fields["log_recency"].astype(np.float64) * LOG_RECENCY_SCALE))
    n_days = np.array([len(np.unique(back[a:b])) for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)])
    v = 0.25 * (np.log1p(n_days) / 5 - 0.5) / 0.2
    norm = np.sqrt(1 + r**2 + v**2)
    np.testing.assert_allclose(X[:, -2], r / norm, atol=1e-4)
    np.testing.assert_allclose(X[:, -1], v / norm, atol=1e-4)
    with pytest.raises(ValueError, match="recency_shape"):
        EventEncoder(replace(cfg, recency_shape="cube"))(f.collate_users(data, np.arange(2), 8))


def test_bundles_without_state_coordinates_still_load(tmp_path, model_and_data):
    """Bundles written before the coordinates existed have no such keys: all outputs stay learned."""
    import json

    enc, f, data = model_and_data
    save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")
    cfg_path = tmp_path / "b" / "config.json"
    raw = json.loads(cfg_path.read_text())
    for name in ("recency", "frequency"):
        assert (raw.pop(name), raw.pop(f"{name}_mean"), raw.pop(f"{name}_std")) == (0.0, 0.0, 1.0)
    cfg_path.write_text(json.dumps(raw))
    loaded = load_bundle(tmp_path / "b")
    assert loaded.encoder.cfg.n_state == 0
    expect = enc(f.collate_users(data, np.arange(len(data)), 32)).detach().numpy()
    np.testing.assert_allclose(UserEncoder(loaded).encode(data), expect, atol=1e-5)
