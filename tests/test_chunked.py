"""Embedding in chunks of users (embeddings/model/chunked.py) gives what one pass gives."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from embeddings.data.schema import sort_by_user_time
from embeddings.model.chunked import encode_in_chunks, user_chunks
from embeddings.model.embed import UserEncoder


@pytest.fixture(scope="module")
def encoder(trained_workspace) -> UserEncoder:
    return UserEncoder.load(trained_workspace / "current" / "encoder", device="cpu")


def test_chunks_keep_each_users_events_together_and_lose_none(synth_small) -> None:
    events = synth_small.events.sample(fraction=1.0, shuffle=True, seed=1)  # time-ordered logs are not user-sorted
    parts = list(user_chunks(events, 70))
    assert sum(p.height for p in parts) == events.height
    users = [set(p["user_id"].unique()) for p in parts]
    assert all(len(u) <= 70 for u in users) and sum(len(u) for u in users) == events["user_id"].n_unique()
    with pytest.raises(ValueError, match="chunk_users"):
        next(user_chunks(events, 0))


def test_a_sorted_log_is_cut_into_slices_of_whole_users(synth_small) -> None:
    events = sort_by_user_time(synth_small.events)
    parts = list(user_chunks(events, 70))
    assert pl.concat(parts).equals(events)  # in order, nothing lost or repeated
    shuffled = user_chunks(events.sample(fraction=1.0, shuffle=True, seed=1), 70)
    assert [sorted(p["user_id"].unique()) for p in parts] == [sorted(p["user_id"].unique()) for p in shuffled]


def test_chunked_embeddings_equal_one_pass(encoder: UserEncoder, synth_small) -> None:
    events = synth_small.events
    as_of = datetime.fromisoformat(str(synth_small.as_of))
    data = encoder.featurize(events, as_of)
    whole = encoder.encode(data)
    got = encode_in_chunks(encoder, events.sample(fraction=1.0, shuffle=True, seed=2), as_of, chunk_users=97)
    assert got.user_ids.tolist() == np.asarray(whole.user_ids).astype(str).tolist()
    np.testing.assert_allclose(got.vectors, whole.vectors, atol=1e-5)
    assert got.lengths.tolist() == np.asarray(data.lengths).tolist()
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (events["user_id"].n_unique(), encoder.dim)


def test_user_ids_of_other_types_are_chunked_as_strings(encoder: UserEncoder, synth_small) -> None:
    ids = {u: i for i, u in enumerate(sorted(synth_small.events["user_id"].unique()))}
    events = synth_small.events.with_columns(pl.col("user_id").replace_strict(ids, return_dtype=pl.Int64).cast(pl.String))
    as_of = datetime.fromisoformat(str(synth_small.as_of))
    got = encode_in_chunks(encoder, events, as_of, chunk_users=250)
    whole = encoder.encode(encoder.featurize(events, as_of))
    np.testing.assert_allclose(got.vectors, whole.vectors, atol=1e-5)
