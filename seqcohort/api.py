"""The public Python API: `import seqcohort as sc`.

    data = sc.synthetic(users=600, seed=0)
    encoder = sc.Encoder.train(data.events, sc.load_config(sets=["trainer.max_steps=60"]))
    model = sc.CohortModel().fit(data.events, encoder)
    sc.Workspace("ws").publish(model)
    sc.Workspace("ws").load().assign(new_events)
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from embeddings.cohorts.model import CohortModel
from embeddings.config import Config
from embeddings.config import load_config as _load_config
from embeddings.evaluation.goals import Goal, parse_goal
from embeddings.model.embed import Embeddings, UserEncoder
from embeddings.naming import make_namer
from embeddings.synthetic.synth import SynthData, generate
from embeddings.workspace import Workspace
from seqcohort import pipeline

__all__ = ["CohortModel", "Config", "Embeddings", "Encoder", "Goal", "SynthData", "Workspace", "load_config",
           "make_namer", "parse_goal", "read_events", "synthetic"]


def load_config(path: str | Path | None = None, sets: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file `path` <- `sets` ("section.key=value", as the CLI's --set); validated."""
    return _load_config(path, tuple(sets))


def read_events(path: str | Path, columns: Mapping[str, str] | None = None, config: Config | None = None) -> pl.DataFrame:
    """Read and validate an event file into canonical columns (user_id, ts, event, item, ...).

    `columns` maps canonical names to yours, e.g. {"user_id": "CustomerID", "ts": "InvoiceDate"};
    `config.data` gives the rest (strict/lenient mode, timestamp format, event_default, ...).
    Bad rows raise a SchemaError naming the rows and the fix (lenient mode quarantines them).
    """
    maps = [f"{k}={v}" for k, v in (columns or {}).items()]
    return pipeline.load_events(path, config if config is not None else Config(), maps)


def synthetic(users: int = 2000, seed: int = 0, short_share: float = 0.05) -> SynthData:
    """A synthetic event log with planted behavioural archetypes: `.events`, `.truth`, `.catalog`."""
    return generate(users, seed=seed, short_share=short_share)


class Encoder(UserEncoder):
    """A trained event-sequence encoder: `encode(events) -> (user_ids, vectors)`.

    `Encoder.train(events, config)` trains one (contrastive, in Lightning); `Encoder.load(dir)`
    reads a bundle directory (a workspace version's `encoder/`).
    """

    @classmethod
    def train(cls, events: pl.DataFrame, config: Config | None = None, *, out: str | Path | None = None,
              as_of: datetime | None = None, goal: Goal | None = None, device: str | None = "auto") -> Encoder:
        """Train on `events` and save the bundle to `out` (default: a new temporary directory).

        With a `goal` (`sc.parse_goal("purchase", "90d")`) the encoder is goal-aware: its
        embeddings carry a calibrated propensity and cohorts become intent tiers x behaviour.
        """
        cfg = config if config is not None else Config()
        bundle_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="seqcohort-encoder-"))
        trained = pipeline.train_bundle(cfg, events, bundle_dir, as_of=as_of, goal=goal)
        return cls(trained.bundle, device, trained.bundle_dir)


