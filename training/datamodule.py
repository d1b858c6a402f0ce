"""LightningDataModule: featurised sequences -> batches of sub-sequence views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from embeddings.config import TrainerConfig
from embeddings.features.featurizer import Featurizer, SequenceData, transition_ids
from embeddings.model.embed import resolve_device
from training.sampling import (
    PREV_FIELDS,
    REORDER_DERIVED,
    TIME_FIELDS,
    prev_from,
    sample_views,
    session_ids,
    shuffle_within_sessions,
)


class _Users(Dataset[int]):
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])


def length_buckets(cfg: TrainerConfig) -> int:
    """`trainer.length_buckets`, or where it is None: 1 when training runs on a GPU, else 4.

    Each length group is its own encoder pass; on the CPU, grouping saves the padding's compute,
    while a GPU waits on kernel launches and pads for free.
    """
    if cfg.length_buckets is not None:
        return cfg.length_buckets
    return 1 if resolve_device(cfg.accelerator).startswith("cuda") else 4


def worker_id() -> int:
    """The DataLoader worker this code runs in; -1 in the main process."""
    info = get_worker_info()
    return -1 if info is None else info.id


class ViewCollator:
    """Turns a list of user rows into a PaddedBatch of `views` sub-sequences per user.

    With `cfg.order_weight > 0` the batch also holds `shuffled`: a copy of each user's first view
    with its events reordered inside sessions, where there is something to reorder (see
    `shuffled_copies`).
    """

    def __init__(
        self, data: SequenceData, featurizer: Featurizer, cfg: TrainerConfig, max_len: int, seed: int
    ) -> None:
        self.data, self.featurizer, self.cfg, self.max_len = data, featurizer, cfg, max_len
        self.seed, self.worker = seed, -1
        self.buckets = length_buckets(cfg)
        self.rng = np.random.default_rng(seed)
        if cfg.order_weight > 0:
            pos = data.fields["session_pos"]
            self.session, self.opener = session_ids(pos), pos == 1
            # its own stream, so turning the term on leaves the views themselves unchanged
            self.order_rng = np.random.default_rng([seed, 1])

    def follow_worker(self) -> None:
        """Inside a DataLoader worker, switch (once) to that worker's own random streams.

        Each worker starts as a copy of this collator: without this, all `trainer.num_workers` of
        them would draw the same view positions, dropouts and shuffles for their batches.
        """
        wid = worker_id()
        if wid == self.worker:
            return
        self.worker = wid
        self.rng = np.random.default_rng([self.seed, 2, wid])
        if self.cfg.order_weight > 0:
            self.order_rng = np.random.default_rng([self.seed, 3, wid])

    def __call__(self, rows: list[int]) -> dict[str, object]:
        self.follow_worker()
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
        batch = bucketed_batch(self.featurizer, self.data, views, self.max_len, self.buckets)
        for name, p in (("item", self.cfg.item_dropout), ("category", self.cfg.category_dropout)):
            if p <= 0:
                continue
            for b in batch["buckets"]:  # type: ignore[union-attr]
                hide = torch.from_numpy(self.rng.random(tuple(b[name].shape)) < p)
                b[name] = torch.where(hide & (b[name] > 0), torch.ones_like(b[name]), b[name])
        if self.cfg.order_weight > 0:
            # one copy per user (of its first view) keeps the extra encoder work to half a batch
            first = [v[-self.max_len :] if i % self.cfg.views == 0 else None for i, v in enumerate(views)]
            batch["shuffled"] = shuffled_copies(
                batch, first, self.session, self.opener, self.order_rng, self.cfg.order_reverse
            )
        return batch


def shuffled_copies(
    batch: dict[str, object],
    views: list[np.ndarray | None],
    session: np.ndarray,
    opener: np.ndarray,
    rng: np.random.Generator,
    reverse: float = 0.0,
) -> dict[str, object]:
    """Copies of a bucketed batch's views with events reordered inside each session.

    Built from the finished view tensors, so a copy differs from its view only in order: the same
    events (with the same hidden items), time fields (`TIME_FIELDS`) left in their slots, and
    `PREV_FIELDS` recomputed from the new order wherever the previous event is in the view.
    Views with nothing to reorder get no copy.

    Args:
        views: the batch's views as collated (the last max_len rows of each); None: no copy.
        reverse: share of copies whose sessions are reversed rather than shuffled.

    Returns:
        {"buckets": PaddedBatches, "view": (M,) index of the view each copy row was made from}.
    """
    order = batch["order"].numpy()  # type: ignore[union-attr]
    out_buckets: list[dict[str, torch.Tensor]] = []
    made: list[np.ndarray] = []
    row0 = 0
    for b in batch["buckets"]:  # type: ignore[union-attr]
        ids = order[row0 : row0 + len(b["lengths"])]
        row0 += len(ids)
        T = int(b["event"].shape[1])
        rows, perm, follows = [], [], []
        for r, v in enumerate(ids):
            view = views[v]
            if view is None:
                continue
            p = shuffle_within_sessions(view, session, opener, rng, bool(rng.random() < reverse))
            if p is not None:
                rows.append(r)
                perm.append(np.concatenate([p, np.arange(len(p), T)]))  # padding stays put
                follows.append(np.pad(prev_from(view), (0, T - len(p))))
        if not rows:
            continue
        sel = torch.tensor(rows)
        src = torch.from_numpy(np.stack(perm))  # (M_b, T) slot each event comes from
        shuffled: dict[str, torch.Tensor] = {}
        for name, t in b.items():
            t = t[sel]
            if t.ndim == 2 and name not in TIME_FIELDS and name not in REORDER_DERIVED and name != "context":
                t = torch.gather(t, 1, src)
            shuffled[name] = t
        follow = torch.from_numpy(np.stack(follows))  # (M_b, T)
        for name, source in PREV_FIELDS.items():
            if name in shuffled:
                before = torch.roll(shuffled[source], 1, dims=1)  # (M_b, T): the new previous event
                shuffled[name] = torch.where(follow, before, shuffled[name])
        if "transition" in shuffled:  # a pair token of the new order
            shuffled["transition"] = transition_ids(shuffled["prev_event"], shuffled["event"])
        out_buckets.append(shuffled)
        made.append(ids[rows])
    view = np.concatenate(made) if made else np.zeros(0, dtype=np.int64)
    return {"buckets": out_buckets, "view": torch.from_numpy(view.astype(np.int64))}


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

    @property
    def batch_users(self) -> int:
        """Users in each training batch."""
        return min(self.cfg.batch_size, len(self.train_rows))

    @property
    def sequences_per_step(self) -> int:
        """Sequences the encoder reads in one training step."""
        return self.batch_users * self.cfg.views

    def collator(self) -> Callable[[list[int]], dict[str, Any]]:
        """What turns a batch of training user rows into the module's batch."""
        return ViewCollator(self.data, self.featurizer, self.cfg, self.max_len, self.cfg.seed)

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(
            _Users(self.train_rows),
            batch_size=self.batch_users,
            shuffle=True,
            drop_last=len(self.train_rows) >= self.cfg.batch_size,
            generator=g,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collator(),
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
