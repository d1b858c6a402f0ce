"""Embedding a large log a chunk of users at a time, so memory holds one chunk's features, not the log's.

Featurising keeps every event's fields as arrays (tens of bytes per event); a million users of a
hundred events each would need gigabytes for features that are used once and thrown away. A user's
features depend only on that user's events and `as_of`, so cutting the users into chunks gives the
same vectors as one pass (tests/test_chunked.py).

    user_ids, X, lengths = encode_in_chunks(encoder, events, as_of)
    embed_events(encoder, events, "embeddings.parquet")     # what `seqcohort embed` runs
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from embeddings.data.schema import is_user_time_sorted
from embeddings.memory import release_memory
from embeddings.model.embed import UserEncoder, write_embeddings

log = logging.getLogger(__name__)

CHUNK_USERS = 50_000  # users featurised at once (docs/decisions.md#users-embedded-in-chunks)


class ChunkedEmbeddings(NamedTuple):
    user_ids: np.ndarray  # (n,) user ids as strings, sorted as `UserEncoder.featurize` sorts them
    vectors: np.ndarray  # (n, dim) float32
    lengths: np.ndarray  # (n,) events per user (whole history up to as_of)


def user_chunks(events: pl.DataFrame, chunk_users: int = CHUNK_USERS) -> Iterator[pl.DataFrame]:
    """The events of consecutive runs of `chunk_users` users in sorted id order (all of a user's events together)."""
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be at least 1, got {chunk_users}")
    uid = pl.col("user_id").cast(pl.String)
    if is_user_time_sorted(events):  # read_events' order: each chunk is a slice, not a copy
        first = np.flatnonzero(events.select((uid != uid.shift(1)).fill_null(True)).to_series().to_numpy())
        bounds = [*first[::chunk_users], events.height]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
            yield events.slice(int(lo), int(hi - lo))
        return
    ids = events.select(uid.unique().sort()).to_series()
    if len(ids) <= chunk_users:
        yield events
        return
    for s in range(0, len(ids), chunk_users):
        lo, hi = ids[s], ids[min(s + chunk_users, len(ids)) - 1]
        yield events.filter(uid.is_between(pl.lit(lo), pl.lit(hi), closed="both"))


def encode_in_chunks(encoder: UserEncoder, events: pl.DataFrame, as_of: datetime, *, chunk_users: int = CHUNK_USERS,
                     batch_size: int | None = None, show_progress: bool = False) -> ChunkedEmbeddings:
    """`encoder.encode(encoder.featurize(events, as_of))` with at most `chunk_users` users featurised at once.

    `as_of` is required: without it each chunk would measure recency to its own latest event.
    """
    t0 = time.perf_counter()
    ids, vecs, lens = [], [], []
    for part in user_chunks(events, chunk_users):
        data = encoder.featurize(part, as_of)
        ids.append(np.asarray(data.user_ids).astype(str))
        vecs.append(encoder.encode(data, batch_size=batch_size, show_progress=show_progress).vectors)
        lens.append(np.asarray(data.lengths))
        del data, part
        release_memory()  # the chunk's features, before the next chunk's
    out = ChunkedEmbeddings(np.concatenate(ids), np.concatenate(vecs), np.concatenate(lens))
    dt = time.perf_counter() - t0
    log.info("embedded %d users in %d chunk(s) in %.1fs (%.0f users/s)", len(out.user_ids), len(ids), dt,
             len(out.user_ids) / max(dt, 1e-9))
    return out


def embed_events(encoder: UserEncoder, events: pl.DataFrame, out: str | Path | None = None, *,
                 as_of: datetime | None = None, batch_size: int | None = None, chunk_users: int = CHUNK_USERS,
                 show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Featurise + encode all users in chunks; optionally write `embeddings.parquet`. Returns (user_ids, X).

    `as_of` defaults to the latest event of the whole log.
    """
    as_of = as_of or events.get_column("ts").max()  # type: ignore[assignment]
    got = encode_in_chunks(encoder, events, as_of, chunk_users=chunk_users, batch_size=batch_size,  # type: ignore[arg-type]
                           show_progress=show_progress)
    if out is not None:
        write_embeddings(out, got.user_ids, got.vectors, as_of)
    return got.user_ids, got.vectors
