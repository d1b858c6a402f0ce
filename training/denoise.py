"""Keep the directions of the learned part that a user's own events agree on.

Contrastive training spreads the learned part over all `model.dim` outputs, but on a log with little
behaviour per user most of that spread is per-event noise, and a linear probe fits weights to it
(docs/decisions.md#denoising-the-learned-part). After training, `fit_learned_basis` embeds each
sampled user's odd and even events apart, measures per principal direction of the whole histories'
learned part the correlation between the two halves, and keeps the directions holding at least
`MIN_SHARE` of the variance whose correlation reaches `min_agreement`; the encoder rebuilt with them
(`EventEncoder.with_learned_basis`) projects onto them in `EventEncoder.denoise`. A log with real
behaviour keeps its structure.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from embeddings.config import Config
from embeddings.features.featurizer import Featurizer, SequenceData
from embeddings.model.encoder import EventEncoder
from training.steps import Stepped

log = logging.getLogger(__name__)

# directions under this share of the variance are dropped however well they agree: they hold almost
# none of what tells users apart (docs/decisions.md#denoising-the-learned-part)
MIN_SHARE = 0.01
MIN_USERS = 50  # users with 2+ events needed to measure agreement at all
MAX_USERS = 4000


def _learned(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, index_lists: list[np.ndarray],
             batch_size: int) -> np.ndarray:
    """(n, learned) learned part (before denoising) of each event-row list."""
    device = next(encoder.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(index_lists), batch_size):
            batch = featurizer.collate(data, index_lists[s : s + batch_size], encoder.cfg.max_len)
            out.append(encoder.learned({k: v.to(device) for k, v in batch.items()}).double().cpu().numpy())
    return np.concatenate(out)


def fit_learned_basis(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, *,
                      min_agreement: float, seed: int = 0, max_users: int = MAX_USERS,
                      batch_size: int = 512) -> tuple[EventEncoder, dict[str, Any]]:
    """(the encoder with a learned basis (see module doc), what was measured); `encoder` is left as it is.

    The encoder comes back unchanged (learned_rank 0) when `min_agreement` is 0, fewer than
    MIN_USERS users have 2+ events, or every direction passes. At least the best-agreeing direction is kept.
    """
    if min_agreement <= 0 or encoder.cfg.learned_rank:
        return encoder, {}
    lengths = np.diff(data.offsets)
    rows = np.flatnonzero(lengths >= 2)
    if len(rows) < MIN_USERS:
        return encoder, {"learned_rank": 0, "reason": f"only {len(rows)} users with 2+ events"}
    if len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    was = encoder.training
    encoder.eval()
    m = encoder.cfg.max_len
    whole = [np.arange(max(data.offsets[r], data.offsets[r + 1] - m), data.offsets[r + 1]) for r in rows]
    recent = [np.arange(max(data.offsets[r], data.offsets[r + 1] - 2 * m), data.offsets[r + 1]) for r in rows]
    full = _learned(encoder, featurizer, data, whole, batch_size)
    odd = _learned(encoder, featurizer, data, [ix[len(ix) % 2 :: 2] for ix in recent], batch_size)
    even = _learned(encoder, featurizer, data, [ix[1 - len(ix) % 2 :: 2] for ix in recent], batch_size)
    encoder.train(was)
    mean = full.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(full, rowvar=False))
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    share = values / max(values.sum(), 1e-12)
    a, b = (odd - mean) @ vectors, (even - mean) @ vectors
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    agreement = np.where(denom > 1e-12, (a * b).sum(axis=0) / np.maximum(denom, 1e-12), 0.0)
    big = share >= MIN_SHARE
    keep = np.flatnonzero(big & (agreement >= min_agreement))
    if len(keep) == 0:
        keep = np.array([int(np.argmax(np.where(big, agreement, -np.inf)))])
    info = {"users": int(len(rows)), "directions": int(big.sum()),
            "agreement": [round(float(x), 3) for x in agreement[big]],
            "share": [round(float(x), 4) for x in share[big]]}
    if len(keep) == full.shape[1]:
        return encoder, {"learned_rank": 0, **info}
    device = next(encoder.parameters()).device
    denoised = encoder.with_learned_basis(torch.from_numpy(mean).to(device),
                                          torch.from_numpy(vectors[:, keep]).to(device))
    kept = float(share[keep].sum())
    log.info("learned part: %d of %d directions kept (%.0f%% of its variance; odd/even agreement >= %.2f)",
             len(keep), full.shape[1], 100 * kept, min_agreement)
    return denoised, {"learned_rank": int(len(keep)), "kept_share": round(kept, 4), **info}


def denoise_step(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, cfg: Config) -> Stepped:
    """Post-fit step: `fit_learned_basis` at `model.denoise`; the kept rank goes into the metrics and
    what was measured into the manifest's "denoise" (nothing when it did not run)."""
    encoder, info = fit_learned_basis(encoder, featurizer, data, min_agreement=cfg.model.denoise,
                                      seed=cfg.trainer.seed)
    metrics = {"learned_rank": float(info["learned_rank"])} if "learned_rank" in info else {}
    return Stepped(encoder, metrics, {"denoise": info} if info else {})
