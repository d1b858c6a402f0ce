"""`train(cfg, events, bundle_dir) -> TrainResult`: a plain function; the CLI only wraps it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
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
from embeddings.features.habits import PROFILE_FIELDS, fit_habit_pca, habit_fields, habit_matrix
from embeddings.model.bundle import Bundle, save_bundle
from embeddings.model.encoder import EncoderConfig, EventEncoder, recency_value
from training.datamodule import SequenceDataModule
from training.denoise import denoise_trained
from training.module import ContrastiveModule, progress_callbacks, quiet_fit, quiet_lightning
from training.profile_select import CATEGORY_WEIGHTS, choose_category_weight

log = logging.getLogger(__name__)

RECENCY_CLIP = 3.0  # standard deviations: users years gone would otherwise be mostly recency in a unit row
PROFILE_FIT_USERS = 20_000  # users the habit profile's PCA is fitted on (a seeded sample beyond that)


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
    """A fresh encoder for `cfg`; `data` (the training users) sets the state coordinates' scaling."""
    m = cfg.model
    if data is not None:
        log.info("%s", describe_lengths(data.lengths, m.max_len))
    enc = EncoderConfig(
        cardinalities=featurizer.cardinalities,
        numeric_fields=featurizer.numeric_fields,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_layers=m.n_layers,
        d_ff=m.d_ff,
        dropout=m.dropout,
        dim=m.dim,
        max_len=m.max_len,
        n_context=N_CONTEXT if m.context else 0,
        recency=m.recency,
        recency_shape=m.recency_shape,
        recency_clip=RECENCY_CLIP,
        frequency=m.frequency,
        frequency_history=True,
        monetary=m.monetary,
        visits=m.visits,
        **state_stats(data, featurizer, m.recency_shape),
        profile=m.profile,
        profile_dim=m.profile_dim,
        profile_fields=habit_fields(featurizer.cardinalities, PROFILE_FIELDS),
    )
    if m.profile_category != "auto" and "category" in enc.profile_fields:
        enc.profile_fields["category"] = float(m.profile_category)
    enc.dim += enc.n_fixed  # `dim` learned outputs, then the state coordinates and habit profile
    encoder = EventEncoder(enc)
    if enc.n_profile:
        fit_profile(encoder, featurizer, data, seed=cfg.trainer.seed)
    return encoder


def fit_profile(
    encoder: EventEncoder, featurizer: Featurizer, data: SequenceData | None, *, seed: int = 0,
    max_users: int = PROFILE_FIT_USERS, batch_size: int = 1024,
) -> None:
    """Fit the habit profile's PCA (encoder buffers) on up to `max_users` training users' last events."""
    if data is None or len(data) == 0:
        return
    rows = np.arange(len(data))
    if len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    c = encoder.cfg
    raw, weight, active = habit_matrix(featurizer, data, rows, c.profile_fields, c.cardinalities, c.max_len, batch_size)
    active_t = torch.from_numpy(active)
    mean, basis = fit_habit_pca(raw, weight, c.n_profile)
    encoder.profile_mean.zero_()
    encoder.profile_basis.zero_()
    encoder.profile_mean[active_t] = torch.from_numpy(mean)
    encoder.profile_basis[active_t] = torch.from_numpy(basis)


def fit_featurizer(cfg: Config, events: pl.DataFrame) -> Featurizer:
    f = cfg.features
    return Featurizer(
        FeaturizerConfig(
            item_buckets=f.item_buckets,
            amount_buckets=f.amount_buckets,
            max_vocab=f.max_vocab,
            min_count=f.min_count,
            transitions=f.transitions,
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


def train(cfg: Config, events: pl.DataFrame, bundle_dir: str | Path, *, as_of=None) -> TrainResult:
    """Fit the featurizer, train the encoder contrastively, save a bundle at `bundle_dir`."""
    t0 = time.perf_counter()
    tc = cfg.trainer
    quiet_lightning()
    L.seed_everything(tc.seed, workers=True, verbose=False)
    if cfg.model.d_model % cfg.model.n_heads:
        from embeddings.errors import ConfigError

        raise ConfigError(
            f"model.d_model={cfg.model.d_model} must be divisible by model.n_heads={cfg.model.n_heads}."
        )
    featurizer = fit_featurizer(cfg, events)
    data = featurizer.transform(events, as_of=as_of)
    encoder = build_encoder(cfg, featurizer, data)
    log.info("training encoder (%d parameters) on %d users", encoder.num_parameters(), len(data))
    dm = SequenceDataModule(data, featurizer, tc, cfg.model.max_len)
    module = ContrastiveModule(
        encoder,
        views=tc.views,
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_steps,
        max_steps=tc.max_steps,
        temperature=tc.temperature,
        order_weight=tc.order_weight,
    )
    has_val = len(dm.val_rows) > 0
    trainer = L.Trainer(
        accelerator=tc.accelerator,
        devices=tc.devices,
        precision=tc.precision,  # type: ignore[arg-type]
        max_steps=tc.max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=tc.progress,
        callbacks=progress_callbacks(tc.progress),
        enable_model_summary=False,
        limit_val_batches=1.0 if has_val else 0,
        val_check_interval=min(tc.val_every, tc.max_steps) if has_val else None,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        deterministic=False,
    )
    with quiet_fit():
        trainer.fit(module, datamodule=dm)
        if has_val:
            trainer.validate(module, datamodule=dm, verbose=False)
    seconds = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics["steps"] = float(trainer.global_step)
    seqs = trainer.global_step * min(tc.batch_size, len(dm.train_rows)) * tc.views
    metrics["train_seconds"] = seconds
    encoder = module.encoder.cpu().eval()
    denoised = denoise_trained(encoder, featurizer, data, cfg.model.denoise, tc.seed, metrics)
    weight = choose_category_weight(encoder, featurizer, data, cfg)
    if weight is not None:
        metrics["profile_category_weight"] = weight
        if weight != CATEGORY_WEIGHTS[0]:
            fit_profile(encoder, featurizer, data, seed=tc.seed)
    bundle = save_bundle(
        bundle_dir,
        encoder,
        featurizer,
        data_fingerprint=data_fingerprint(events),
        metrics=metrics,
        extra={"n_users": len(data), "trainer": tc.model_dump(), **denoised},
    )
    log.info("bundle %s saved to %s (%.1fs)", bundle.version, bundle_dir, seconds)
    return TrainResult(bundle, Path(bundle_dir), metrics, seconds, seqs / max(seconds, 1e-9))
