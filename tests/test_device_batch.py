"""Batches gathered in torch (embeddings/features/device_batch.py) and the fast `UserEncoder.encode`
paths against the straightforward way: one user at a time through `collate_users` and the encoder."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from embeddings.features.device_batch import DeviceSequences, segment_context
from embeddings.features.featurizer import N_CONTEXT, Featurizer
from embeddings.features.habits import PROFILE_FIELDS, habit_fields, habit_width
from embeddings.model.bundle import Bundle
from embeddings.model.embed import UserEncoder
from embeddings.model.encoder import EncoderConfig, EventEncoder

MAX_LEN = 16  # below the longest tiny history, so cropping is exercised


@pytest.fixture(scope="module")
def setup(tiny_events):
    return tiny_encoder(tiny_events)


def tiny_encoder(tiny_events):
    """A tiny encoder with every optional part on (context, state coordinates, habit profile,
    learned basis), its featurizer and the tiny log's users."""
    f = Featurizer().fit(tiny_events)
    fields = habit_fields(f.cardinalities, PROFILE_FIELDS)
    cfg = EncoderConfig(cardinalities=f.cardinalities, numeric_fields=f.numeric_fields, d_model=32, n_heads=2,
                        n_layers=2, d_ff=64, learned_dim=16, max_len=MAX_LEN, n_context=N_CONTEXT, recency=0.2,
                        recency_shape="sqrt", recency_clip=3.0, frequency=0.1, monetary=0.1, visits=0.1,
                        profile=0.8, profile_dim=4, profile_fields=fields)
    torch.manual_seed(0)
    enc = EventEncoder(cfg)
    g = torch.Generator().manual_seed(1)
    width = habit_width(fields, f.cardinalities)
    q, _ = torch.linalg.qr(torch.randn(16, 6, generator=g))
    enc = enc.rebuilt(cfg, profile_mean=torch.rand(width, generator=g) * 0.1,
                      profile_basis=torch.randn(width, 4, generator=g) * 0.1)
    enc = enc.with_learned_basis(torch.randn(16, generator=g) * 0.1, q).eval()
    data = f.transform(tiny_events)
    assert data.lengths.max() > MAX_LEN and data.lengths.min() < MAX_LEN
    return enc, f, data


def reference(enc: EventEncoder, f: Featurizer, data) -> np.ndarray:
    """One user a batch, the encoder as written: what every faster path must reproduce."""
    with torch.no_grad():
        return np.concatenate([enc(f.collate_users(data, np.array([i]), MAX_LEN)).numpy() for i in range(len(data))])


def test_device_batch_equals_collate_users(setup):
    enc, f, data = setup
    ds = DeviceSequences.from_data(f, data, "cpu")
    rows = np.array([5, 0, int(np.argmax(data.lengths)), int(np.argmin(data.lengths)), 17])
    want = f.collate_users(data, rows, MAX_LEN)
    got = ds.collate_users(torch.from_numpy(rows), MAX_LEN)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        torch.testing.assert_close(got[k], v, atol=1e-6, rtol=1e-6, msg=k)
    # the width known from host-side lengths gives the same batch without reading it back
    narrow = ds.collate_users(torch.from_numpy(rows), MAX_LEN, int(want["lengths"].max()), context=False)
    assert "context" not in narrow
    torch.testing.assert_close(narrow["item"], want["item"])


def test_segment_context_of_empty_runs_is_zero():
    lr = torch.tensor([0.1, 0.2, 0.3])
    ctx = segment_context(lr, torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0, 3, 0]), 1.0)
    assert ctx.shape == (3, N_CONTEXT)
    assert ctx[0].abs().sum() == 0 and ctx[2].abs().sum() == 0 and ctx[1, 0] > 0


@pytest.mark.parametrize("workers", [1, 3])
def test_encode_on_cpu_equals_one_user_at_a_time(setup, workers):
    enc, f, data = setup
    ue = UserEncoder(Bundle(enc, f, {"version": "t"}), device="cpu")
    threads = torch.get_num_threads()
    X = ue.encode(data, batch_size=7, workers=workers).vectors
    assert torch.get_num_threads() == threads  # the workers' single thread is not left behind
    np.testing.assert_allclose(X, reference(enc, f, data), atol=1e-5)


def test_encode_on_device_path_equals_reference_on_cpu_tensors(setup):
    """The GPU path (batches gathered on the device) run on CPU tensors."""
    enc, f, data = setup
    ue = UserEncoder(Bundle(enc, f, {"version": "t"}), device="cpu")
    order = np.argsort(np.minimum(data.lengths, MAX_LEN), kind="stable")
    batches = [order[s : s + 9] for s in range(0, len(data), 9)]
    X = ue._encode_on_device(data, batches, np.minimum(data.lengths, MAX_LEN), contextlib.nullcontext, None)
    np.testing.assert_allclose(X, reference(enc, f, data), atol=1e-5)


def test_bfloat16_is_opt_in_and_close(setup):
    enc, f, data = setup
    ue = UserEncoder(Bundle(enc, f, {"version": "t"}), device="cpu")
    X = ue.encode(data, dtype="bfloat16").vectors
    ref = reference(enc, f, data)
    assert X.dtype == np.float32
    assert np.abs(X - ref).max() < 5e-2
    assert (X * ref).sum(1).min() > 0.99
    with pytest.raises(ValueError, match="dtype"):
        ue.encode(data, dtype="int8")


def test_featurize_in_parts_equals_one_transform(setup, tiny_events, monkeypatch):
    import embeddings.model.embed as embed_mod

    enc, f, data = setup
    monkeypatch.setattr(embed_mod, "PARALLEL_MIN_EVENTS", 0)
    ue = UserEncoder(Bundle(enc, f, {"version": "t"}), device="cpu")
    got = ue.featurize(tiny_events.sample(fraction=1.0, shuffle=True, seed=3), workers=3)
    assert list(got.user_ids) == list(data.user_ids)
    np.testing.assert_array_equal(got.offsets, data.offsets)
    assert got.as_of == data.as_of
    for k, v in data.fields.items():
        np.testing.assert_array_equal(got.fields[k], v, err_msg=k)
