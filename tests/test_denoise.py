"""The learned part keeps only the directions a user's own events agree on (training/denoise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.model.bundle import load_bundle
from embeddings.model.embed import UserEncoder
from tests.conftest import make_events
from training.train import train


def _learned_part(X: np.ndarray, enc) -> np.ndarray:
    c = enc.bundle.encoder.cfg
    L = X[:, : c.learned_dim].astype(np.float64)
    return L / np.linalg.norm(L, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_small, tiny_cfg_module):
    """A log with planted archetypes and one whose events are drawn independently of the user."""
    tmp = tmp_path_factory.mktemp("denoise")
    noise = make_events(n_users=400, seed=5)
    return {
        "synth": (train(tiny_cfg_module, synth_small.events, tmp / "synth"), synth_small.events),
        "noise": (train(tiny_cfg_module, noise, tmp / "noise"), noise),
    }


@pytest.fixture(scope="module")
def tiny_cfg_module():
    from embeddings.config import load_config
    from tests.conftest import TINY_SETS

    return load_config(overrides=TINY_SETS)


def test_structure_is_kept_and_noise_is_dropped(runs):
    synth, noise = runs["synth"][0].bundle.manifest["denoise"], runs["noise"][0].bundle.manifest["denoise"]
    learned = runs["synth"][0].bundle.encoder.cfg.learned_dim
    assert 0 < noise["learned_rank"] < synth["learned_rank"] < learned
    # what was kept reaches the threshold; the best direction of a log of independent events does not
    assert sum(a >= 0.3 for a in synth["agreement"]) == synth["learned_rank"]
    assert max(noise["agreement"]) < max(synth["agreement"])


def test_embeddings_lie_in_the_kept_directions(runs):
    result, events = runs["synth"]
    enc = UserEncoder(result.bundle)
    L = _learned_part(enc.encode(events).vectors, enc)
    k = result.bundle.encoder.cfg.learned_rank
    s = np.linalg.svd(L - L.mean(axis=0), compute_uv=False)
    # mean + a k-dimensional part, renormalised row by row: rank k + 1 at most
    assert s[k + 1] < 1e-4 * s[0] and s[k - 1] > 1e-2 * s[0]


def test_bundle_round_trip_and_single_user_equal_batch(runs, tmp_path):
    result, events = runs["synth"]
    as_of = events["ts"].max()
    X = UserEncoder(result.bundle).encode(events, as_of=as_of).vectors
    reloaded = UserEncoder(load_bundle(result.bundle_dir))
    assert reloaded.bundle.encoder.cfg.learned_rank == result.bundle.encoder.cfg.learned_rank > 0
    np.testing.assert_allclose(reloaded.encode(events, as_of=as_of).vectors, X, atol=1e-6)
    first = sorted(events["user_id"].unique().to_list())[0]  # rows follow sorted user ids
    one = events.filter(events["user_id"] == first)
    np.testing.assert_allclose(reloaded.encode(one, as_of=as_of).vectors[0], X[0], atol=1e-5)


def test_zero_keeps_every_direction(synth_small, tiny_cfg, tmp_path):
    tiny_cfg.model.denoise = 0.0
    tiny_cfg.trainer.max_steps = 10
    result = train(tiny_cfg, synth_small.events, tmp_path / "b")
    assert result.bundle.encoder.cfg.learned_rank == 0 and "denoise" not in result.bundle.manifest
    assert "learned_rank" not in result.metrics
