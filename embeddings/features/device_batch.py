"""Batches made on the device that encodes them: `Featurizer.collate_users` in torch.

A GPU encodes hundreds of thousands of users a second; making their padded batches on the CPU
(numpy gathers, then a copy of every padded field) is what it would wait on. Here the users' flat
features are copied to the device once, in their compact layout (4 bytes an event and field), and
each batch is gathered there. The batches equal `collate_users`'s, on CPU tensors too
(tests/test_device_batch.py), so one path serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embeddings.features.featurizer import (
    FIRST_GAP,
    LOG_RECENCY_SCALE,
    N_CONTEXT,
    Featurizer,
    SequenceData,
)


def segment_context(log_recency: torch.Tensor, amount_value: torch.Tensor, lengths: torch.Tensor,
                    amount_scale: float) -> torch.Tensor:
    """(n, N_CONTEXT) float32 `Featurizer.view_context` of n back-to-back runs of events.

    log_recency, amount_value: (E,) the runs' events in order; lengths: (n,) int64, summing to E.
    """
    n, dev = len(lengths), lengths.device
    ctx = torch.zeros(n, N_CONTEXT, dtype=torch.float64, device=dev)
    if len(log_recency) == 0:
        return ctx.float()
    ends = torch.cumsum(lengths, 0)
    starts = ends - lengths
    full = lengths > 0
    seg = torch.repeat_interleave(torch.arange(n, device=dev), lengths, output_size=len(log_recency))
    rec = torch.expm1(log_recency.double() * LOG_RECENCY_SCALE)  # days before as_of
    av = amount_value.double()
    spend = torch.where(av > 0, torch.expm1(av * amount_scale), 0.0)
    day = torch.floor(rec)
    new_day = torch.ones_like(rec, dtype=torch.bool)
    new_day[1:] = day[1:] != day[:-1]
    new_day[starts[full]] = True
    first, last = starts.clamp(max=len(rec) - 1), (ends - 1).clamp(min=0)
    recency, tenure = rec[last], (rec[first] - rec[last]).clamp(min=0.0)
    total_spend = torch.zeros(n, dtype=torch.float64, device=dev).index_add_(0, seg, spend)
    days = torch.zeros(n, dtype=torch.float64, device=dev).index_add_(0, seg, new_day.double())
    ctx = torch.stack([
        torch.log1p(lengths.double()) / 5, torch.log1p(recency) / 5, torch.log1p(total_spend) / 8,
        torch.log1p(tenure) / 6, torch.log1p(days) / 5,
    ], dim=1)
    return torch.where(full[:, None], ctx, 0.0).float()


@dataclass
class DeviceSequences:
    """`SequenceData`'s fields on a device, flat, plus each user's whole-history context."""

    offsets: torch.Tensor  # (n_users + 1,) int64
    fields: dict[str, torch.Tensor]  # name -> (n_events,) int32 (categorical) or float32
    history_context: torch.Tensor  # (n_users, N_CONTEXT) float32: view_context over the whole history
    amount_scale: float

    @classmethod
    def from_data(cls, featurizer: Featurizer, data: SequenceData, device: str | torch.device) -> DeviceSequences:
        """Copy `data`'s fields to `device` (integers as int32: every id is far below 2^31)."""
        assert featurizer.numeric_stats_ is not None

        def put(a: np.ndarray) -> torch.Tensor:  # not pinned: pinning copies the whole array once more
            return torch.from_numpy(a.astype(np.int32) if np.issubdtype(a.dtype, np.integer) else a).to(device)

        fields = {k: put(np.ascontiguousarray(v)) for k, v in data.fields.items()}
        offsets = torch.from_numpy(np.asarray(data.offsets, dtype=np.int64)).to(device)
        scale = featurizer.numeric_stats_["amount"][1]
        hist = segment_context(fields["log_recency"], fields["amount_value"], offsets.diff(), scale)
        return cls(offsets, fields, hist, scale)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def collate_users(self, rows: torch.Tensor, max_len: int, width: int | None = None, *,
                      context: bool = True) -> dict[str, torch.Tensor]:
        """`Featurizer.collate_users` of the users at `rows` (int64 tensor on the device).

        `width` is the batch's T (the longest kept history, at least 1) when the caller knows it
        from the host-side lengths; otherwise it is read back from the device (a sync). Without
        `context` the batch lacks "context" (the rows' own aggregates), which only an encoder with
        `n_context` reads; leaving it out saves a sync per batch.
        """
        firsts, ends = self.offsets[rows], self.offsets[rows + 1]
        starts = torch.maximum(firsts, ends - max_len)
        lens = ends - starts  # (B,)
        T = width if width is not None else max(int(lens.max()) if len(lens) else 1, 1)
        ar = torch.arange(T, device=lens.device)
        valid = ar[None, :] < lens[:, None]  # (B, T)
        idx = torch.where(valid, starts[:, None] + ar[None, :], 0)  # padding reads event 0, then zeroed
        batch: dict[str, torch.Tensor] = {}
        for name, flat in self.fields.items():
            v = flat[idx].masked_fill(~valid, 0)
            batch[name] = v.long() if not v.is_floating_point() else v
        batch["gap"][:, 0] = torch.where(lens > 0, FIRST_GAP, batch["gap"][:, 0])
        batch["lengths"] = lens
        if context:
            batch["context"] = segment_context(batch["log_recency"][valid], batch["amount_value"][valid], lens,
                                               self.amount_scale)
        batch["n_events"] = ends - firsts
        batch["history_context"] = self.history_context[rows]
        return batch
