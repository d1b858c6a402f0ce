"""The calibrated goal propensity of a goal-aware bundle, read off its embeddings (training fits it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.errors import BundleError
from embeddings.features.featurizer import SequenceData
from embeddings.model.bundle import HEAD_FILE, META_FILE, Bundle, load_bundle, read_propensity_meta
from embeddings.model.embed import UserEncoder
from embeddings.model.intent import IntentConfig, IntentEncoder, propensity_from_embedding


@dataclass
class PropensityHead:
    """The calibrated propensity of a goal-aware bundle, read off its (d + 1)-dim embeddings."""

    intent: IntentConfig
    meta: dict[str, Any]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n,) float64 from goal-aware embeddings (n, d + 1)."""
        return propensity_from_embedding(X, self.intent)

    @classmethod
    def load(cls, bundle_dir: str | Path) -> PropensityHead:
        meta = read_propensity_meta(bundle_dir)
        if meta is None:
            raise BundleError(
                f"Bundle {bundle_dir} has no propensity head ({HEAD_FILE}, {META_FILE}); train it with a goal "
                "(`seqcohort run --goal purchase --horizon 90d`)."
            )
        return cls(IntentConfig(**meta["embedding"]), meta)


def predict_propensity(bundle: str | Path | Bundle, sequences: SequenceData | pl.DataFrame,
                       *, as_of: datetime | None = None) -> np.ndarray:
    """Calibrated goal probability per user of `sequences`: (n_users,) float64, rows in user order."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if not isinstance(b.encoder, IntentEncoder):
        raise BundleError("This bundle has no propensity head; train it with a goal "
                          "(`seqcohort run --goal purchase --horizon 90d`).")
    return propensity_from_embedding(UserEncoder(b).encode(sequences, as_of=as_of).vectors, b.encoder.intent)
