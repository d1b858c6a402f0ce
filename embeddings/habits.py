"""Habit profile: what share of a user's events fall on each event type, event pair, category, hour.

Contrastive training keeps what tells one user from another and lets go of what a whole group
shares: two archetypes that differ only in their usual order of events (browse then buy, or buy
then browse) end up close in the learned space (linear probe 0.62 on the learned embedding, 0.93
on pair shares; bench/RESULTS.md). The habit profile puts those shares back, next to the learned
part, as a fixed function of the events the encoder sees:

    raw(u) = concat over fields f of sqrt(w_f * share of u's events with value v in f) / sqrt(sum w)

Square-root shares make Euclidean distance a weighted Hellinger distance between two users' habit
distributions; each field's block has norm sqrt(w_f / sum w), so `raw` has unit norm. Event pairs
weigh 3: they carry both what users do and in which order, the part contrastive training loses
most (held-out generator, archetype ARI 0.677 with all weights 1 -> 0.748 with pairs at 3).

Pairs are (previous event, event) of consecutive events; a history's first event has no pair (its
"start" pair would only say how long the history is, which the frequency coordinate already
holds). A block with nothing observed (a one-event history has no pairs) takes the training
users' mean block: unknown, not "none". So on a log where habits do not vary (one event type, no
categories, dates without times) the profile is the same for everyone and adds nothing.

A PCA fitted on the training users (stored with the encoder as buffers, `profile_mean` doubling
as the imputed value) keeps `k` directions. It is not rescaled per data set: where habits hardly
vary the profile stays small and the learned part decides.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from embeddings.features import MISSING, TRANSITION_TYPES

# field -> weight of its value shares in the profile, in this order; fields the featurizer lacks are
# skipped. Weekday and amount-bucket shares were tried: no gain on either synthetic generator
# (held-out generator ARI 0.747 -> 0.726 with them at 16 directions; bench/RESULTS.md)
PROFILE_FIELDS = {"event": 1.0, "transition": 3.0, "category": 1.0, "hour": 1.0}


def habit_fields(cardinalities: dict[str, int], wanted: dict[str, float]) -> dict[str, float]:
    """The fields of `wanted` (with their weights) that the featurizer produces, in `wanted`'s order."""
    return {f: float(w) for f, w in wanted.items() if f in cardinalities and w > 0}


def habit_raw(
    batch: dict[str, torch.Tensor], fields: dict[str, float], cardinalities: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted square-root value shares over each row's events, and which blocks were observed.

    Returns (raw (B, sum of cardinalities), seen (B, sum of cardinalities) bool): `seen` is True on
    every column of a field's block when the row has at least one value of that field. Padding
    (id 0) and a history's first-event pair never count; unseen blocks are zero in `raw`.
    """
    lengths = batch["lengths"]
    ref = batch[next(iter(fields))]
    B, T = ref.shape
    valid = (torch.arange(T, device=ref.device)[None, :] < lengths[:, None]).float()  # (B, T)
    parts, seen = [], []
    for name, w in fields.items():
        ids = batch[name].long()
        mask = valid
        if name == "transition":  # ids p * TRANSITION_TYPES + e; p = MISSING: no previous event
            first = (ids >= MISSING * TRANSITION_TYPES) & (ids < (MISSING + 1) * TRANSITION_TYPES)
            mask = valid * (~first).float()
        ids = ids * mask.long()  # uncounted positions -> id 0, added with weight 0
        counts = torch.zeros(B, cardinalities[name], device=ref.device).scatter_add_(1, ids, mask)
        n = counts.sum(1, keepdim=True)
        parts.append((counts * (w / n.clamp(min=1.0))).sqrt())
        seen.append((n > 0).expand(B, cardinalities[name]))
    return torch.cat(parts, dim=1) / math.sqrt(sum(fields.values())), torch.cat(seen, dim=1)


def fit_habit_pca(raw: np.ndarray, seen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean (P,), basis (P, k)) of the top-`k` principal directions of `raw` (n, P).

    The mean of each column is taken over the rows where it was `seen`; unseen entries are set to
    it before the PCA (so they add no variance). Columns that never vary get zero rows; with fewer
    than `k` directions of variance the rest of the basis is zero. Each direction's sign is fixed
    (largest-magnitude entry positive), so the same data gives the same basis.
    """
    raw = np.asarray(raw, dtype=np.float64)
    seen = np.asarray(seen, dtype=bool)
    n, P = raw.shape
    mean = (raw * seen).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    raw = np.where(seen, raw, mean)
    basis = np.zeros((P, k), dtype=np.float64)
    active = np.flatnonzero(raw.std(axis=0) > 1e-7)  # float noise on a constant column is not variance
    if n < 2 or len(active) == 0:
        return mean.astype(np.float32), basis.astype(np.float32)
    X = raw[:, active] - mean[active]
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    m = min(k, int((s > 1e-9 * max(s[0], 1e-30)).sum()))
    v = vt[:m].T  # (active, m)
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(m)])
    basis[active, :m] = v * signs
    return mean.astype(np.float32), basis.astype(np.float32)
