"""Contrastive objective: multi-positive InfoNCE over sub-sequence views (CoLES-style)."""

from __future__ import annotations

import math

import torch


def multiview_infonce(
    z: torch.Tensor,
    n_views: int,
    temperature: float,
    negatives: torch.Tensor | None = None,
    negative_weight: float = 1.0,
) -> torch.Tensor:
    """Loss for embeddings z (B * n_views, dim), L2-normalised, view-major per user.

    Each view's positives are the other views of the same user; all other views in the batch are
    negatives (SupCon form: the mean log-probability of the positives). `negatives` (M, dim) are
    extra negatives for every view, each counting as `negative_weight` ordinary ones.
    """
    n = z.shape[0]
    user = torch.arange(n, device=z.device) // n_views  # (N,)
    sim = z @ z.T / temperature  # (N, N)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    denom = sim
    if negatives is not None and negatives.shape[0]:
        extra = z @ negatives.T / temperature + math.log(negative_weight)  # (N, M)
        denom = torch.cat([sim, extra], dim=1)
    log_prob = sim - torch.logsumexp(denom, dim=1, keepdim=True)  # (N, N)
    pos = (user[:, None] == user[None, :]) & ~self_mask
    return -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1)).mean()


@torch.no_grad()
def view_retrieval_accuracy(z: torch.Tensor, n_views: int) -> torch.Tensor:
    """Share of views whose nearest other view belongs to the same user."""
    n = z.shape[0]
    user = torch.arange(n, device=z.device) // n_views
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    return (user[sim.argmax(1)] == user).float().mean()

