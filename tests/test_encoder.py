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
                        n_heads=2, n_layers=1, d_ff=64, learned_dim=16, max_len=32)
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
    u1 = UserEncoder(b).encode(data).vectors
    u2 = UserEncoder(loaded).encode(data).vectors
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
    X = ue.encode(data, batch_size=7).vectors
    for i in (0, 5, 17):
        xi = ue.encode(data.subset(np.array([i]))).vectors
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
                        n_heads=2, n_layers=1, d_ff=64, learned_dim=14, max_len=8,  # max_len < most histories
                        recency=0.5, recency_mean=0.4, recency_std=0.3,
                        frequency=0.25, frequency_mean=1.5, frequency_std=0.5)
    assert (cfg.n_state, cfg.dim) == (2, 16)
    torch.manual_seed(0)
    enc = EventEncoder(cfg).eval()
    X = UserEncoder(save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")).encode(data).vectors
    assert X.shape == (len(data), 16)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    last = data.fields["log_recency"][data.offsets[1:] - 1]  # the most recent event, kept by any max_len
    r = 0.5 * (last - 0.4) / 0.3
    # the whole history's events, beyond the max_len the transformer reads
    assert np.diff(data.offsets).max() > 8
    q = 0.25 * (np.log1p(np.diff(data.offsets)) - 1.5) / 0.5
    # the 14 learned outputs are a unit vector, so each coordinate is its value / |(z, r, q)|
    norm = np.sqrt(1 + r**2 + q**2)
    np.testing.assert_allclose(X[:, -2], r / norm, atol=1e-5)
    np.testing.assert_allclose(X[:, -1], q / norm, atol=1e-5)


def test_square_root_recency_is_clipped_and_visits_count_days(model_and_data, tmp_path):
    _, f, data = model_and_data
    days = np.expm1(data.fields["log_recency"][data.offsets[1:] - 1].astype(np.float64) * LOG_RECENCY_SCALE)
    mean, std = float(np.sqrt(days).mean()), float(np.sqrt(days).std()) / 2  # half the std: some rows pass the clip
    cfg = EncoderConfig(cardinalities=f.cardinalities, numeric_fields=f.numeric_fields, d_model=32,
                        n_heads=2, n_layers=1, d_ff=64, learned_dim=14, max_len=8,
                        recency=0.5, recency_mean=mean, recency_std=std, recency_shape="sqrt", recency_clip=1.5,
                        visits=0.25, visits_mean=0.5, visits_std=0.2)
    torch.manual_seed(0)
    enc = EventEncoder(cfg).eval()
    X = UserEncoder(save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")).encode(data).vectors
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


def test_config_is_frozen_and_a_changed_one_builds_a_new_encoder(model_and_data):
    """A config describes exactly the module built from it: nothing changes it afterwards."""
    import dataclasses
    import pickle

    enc, f, data = model_and_data
    with pytest.raises(dataclasses.FrozenInstanceError):
        enc.cfg.learned_dim = 8  # type: ignore[misc]
    cards = dict(f.cardinalities)
    cfg = EncoderConfig(cardinalities=cards, profile_fields={"event": 1.0})
    cards["event"] = 1  # the caller's dict is copied
    assert cfg.cardinalities["event"] == f.cardinalities["event"]
    with pytest.raises(TypeError):
        cfg.profile_fields["event"] = 2.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(cfg)) == cfg == copy.deepcopy(cfg)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    # denoising builds a new encoder from a new config; the trained one is left as it was
    batch = f.collate_users(data, np.arange(8), 32)
    before = enc(batch).detach().clone()
    basis = torch.linalg.qr(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)))[0]
    rng = torch.get_rng_state()
    low = enc.with_learned_basis(torch.zeros(16), basis)
    assert torch.equal(rng, torch.get_rng_state()), "no initial weights drawn for a rebuilt encoder"
    assert (enc.cfg.learned_rank, low.cfg.learned_rank, low.training) == (0, 3, False)
    assert low.cfg == replace(enc.cfg, learned_rank=3) and low.dim == enc.dim == 16
    torch.testing.assert_close(enc(batch), before)
    torch.testing.assert_close(low.learned(batch), enc.learned(batch))  # the same weights, not shared
    assert low.head[0].weight.data_ptr() != enc.head[0].weight.data_ptr()
    z = enc.learned(batch)
    torch.testing.assert_close(low(batch), torch.nn.functional.normalize(z @ basis @ basis.T, dim=-1))


def _old_layout(bundle: object) -> None:
    """Rewrite a bundle directory as an earlier build wrote it: format /1, `dim` as the total width."""
    import json
    from pathlib import Path

    path = Path(str(bundle))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format"] = "seqcohort.bundle/1"
    (path / "manifest.json").write_text(json.dumps(manifest))
    cfg = json.loads((path / "config.json").read_text())
    cfg["dim"] = cfg.pop("learned_dim")
    cfg["frequency_history"] = True
    (path / "config.json").write_text(json.dumps(cfg))


def test_a_bundle_of_an_earlier_format_gives_one_clear_error(tmp_path, model_and_data):
    import json

    enc, f, _ = model_and_data
    save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")
    _old_layout(tmp_path / "b")
    with pytest.raises(BundleError) as e:
        load_bundle(tmp_path / "b")
    msg = str(e.value)
    assert str(tmp_path / "b" / "manifest.json") in msg  # which file
    assert "'seqcohort.bundle/1'" in msg and "'seqcohort.bundle/2'" in msg  # what it has, what is read
    assert "retrain with `seqcohort run` or `seqcohort train`" in msg  # the fix
    # a manifest that names no format at all (the earliest builds) reads the same way
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    del manifest["format"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest\.json has no format; .*seqcohort\.bundle/2.*seqcohort train"):
        load_bundle(tmp_path / "b")


def test_a_config_json_that_is_not_this_formats_names_the_file_and_the_fields(tmp_path, model_and_data):
    import json

    enc, f, _ = model_and_data
    save_bundle(tmp_path / "b", enc, f, data_fingerprint="x")
    cfg_path = tmp_path / "b" / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw["dim"] = raw.pop("learned_dim")
    cfg_path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"config\.json .*missing \['learned_dim'\], unexpected \['dim'\].*seqcohort train"):
        load_bundle(tmp_path / "b")
