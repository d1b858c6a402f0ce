"""Habit profile: what share of a user's events fall on each event type, category and hour, and what
each kind of event is followed by.

Contrastive training keeps what tells one user from another and lets go of what a whole group
shares: two archetypes that differ only in their usual order of events (browse then buy, or buy
then browse) end up close in the learned space, though their shares of event pairs tell them
apart (docs/decisions.md#habit-profile-in-every-embedding). The habit profile puts those habits back,
next to the learned part, as a fixed function of the events the encoder sees:

    raw(u) = concat over fields f of sqrt(w_f * share of u's events with value v in f) / sqrt(sum w)

Square-root shares make Euclidean distance a weighted Hellinger distance between two users' habit
distributions; each field's block has norm sqrt(w_f / sum w).

Order is the "next" block: one row per previous state (an event type, or "session start"), holding
the square roots of the user's shares of what came next, P(next | previous), a Markov chain over
the user's sessions. A row is a distribution of its own, so a rare event's row counts as much as a
common one's: after a purchase the restocker goes on browsing, while the researcher's purchases
end sessions (the row stays at the mean), whatever share of events purchases are. Joint pair shares (the older "transition" field, kept
for comparison) scale each row by how often its event occurs, and left that
difference too small to part the order twins (docs/decisions.md#habit-profile-blocks-and-weights).
The first event of each session is the row "session start": a session's first
event is not caused by the last event of the previous session. A row seen n times is shrunk
toward the training users' mean row by n / (n + NEXT_PRIOR): one observed purchase is not a
habit, and a row never seen (a one-event history) is exactly the mean, i.e. unknown, not "none".

Event shares weigh 2 and "next" rows 3: without joint pairs, event shares alone carry how often
users review, refund or buy (docs/decisions.md#habit-profile-blocks-and-weights).

A PCA fitted on the training users (stored with the encoder as buffers, `profile_mean` doubling
as the imputed value) keeps `k` directions. The encoder joins the projection's direction, not its
size (embeddings/model/encoder.py), so every user whose habits differ from the mean gets the full
profile length; only a profile exactly at the mean adds nothing. On a log where habits do not
vary (one event type, no categories, dates without times, as CDNOW) that is everyone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from embeddings.features.featurizer import MISSING, TRANSITION_TYPES

# field -> weight of its block in the profile, in this order; fields the featurizer lacks are
# skipped. "next" (P(next event | previous event or session start)) is read from the "transition"
# and "session_pos" fields. Weekday and amount-bucket shares were tried and gained nothing
# (docs/decisions.md#habit-profile-blocks-and-weights)
PROFILE_FIELDS = {"event": 2.0, "next": 3.0, "category": 1.0, "hour": 1.0}
# pseudo-count of the "next" rows' shrinkage toward the mean row: n observations weigh n / (n + 4);
# less splits groups on single rare events, more fades the order habit (docs/decisions.md#habit-profile-next-row-shrinkage)
NEXT_PRIOR = 4.0
_NEEDS = {"next": ("transition", "session_pos")}  # derived blocks and the featurizer fields they read


def _source(name: str) -> str:
    """The featurizer field a block's columns are values of ("next": the pair ids)."""
    return _NEEDS.get(name, (name,))[0]


def habit_fields(cardinalities: dict[str, int], wanted: dict[str, float]) -> dict[str, float]:
    """The blocks of `wanted` (with their weights) the featurizer's fields allow, in `wanted`'s order."""
    return {f: float(w) for f, w in wanted.items()
            if w > 0 and all(n in cardinalities for n in _NEEDS.get(f, (f,)))}


def block_width(name: str, cardinalities: dict[str, int]) -> int:
    """Columns of one profile block: a field's values, or for "next" (previous, next) event pairs."""
    return cardinalities[_source(name)]


def habit_width(fields: dict[str, float], cardinalities: dict[str, int]) -> int:
    return sum(block_width(f, cardinalities) for f in fields)


def active_columns(fields: dict[str, float], cardinalities: dict[str, int],
                   values: dict[str, np.ndarray]) -> np.ndarray:
    """Profile columns that some event in `values` (featurizer field -> ids) can fill."""
    cols, off = [], 0
    for f in fields:
        if f == "next":  # a pair, or (session start, event) for the first event of a session
            tr = np.unique(values["transition"])
            ids = np.union1d(tr, MISSING * TRANSITION_TYPES + tr % TRANSITION_TYPES)
        else:
            ids = np.unique(values[f])
        cols.append(ids + off)
        off += block_width(f, cardinalities)
    return np.concatenate(cols)


def habit_raw(
    batch: dict[str, torch.Tensor], fields: dict[str, float], cardinalities: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted square-root shares over each row's events, and how much each column is to be trusted.

    Returns (raw (B, habit_width), weight (B, habit_width) in [0, 1]). The centred profile is
    `weight * (raw - mean)`: a share block weighs 1 on every column where the row has at least one
    value of that field and 0 where it has none; a "next" row seen n times weighs n / (n + NEXT_PRIOR).
    Padding (id 0) never counts; nor, in the joint "transition" block, does a history's first event.
    """
    lengths = batch["lengths"]
    B = lengths.shape[0]
    T = int(batch[_source(next(iter(fields)))].shape[1])
    valid = (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]).float()  # (B, T)
    total = math.sqrt(sum(fields.values()))
    parts, weights = [], []
    for name, w in fields.items():
        if name == "next":
            raw, weight = _next_block(batch, valid, w)
            parts.append(raw)
            weights.append(weight)
            continue
        ids = batch[name].long()
        mask = valid
        if name == "transition":  # ids p * TRANSITION_TYPES + e; p = MISSING: no previous event
            mask = valid * (ids // TRANSITION_TYPES != MISSING).float()
        ids = ids * mask.long()  # uncounted positions -> id 0, added with weight 0
        counts = torch.zeros(B, cardinalities[name], device=lengths.device).scatter_add_(1, ids, mask)
        n = counts.sum(1, keepdim=True)
        parts.append((counts * (w / n.clamp(min=1.0))).sqrt())
        weights.append((n > 0).float().expand(B, cardinalities[name]))
    return torch.cat(parts, dim=1) / total, torch.cat(weights, dim=1)


def habit_matrix(featurizer, data, rows: np.ndarray, fields: dict[str, float], cardinalities: dict[str, int],
                 max_len: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`habit_raw` of users `rows` of a SequenceData over their last `max_len` events, on the columns
    some event can fill: (raw (n, a), weight (n, a), active (a,) column ids). Columns no event fills
    never vary, so leaving them out keeps a PCA fit small."""
    active = active_columns(fields, cardinalities, data.fields)
    cols = torch.from_numpy(active)
    raw = np.empty((len(rows), len(active)), dtype=np.float32)
    weight = np.empty((len(rows), len(active)), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            batch = featurizer.collate_users(data, rows[s : s + batch_size], max_len)
            r, v = habit_raw(batch, fields, cardinalities)
            raw[s : s + batch_size], weight[s : s + batch_size] = r[:, cols].numpy(), v[:, cols].numpy()
    return raw, weight, active


def _next_block(batch: dict[str, torch.Tensor], valid: torch.Tensor, w: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(w * P(next | previous)) per previous state, and each row's weight n / (n + NEXT_PRIOR).

    Row = previous state (event id, or MISSING for "session start"); column = next event id. A
    session's last event has no "next". An end state was tried and not kept: on a log with one event
    type and dates only, P(end | purchase) turns the profile from zero into "one purchase a day or
    several" (docs/decisions.md#habit-profile-blocks-and-weights).
    """
    tt = TRANSITION_TYPES
    ids = batch["transition"].long()
    prev = torch.where(batch["session_pos"] == 1, MISSING, ids // tt)  # session start is its own state
    cell = (prev * tt + ids % tt) * valid.long()
    B = ids.shape[0]
    counts = torch.zeros(B, tt * tt, device=ids.device).scatter_add_(1, cell, valid).view(B, tt, tt)
    n = counts.sum(2, keepdim=True)  # (B, tt, 1) times each previous state was seen
    raw = (counts * (w / n.clamp(min=1.0))).sqrt().view(B, tt * tt)
    return raw, (n / (n + NEXT_PRIOR)).expand(B, tt, tt).reshape(B, tt * tt)


def fit_habit_pca(raw: np.ndarray, weight: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (P,), basis (P, k)) of the top-`k` principal directions of `weight * (raw - mean)` (n, P).

    The mean of each column is taken over the rows where its weight is above 0 (`habit_raw`);
    unseen entries (weight 0) sit at the mean and add no variance, partly seen ones are pulled toward
    it. Columns that never vary get zero rows; with fewer than `k` directions of variance the rest of
    the basis is zero. Each direction's sign is fixed (largest-magnitude entry positive), so the same
    data gives the same basis.
    """
    raw = np.asarray(raw, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, P = raw.shape
    seen = weight > 0
    mean = (raw * seen).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    X = weight * (raw - mean)
    basis = np.zeros((P, k), dtype=np.float64)
    active = np.flatnonzero(X.std(axis=0) > 1e-7)  # float noise on a constant column is not variance
    if n < 2 or len(active) == 0:
        return mean.astype(np.float32), basis.astype(np.float32)
    _, s, vt = np.linalg.svd(X[:, active], full_matrices=False)
    m = min(k, int((s > 1e-9 * max(s[0], 1e-30)).sum()))
    v = vt[:m].T  # (active, m)
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(m)])
    basis[active, :m] = v * signs
    return mean.astype(np.float32), basis.astype(np.float32)
