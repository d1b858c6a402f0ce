"""LightningDataModule: featurised sequences -> batches of sub-sequence views."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embeddings.config import TrainerConfig
from embeddings.features import Featurizer, SequenceData
from training.sampling import sample_views


class _Users(Dataset[int]):
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])


class ViewCollator:
    """Turns a list of user rows into a PaddedBatch of `views` sub-sequences per user."""

    def __init__(
        self, data: SequenceData, featurizer: Featurizer, cfg: TrainerConfig, max_len: int, seed: int
    ) -> None:
        self.data, self.featurizer, self.cfg, self.max_len = data, featurizer, cfg, max_len
        self.rng = np.random.default_rng(seed)

    def __call__(self, rows: list[int]) -> dict[str, object]:
        views = sample_views(
            self.data.offsets,
            np.asarray(rows),
            self.cfg.views,
            self.max_len,
            self.cfg.view_mode,
            self.cfg.event_dropout,
            self.rng,
            self.cfg.short_view_prob,
        )
        batch = bucketed_batch(self.featurizer, self.data, views, self.max_len, self.cfg.length_buckets)
        for name, p in (("item", self.cfg.item_dropout), ("category", self.cfg.category_dropout)):
            if p <= 0:
                continue
            for b in batch["buckets"]:  # type: ignore[union-attr]
                hide = torch.from_numpy(self.rng.random(tuple(b[name].shape)) < p)
                b[name] = torch.where(hide & (b[name] > 0), torch.ones_like(b[name]), b[name])
        return batch


def bucketed_batch(
    featurizer: Featurizer, data: SequenceData, views: list[np.ndarray], max_len: int, n_buckets: int
) -> dict[str, object]:
    """Views sorted by length into `n_buckets` PaddedBatches, each padded only to its own max.

    View lengths vary from 1 to max_len, so one padded batch would spend most compute on padding.
    `order` holds the view index of every row of the concatenated buckets.
    """
    lengths = np.array([len(v) for v in views])
    order = np.argsort(lengths, kind="stable")
    chunks = [c for c in np.array_split(order, max(1, min(n_buckets, len(views)))) if len(c)]
    return {
        "buckets": [featurizer.collate(data, [views[i] for i in c], max_len) for c in chunks],
        "order": torch.from_numpy(np.concatenate(chunks)),
    }


class SequenceDataModule(L.LightningDataModule):
    """Splits users into train/validation and serves view batches for each."""

    def __init__(self, data: SequenceData, featurizer: Featurizer, cfg: TrainerConfig, max_len: int) -> None:
        super().__init__()
        self.data, self.featurizer, self.cfg, self.max_len = data, featurizer, cfg, max_len
        rng = np.random.default_rng(cfg.seed)
        rows = rng.permutation(len(data))
        if cfg.max_users is not None:
            rows = rows[: cfg.max_users]
        n_val = int(len(rows) * cfg.val_fraction)
        n_val = n_val if n_val >= cfg.views * 4 else 0  # too few users for a meaningful check
        self.val_rows, self.train_rows = np.sort(rows[:n_val]), rows[n_val:]
        self._val_batches: list[dict[str, object]] | None = None

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(
            _Users(self.train_rows),
            batch_size=min(self.cfg.batch_size, len(self.train_rows)),
            shuffle=True,
            drop_last=len(self.train_rows) >= self.cfg.batch_size,
            generator=g,
            num_workers=self.cfg.num_workers,
            collate_fn=ViewCollator(self.data, self.featurizer, self.cfg, self.max_len, self.cfg.seed),
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader[dict[str, object]] | list[object]:
        """Validation views drawn once with a fixed seed: the metric moves only when the model does."""
        if len(self.val_rows) == 0:
            return []
        if self._val_batches is None:
            collate = ViewCollator(self.data, self.featurizer, self.cfg, self.max_len, seed=self.cfg.seed + 1)
            bs = min(self.cfg.batch_size, len(self.val_rows))
            self._val_batches = [
                collate([int(r) for r in self.val_rows[i : i + bs]]) for i in range(0, len(self.val_rows), bs)
            ]
        return DataLoader(self._val_batches, batch_size=None, shuffle=False)  # type: ignore[arg-type]
