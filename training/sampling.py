"""Sub-sequence views of a user's history for contrastive training.

Views of one user are positives for each other; views of other users in the batch are negatives.

- "suffix": each view is the most recent ℓ events (ℓ log-uniform in [1, n]) with random event
  dropout that never removes the most recent event. Recency survives, and short views teach the
  encoder to place a 1-3 event live session where the user's full history lies (cold start).
- "coles": CoLES random contiguous slices anywhere in the history (ℓ uniform in [min, n]).
- "split": one random window dealt out into disjoint views: no event appears in two views.
- "mixed": each view picks suffix or coles at random.

Shuffled-order copies (`shuffle_within_sessions`) are hard negatives: the same events in the same
time slots, only their order inside each session permuted. Telling a view from its shuffled copy
needs the order of events, which nothing else in the contrastive task asks for.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# Fields the featurizer derives from timestamps alone (embeddings/features/featurizer.py): they belong to the
# time slot, so a shuffled copy keeps them in place while the events' own fields move.
TIME_FIELDS = frozenset({"gap", "session_pos", "recency", "log_recency", "hour", "weekday"})
# Fields derived from the previous event: recomputed after reordering (field -> its source).
PREV_FIELDS = {"prev_event": "event"}
# Fields a copy recomputes from its new order rather than moving with the events.
REORDER_DERIVED = frozenset({*PREV_FIELDS, "transition"})


def suffix_view(start: int, end: int, max_len: int, dropout: float, rng: np.random.Generator) -> np.ndarray:
    n = min(end - start, max_len)
    ell = int(np.clip(np.round(np.exp(rng.uniform(0.0, np.log(n + 0.999)))), 1, n))
    idx = np.arange(end - ell, end)
    if dropout > 0 and ell > 2:
        keep = rng.random(ell) >= dropout
        keep[-1] = True
        idx = idx[keep]
    return idx


def coles_view(
    start: int,
    end: int,
    max_len: int,
    dropout: float,
    rng: np.random.Generator,
    min_frac: float = 0.3,
    short_prob: float = 0.0,
) -> np.ndarray:
    """A random contiguous slice; with probability `short_prob` only 1-3 events long.

    Short slices teach the encoder to place a user's few-event session near their full history,
    which is what cold-start assignment of live sessions relies on.
    """
    n = end - start
    if short_prob > 0 and n > 3 and rng.random() < short_prob:
        ell = int(rng.integers(1, 4))
        s = start + int(rng.integers(0, n - ell + 1))
        return np.arange(s, s + ell)
    lo = max(1, int(np.ceil(min_frac * min(n, max_len))))
    ell = int(rng.integers(lo, min(n, max_len) + 1))
    s = start + int(rng.integers(0, n - ell + 1))
    idx = np.arange(s, s + ell)
    if dropout > 0 and ell > 2:
        idx = idx[rng.random(ell) >= dropout] if ell > 2 else idx
        if len(idx) == 0:
            idx = np.arange(s + ell - 1, s + ell)
    return idx


def split_views(
    start: int, end: int, n_views: int, max_len: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint views: a random window of up to n_views * max_len events dealt out at random."""
    n = end - start
    w = min(n, n_views * max_len)
    s = start + int(rng.integers(0, n - w + 1))
    owner = rng.integers(0, n_views, size=w)
    views = [np.arange(s, s + w)[owner == v] for v in range(n_views)]
    # a one-event user still needs a view per slot: reuse the window rather than leave one empty
    return [v if len(v) else np.arange(s, s + w)[-1:] for v in views]


def sample_views(
    offsets: np.ndarray,
    rows: np.ndarray,
    n_views: int,
    max_len: int,
    mode: str,
    dropout: float,
    rng: np.random.Generator,
    short_prob: float = 0.0,
) -> list[np.ndarray]:
    """Returns len(rows) * n_views index arrays, view-major per user: [u0v0, u0v1, u1v0, ...]."""
    out: list[np.ndarray] = []
    for r in rows:
        s, e = int(offsets[r]), int(offsets[r + 1])
        if mode == "split":
            out.extend(split_views(s, e, n_views, max_len, rng))
            continue
        for _ in range(n_views):
            m = mode if mode != "mixed" else ("suffix" if rng.random() < 0.5 else "coles")
            out.append(
                suffix_view(s, e, max_len, dropout, rng)
                if m == "suffix"
                else coles_view(s, e, max_len, dropout, rng, short_prob=short_prob)
            )
    return out


def session_ids(session_pos: np.ndarray) -> np.ndarray:
    """Per event row, a number that changes exactly at each session start (session_pos == 1)."""
    return np.cumsum(session_pos == 1)


def shuffle_within_sessions(
    view: np.ndarray,
    session: np.ndarray,
    opener: np.ndarray,
    rng: np.random.Generator,
    reverse: bool = False,
) -> np.ndarray | None:
    """A random reordering of a view's events that stays inside each session.

    Args:
        view: event rows of one view, in time order.
        session: session id of every event row (`session_ids`).
        opener: True for rows that start a session. Openers stay put: a session start, login or
            landing event out of first place would make the copy trivial to spot, and the encoder
            would learn that cue instead of the order of the rest.
        reverse: reverse the movable events of each session instead of shuffling them: the
            copy farthest in order (browse-then-buy becomes buy-then-browse).

    Returns:
        perm (len(view),): slot j of the copy takes the event from slot perm[j]; never the
        identity. None when no session of the view has two movable events.
    """
    n = len(view)
    s = session[view]
    mv = np.flatnonzero(~opener[view])
    if len(mv) < 2:
        return None
    sm = s[mv]
    same = sm[1:] == sm[:-1]  # consecutive movable slots in one session
    if not same.any():
        return None
    perm = np.arange(n)
    key = -np.arange(len(mv)) if reverse else rng.random(len(mv))
    perm[mv] = mv[np.lexsort((key, sm))]  # sessions stay in time order
    if np.array_equal(perm, np.arange(n)):
        i = int(rng.choice(np.flatnonzero(same)))  # swap two neighbours of one session instead
        perm[mv[i]], perm[mv[i + 1]] = mv[i + 1], mv[i]
    return perm


def prev_from(view: np.ndarray) -> np.ndarray:
    """(len(view),) bool: slot j's previous event row is slot j-1 (so its prev_* fields follow it)."""
    out = np.zeros(len(view), dtype=bool)
    out[1:] = view[1:] == view[:-1] + 1
    return out


def sample_users(events: pl.DataFrame, max_users: int | None, seed: int = 0) -> pl.DataFrame:
    """The events of at most `max_users` users drawn at random (all of each drawn user's events); None = all.

    Training draws `max_steps x batch_size` users; on a log of millions the rest would only cost
    memory to featurise. The draw depends on the seed and the set of ids, not on the row order.
    """
    ids = events.get_column("user_id").unique().sort()
    if max_users is None or len(ids) <= max_users:
        return events
    keep = ids.gather(np.sort(np.random.default_rng(seed).choice(len(ids), max_users, replace=False)))
    return events.filter(pl.col("user_id").is_in(keep))
