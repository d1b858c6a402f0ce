"""The one training core behind `train` and `train_goal_aware`.

    started = start(cfg)                       # seed everything, check the model config, start the clock
    ...build the encoder, its LightningModule and DataModule...
    fitted = fit(cfg, module, datamodule, started)   # Trainer from cfg.trainer: fit, validate, measure
    done = post_fit(fitted.encoder, featurizer, data, cfg)   # POST_FIT, in order, logged by name

The two paths differ only in the module and batches they hand over and in what they save.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import torch

from embeddings.config import Config, TrainerConfig
from embeddings.errors import ConfigError
from embeddings.features.featurizer import Featurizer, SequenceData
from embeddings.model.encoder import EventEncoder
from training.datamodule import SequenceDataModule
from training.denoise import denoise_step
from training.module import progress_callbacks, quiet_fit, quiet_lightning
from training.profile_select import category_step
from training.steps import Step, Stepped, run_steps

# after either fit, in this order: the category weight is chosen on the denoised learned part
POST_FIT: tuple[Step, ...] = (
    Step("denoise", denoise_step),  # keep the learned directions a user's odd and even events agree on
    Step("category weight", category_step),  # the habit profile's category weight; its PCA refitted for it
)


@dataclass
class Fitted:
    """What `fit` measured, and the trained encoder (on the CPU, in eval mode)."""

    encoder: EventEncoder
    metrics: dict[str, float]  # Lightning's scalar metrics, "steps" and "train_seconds"
    seconds: float  # since `start`
    sequences_per_s: float  # training sequences processed per second


def start(cfg: Config) -> float:
    """Seed python, numpy and torch from `trainer.seed` and check the model config; the start time.

    Call it first: the encoder's initial weights are the next random numbers drawn.
    """
    started = time.perf_counter()
    quiet_lightning()
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    m = cfg.model
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model={m.d_model} must be divisible by model.n_heads={m.n_heads}.")
    return started


def contrastive_args(tc: TrainerConfig) -> dict[str, Any]:
    """`ContrastiveModule` keyword arguments from the trainer config."""
    return {"views": tc.views, "lr": tc.lr, "weight_decay": tc.weight_decay, "warmup_steps": tc.warmup_steps,
            "max_steps": tc.max_steps, "temperature": tc.temperature, "order_weight": tc.order_weight}


class Distributed(Protocol):
    """Runs `fit` on several workers instead of this process (`training.ray_train.RayTrain`)."""

    def fit(self, cfg: Config, module: L.LightningModule, dm: SequenceDataModule, started: float) -> Fitted: ...


def trainer_args(tc: TrainerConfig, has_val: bool) -> dict[str, Any]:
    """The Trainer settings every fit shares, in this process or on a Ray Train worker."""
    return dict(
        precision=tc.precision,
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


def fit(cfg: Config, module: L.LightningModule, dm: SequenceDataModule, started: float, *,
        distributed: Distributed | None = None) -> Fitted:
    """Fit `module` (holding `module.encoder`) on `dm` with the Trainer `cfg.trainer` describes, then
    validate when `dm` has validation users. With `distributed`, the fit runs there (DDP on its workers)."""
    if distributed is not None:
        return distributed.fit(cfg, module, dm, started)
    tc = cfg.trainer
    has_val = len(dm.val_rows) > 0
    trainer = L.Trainer(accelerator=tc.accelerator, devices=tc.devices, **trainer_args(tc, has_val))
    with quiet_fit():
        trainer.fit(module, datamodule=dm)
        if has_val:
            trainer.validate(module, datamodule=dm, verbose=False)
    seconds = time.perf_counter() - started
    metrics = {**trainer_metrics(trainer), "train_seconds": seconds}
    encoder = module.encoder.cpu().eval()  # type: ignore[union-attr]
    seqs = trainer.global_step * dm.sequences_per_step
    return Fitted(encoder, metrics, seconds, seqs / max(seconds, 1e-9))


def trainer_metrics(trainer: L.Trainer) -> dict[str, float]:
    """Lightning's scalar metrics and "steps", the optimizer steps taken."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    return {**metrics, "steps": float(trainer.global_step)}


def post_fit(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, cfg: Config, *,
             skip: Collection[str] = ()) -> Stepped:
    """The POST_FIT steps not named in `skip`, on the training users `data`."""
    unknown = set(skip) - {s.name for s in POST_FIT}
    if unknown:
        raise ValueError(f"no post-fit steps {sorted(unknown)}; the steps are {[s.name for s in POST_FIT]}")
    return run_steps([s for s in POST_FIT if s.name not in skip], encoder, featurizer, data, cfg)
