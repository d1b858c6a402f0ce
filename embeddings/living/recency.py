"""Moving stored embeddings to a later `as_of` without running the transformer.

An embedding is [sqrt(1 - p^2) * normalize([z ; s]) ; p * q] (embeddings/model/encoder.py): z the
unit learned part, s the state coordinates with recency first, q the habit-profile direction.
Only s's recency depends on `as_of` for a user without new events (the learned part is trained
to ignore where a history ends), so it is recomputed exactly from the last event's time and the
row put back together; everything else of the row is kept.
"""

from __future__ import annotations

import numpy as np
import torch

from embeddings.features.featurizer import LOG_RECENCY_SCALE
from embeddings.model.encoder import EncoderConfig, EventEncoder, recency_value


def recency_encoder(module: torch.nn.Module) -> EncoderConfig | None:
    """The config whose recency coordinate can be moved analytically; None when the layout is another
    (a goal-aware encoder appends intent coordinates that also read the time: re-embed instead)."""
    return module.cfg if isinstance(module, EventEncoder) else None


def with_recency(cfg: EncoderConfig, X: np.ndarray, days_before: np.ndarray) -> np.ndarray:
    """`X` (n, dim) with each row's recency coordinate set to `days_before` (n,) its as_of; unit rows."""
    X = np.asarray(X, dtype=np.float32)
    if cfg.recency <= 0 or not len(X):
        return X.copy()
    L, S = cfg.learned_dim, cfg.n_state
    B = X[:, : L + S].astype(np.float64)  # the behaviour part, of length sqrt(1 - p^2) (or 1 with no profile)
    w = np.linalg.norm(B, axis=1, keepdims=True)
    zs = B / np.maximum(np.linalg.norm(B[:, :L], axis=1, keepdims=True), 1e-12)  # [z ; s] with |z| = 1
    lr = torch.from_numpy((np.log1p(np.maximum(days_before, 0.0)) / LOG_RECENCY_SCALE).astype(np.float32))
    r = (recency_value(lr, cfg.recency_shape).double().numpy() - cfg.recency_mean) / cfg.recency_std
    if cfg.recency_clip > 0:
        r = np.clip(r, -cfg.recency_clip, cfg.recency_clip)
    zs[:, L] = cfg.recency * r
    out = X.copy()
    out[:, : L + S] = (zs / np.linalg.norm(zs, axis=1, keepdims=True) * w).astype(np.float32)
    return out
