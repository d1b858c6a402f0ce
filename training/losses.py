"""Contrastive objective: multi-positive InfoNCE over sub-sequence views (CoLES-style)."""

from __future__ import annotations

import torch


def multiview_infonce(z: torch.Tensor, n_views: int, temperature: float) -> torch.Tensor:
    """Loss for embeddings z (B * n_views, dim), L2-normalised, view-major per user.

    Each view's positives are the other views of the same user; all other views in the batch are
    negatives (SupCon form: the mean log-probability of the positives).
    """
    n = z.shape[0]
    user = torch.arange(n, device=z.device) // n_views  # (N,)
    sim = z @ z.T / temperature  # (N, N)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)  # (N, N)
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
