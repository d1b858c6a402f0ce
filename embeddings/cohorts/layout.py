"""Where an embedding keeps the number of events it summarises: read by the confidence model and
the short-history head, which both need a user's history length from the embedding row alone."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["frequency_layout", "log_events"]


def frequency_layout(cfg: Any) -> dict[str, float] | None:
    """Where an embedding of this EncoderConfig keeps its frequency coordinate, and its scaling."""
    if cfg.frequency <= 0:
        return None
    learned = cfg.learned_dim
    return {"learned": learned, "index": learned + int(cfg.recency > 0), "weight": cfg.frequency,
            "mean": cfg.frequency_mean, "std": cfg.frequency_std}


def log_events(X: np.ndarray, layout: dict[str, float]) -> np.ndarray:
    """log1p(events summarised) of each embedding row, read off its frequency coordinate.

    The learned part is a unit vector before the state coordinates join it and every later step
    scales the row as a whole, so coordinate / norm(learned part) is the standardised value.
    """
    X = np.asarray(X, dtype=np.float64)
    learned = int(layout["learned"])
    norm = np.linalg.norm(X[:, :learned], axis=1).clip(min=1e-12)
    return X[:, int(layout["index"])] / norm / layout["weight"] * layout["std"] + layout["mean"]
