"""`train(cfg, events, bundle_dir) -> TrainResult`: a plain function; the CLI only wraps it.

The fit itself (seeding, Trainer, metrics) and the post-fit steps are `training.core`'s, shared
with goal-aware training (`training.propensity.train_goal_aware`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from embeddings.config import Config
from embeddings.features.featurizer import (
    CONTEXT_DAYS,
    CONTEXT_SPEND,
    N_CONTEXT,
    Featurizer,
    FeaturizerConfig,
    SequenceData,
    data_fingerprint,
)
from embeddings.features.habits import PROFILE_FIELDS, habit_fields
from embeddings.model.bundle import Bundle, save_bundle
from embeddings.model.encoder import EncoderConfig, EventEncoder, recency_value
from training.core import Distributed, contrastive_args, fit, post_fit, start
from training.datamodule import SequenceDataModule
from training.module import ContrastiveModule
from training.profile_select import fit_profile
from training.sampling import sample_users

log = logging.getLogger(__name__)

RECENCY_CLIP = 3.0  # standard deviations: users years gone would otherwise be mostly recency in a unit row


@dataclass
class TrainResult:
    bundle: Bundle
    bundle_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    sequences_per_s: float = 0.0  # training views processed per second


def state_stats(data: SequenceData | None, featurizer: Featurizer | None = None,
                recency_shape: str = "log") -> dict[str, float]:
    """Mean and std over the training users of what the state coordinates read (EncoderConfig):
    the most recent event's recency (`recency_value` of its log_recency), log1p of the events in
    the whole history (not capped at `max_len`: a log whose heavy users hold thousands of lines
    would otherwise show them all at one frequency) and, given the featurizer, the whole history's
    spend and active days as `collate_users` puts them in `history_context`."""
    if data is None or len(data) == 0:
        return {}
    lens = np.diff(data.offsets)
    values = {
        "recency": recency_value(torch.from_numpy(data.fields["log_recency"][data.offsets[1:] - 1].astype(np.float64)),
                                 recency_shape).numpy(),
        "frequency": np.log1p(lens.astype(np.float64)),
    }
    if featurizer is not None:
        ctx = featurizer.view_context(data, np.arange(data.offsets[-1]), lens)
        values["monetary"] = ctx[:, CONTEXT_SPEND].astype(np.float64)
        values["visits"] = ctx[:, CONTEXT_DAYS].astype(np.float64)
    out = {}
    for name, v in values.items():
        std = float(v.std())
        out[f"{name}_mean"], out[f"{name}_std"] = float(v.mean()), std if std > 1e-6 else 1.0
    return out


def build_encoder(cfg: Config, featurizer: Featurizer, data: SequenceData | None = None) -> EventEncoder:
    """A fresh encoder for `cfg`; `data` (the training users) sets the state coordinates' scaling
    and the habit profile's PCA."""
    m = cfg.model
    if data is not None:
        log.info("%s", describe_lengths(data.lengths, m.max_len))
    profile_fields = habit_fields(featurizer.cardinalities, PROFILE_FIELDS)
    if m.profile_category != "auto" and "category" in profile_fields:
        profile_fields["category"] = float(m.profile_category)  # else the default; training may choose another
    enc = EncoderConfig(
        cardinalities=featurizer.cardinalities,
        numeric_fields=featurizer.numeric_fields,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_layers=m.n_layers,
        d_ff=m.d_ff,
        dropout=m.dropout,
        learned_dim=m.dim,
        max_len=m.max_len,
        n_context=N_CONTEXT if m.context else 0,
        recency=m.recency,
        recency_shape=m.recency_shape,
        recency_clip=RECENCY_CLIP,
        frequency=m.frequency,
        monetary=m.monetary,
        visits=m.visits,
        **state_stats(data, featurizer, m.recency_shape),
        profile=m.profile,
        profile_dim=m.profile_dim,
        profile_fields=profile_fields,
    )
    # the habit profile is fitted now: goal-aware training with a BCE term reads whole embeddings
    return fit_profile(EventEncoder(enc), featurizer, data, seed=cfg.trainer.seed)


def fit_featurizer(cfg: Config, events: pl.DataFrame) -> Featurizer:
    f = cfg.features
    return Featurizer(
        FeaturizerConfig(
            item_buckets=f.item_buckets,
            amount_buckets=f.amount_buckets,
            max_vocab=f.max_vocab,
            min_count=f.min_count,
            transitions=f.transitions,
            item_text=f.item_text == "auto",
            item_text_dim=f.item_text_dim,
            item_text_model=f.item_text_model,
            extra_categorical=list(cfg.data.extra_categorical),
            extra_numeric=list(cfg.data.extra_numeric),
        )
    ).fit(events)


def describe_lengths(lengths: np.ndarray, max_len: int) -> str:
    """One line on history lengths: median, max, and how many users pass `max_len`, with what that means."""
    lengths = np.asarray(lengths)
    if not len(lengths):
        return "no users"
    over = int((lengths > max_len).sum())
    head = f"events per user: median {int(np.median(lengths))}, max {int(lengths.max())}"
    if not over:
        return f"{head}; every history fits model.max_len={max_len}"
    return (
        f"{head}; {over} users ({over / len(lengths):.0%}) have more than model.max_len={max_len}: the "
        f"transformer reads their most recent {max_len} events, while frequency, spend and the propensity "
        f"head count the whole history (raise model.max_len to read more; cost grows with it)"
    )


def train(cfg: Config, events: pl.DataFrame, bundle_dir: str | Path, *, as_of=None,
          distributed: Distributed | None = None) -> TrainResult:
    """Fit the featurizer, train the encoder contrastively, save a bundle at `bundle_dir`.

    `distributed` (e.g. `training.ray_train.RayTrain(workers=4)`) runs the fit on its workers.
    """
    started = start(cfg)
    as_of = as_of or events.get_column("ts").max()  # the whole log's, not the sample's
    events = sample_users(events, cfg.trainer.max_users, cfg.trainer.seed)
    featurizer = fit_featurizer(cfg, events)
    data = featurizer.transform(events, as_of=as_of)
    encoder = build_encoder(cfg, featurizer, data)
    log.info("training encoder (%d parameters) on %d users", encoder.num_parameters(), len(data))
    dm = SequenceDataModule(data, featurizer, cfg.trainer, cfg.model.max_len)
    fitted = fit(cfg, ContrastiveModule(encoder, **contrastive_args(cfg.trainer)), dm, started,
                 distributed=distributed)
    done = post_fit(fitted.encoder, featurizer, data, cfg)
    metrics = {**fitted.metrics, **done.metrics}
    bundle = save_bundle(
        bundle_dir,
        done.encoder,
        featurizer,
        data_fingerprint=data_fingerprint(events),
        metrics=metrics,
        extra={"n_users": len(data), "trainer": cfg.trainer.model_dump(), **done.extra},
    )
    log.info("bundle %s saved to %s (%.1fs)", bundle.version, bundle_dir, fitted.seconds)
    return TrainResult(bundle, Path(bundle_dir), metrics, fitted.seconds, fitted.sequences_per_s)
