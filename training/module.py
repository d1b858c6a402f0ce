"""LightningModule: owns the contrastive loss, metrics and optimizer; never mutates the encoder's design."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from embeddings.model.encoder import EventEncoder
from training.losses import multiview_infonce, view_retrieval_accuracy


class ContrastiveModule(L.LightningModule):
    def __init__(
        self,
        encoder: EventEncoder,
        *,
        views: int = 2,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        max_steps: int = 600,
        temperature: float = 0.1,
        order_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder

    def forward(self, batch: dict) -> torch.Tensor:
        """Learned embeddings (N, learned dim) of a bucketed view batch, in original view order.

        The recency coordinate is left out: views of one user from different times differ in it by
        design, and it has nothing to train.
        """
        z = torch.cat([self.encoder.learned(b) for b in batch["buckets"]], dim=0)
        out = torch.empty_like(z)
        out[batch["order"]] = z
        return out

    def shuffled(self, batch: dict) -> torch.Tensor | None:
        """(M, dim) embeddings of the batch's shuffled-order copies; None when the term is off."""
        copies = batch.get("shuffled")
        if float(self.hparams.get("order_weight", 0.0)) <= 0 or not copies or not copies["buckets"]:
            return None
        return torch.cat([self.encoder.learned(b) for b in copies["buckets"]], dim=0).float()

    def contrastive_loss(self, batch: dict, z: torch.Tensor, stage: str | None = None) -> torch.Tensor:
        """InfoNCE of a view batch (z = self(batch)); shuffled-order copies join as negatives.

        Each copy has its view's events and times in another order inside each session, so it can
        only be pushed away through event order; it counts as `order_weight` ordinary negatives.
        With `stage`, logs `{stage}/order_sim`: mean cosine of a view and its own copy.
        """
        views, temp = self.hparams.views, self.hparams.temperature
        zs = self.shuffled(batch)
        if zs is None:
            return multiview_infonce(z, views, temp)
        if stage is not None:
            sim = (z[batch["shuffled"]["view"]] * zs).sum(-1).mean()
            self.log(f"{stage}/order_sim", sim, batch_size=z.shape[0] // views)
        return multiview_infonce(z, views, temp, zs, float(self.hparams.order_weight))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        z = self(batch).float()
        loss = self.contrastive_loss(batch, z, stage)
        acc = view_retrieval_accuracy(z, self.hparams.views)
        bs = z.shape[0] // self.hparams.views
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs)
        self.log(f"{stage}/view_acc", acc, prog_bar=stage == "val", batch_size=bs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):  # type: ignore[override]
        decay, no_decay = [], []
        for name, p in self.encoder.named_parameters():
            (no_decay if p.ndim < 2 or "embeds" in name or name.startswith("pos") else decay).append(p)
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        warm, total = self.hparams.warmup_steps, max(self.hparams.max_steps, 1)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / max(warm, 1)
            progress = min((step - warm) / max(total - warm, 1), 1.0)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def quiet_lightning() -> None:
    """Lightning logs banners (accelerator, tips) at INFO when a Trainer is built; keep them for --verbose only."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def quiet_fit() -> Iterator[None]:
    """Silence Lightning's advice that does not apply here (in-process loaders, step-bound runs,
    no validation loop) and a torch deprecation raised inside Lightning itself; real warnings pass."""
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                        ".*defined a `validation_step`.*", ".*LeafSpec.*is deprecated.*"):
            warnings.filterwarnings("ignore", pattern)
        yield


class StepBoundBar(TQDMProgressBar):
    """Progress bar that counts optimizer steps out of `max_steps` when training is bounded by steps."""

    # Lightning's bars count the batches of each epoch; a step-bound run (max_epochs=-1) is
    # measured in steps, so one bar spans the run and only the epoch in its title changes.
    # Public hooks and tqdm's own API only: Lightning's private methods change between releases.

    @staticmethod
    def step_bound(trainer: L.Trainer) -> bool:
        return trainer.max_steps > 0 and (trainer.max_epochs is None or trainer.max_epochs < 0)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.step_bound(trainer):
            super().on_train_epoch_start(trainer, *args)
            return
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # the first epoch of this fit
            bar.reset(total=trainer.max_steps)
            # A resumed run starts part-way; `initial` keeps the rate to this run's own steps.
            bar.initial = bar.n = trainer.global_step
        bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.step_bound(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar, step = self.train_progress_bar, trainer.global_step
        if self.is_enabled and (step % self.refresh_rate == 0 or step == bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.update(step - bar.n)


def progress_callbacks(enabled: bool) -> list[L.Callback]:
    """The progress bar for a run bounded by steps, or none."""
    return [StepBoundBar()] if enabled else []
