"""Goal-aware embeddings: the behaviour embedding with the goal propensity as one more coordinate.

A goal-aware bundle (`seqcohort run --goal ...`) embeds a user as

    x = normalize([z, w * s])    z: the encoder's unit embedding (dim d)
                                 s = (calibrated propensity logit - mean) / std over the training users
                                 w: `intent_weight`, how much intent shapes the space next to behaviour

so distances, clusters, nearest neighbours and linear probes all see behaviour *and* intent, and
every consumer of embeddings (cohort assignment, serving, FAISS) works unchanged with dim d + 1.
The propensity is recoverable exactly from x (`propensity_from_embedding`).

Bundles of an event goal also append whether the user reached the goal within the horizon
before `as_of` (among the events held), as +-`recent_weight`: dim d + 2. A marketer picks
segments by how they did last period; cohorts that keep goal-reachers apart from the rest
(`embeddings.cohorts.tiers`) have past rates that say something (see `recent_of`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embeddings.features.featurizer import LOG_RECENCY_SCALE, whole_history_context
from embeddings.model.encoder import EncoderConfig, EventEncoder

N_INTENT = 8  # head inputs next to the embedding: 5 history aggregates + 3 goal-event aggregates


def intent_features(batch: dict[str, torch.Tensor], goal_event: int | list[int] | None) -> torch.Tensor:
    """(B, N_INTENT) what the propensity head reads beside the embedding, from a padded batch.

    The 5 aggregates of the user's whole history (`whole_history_context`: count, recency, spend,
    tenure, active days; so a customer with thousands of lines is not read as their last `max_len`)
    and, for the goal's own event type(s) among the events held (`goal_event`: one featurizer id,
    or a list when the goal has aliases): how many, how recent the last one, whether any.
    """
    count, days, has = _goal_events(batch, goal_event)
    goal = torch.stack([torch.log1p(count) / 5, torch.log1p(days) / 5, has.float()], dim=1)
    return torch.cat([whole_history_context(batch).float(), goal], dim=1)


def _goal_events(batch: dict[str, torch.Tensor], goal_event: int | list[int] | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(count, days since the last one (0 if none), any) of the goal's events among each row's events."""
    lengths = batch["lengths"]
    T = batch["event"].shape[1]
    valid = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]
    if goal_event is None:
        hit = valid
    else:
        ids = torch.tensor([goal_event] if isinstance(goal_event, int) else goal_event,
                           dtype=batch["event"].dtype, device=batch["event"].device)
        hit = valid & torch.isin(batch["event"], ids)
    count = hit.sum(1).float()
    rec = torch.where(hit, batch["log_recency"].float(), torch.full_like(batch["log_recency"].float(), 1e9))
    last = rec.min(1).values
    has = count > 0
    days = torch.where(has, torch.expm1(last * LOG_RECENCY_SCALE), torch.zeros_like(last))
    return count, days, has


def recent_goal(batch: dict[str, torch.Tensor], intent: IntentConfig) -> torch.Tensor:
    """(B,) bool: the row holds a goal event within `intent.recent_days` before as_of.

    Read off the events held (the last `max_len`): a user whose last goal event is older than their
    last `max_len` events reads False even if it was inside the horizon (hundreds of events since).
    """
    assert intent.recent_days is not None
    _, days, has = _goal_events(batch, intent.goal_event)
    return has & (days <= intent.recent_days + 1e-6)


@dataclass(frozen=True)
class IntentConfig:
    """How the propensity logit becomes the extra coordinate (stored in propensity.json["embedding"])."""

    weight: float  # w: share of intent next to the unit behaviour embedding
    a: float  # Platt scaling of the head's raw logit: calibrated logit = a * raw + b
    b: float
    mean: float  # standardisation of the calibrated logit over the training users
    std: float
    goal_event: int | list[int] | None = None  # featurizer id(s) of the goal's event type(s) (None: any event)
    recent_days: float | None = None  # the goal horizon: a coordinate says who reached it that recently (None: none)
    recent_weight: float = 0.1  # its size next to the unit behaviour embedding
    goal_name: str | None = None  # the goal's event type, for cohort names ("purchase in the last 90 days")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_extra(self) -> int:
        """Coordinates after the behaviour embedding: the intent logit, and the recent-goal flag if any."""
        return 2 if self.recent_days is not None else 1


class IntentEncoder(nn.Module):
    """EventEncoder + linear propensity head on [embedding, intent_features]; forward: (B, d + n_extra) unit rows."""

    def __init__(self, base: EventEncoder, head: nn.Linear, intent: IntentConfig) -> None:
        super().__init__()
        if intent.weight <= 0 or intent.std <= 0:
            raise ValueError(f"intent weight and std must be > 0, got {intent}.")
        self.base, self.head, self.intent = base, head, intent

    @property
    def cfg(self) -> EncoderConfig:
        """The behaviour encoder's config (the coordinates after it are `intent`'s)."""
        return self.base.cfg

    @property
    def dim(self) -> int:
        """Width of the embeddings `forward` returns: the behaviour encoder's, then `intent.n_extra`."""
        return self.base.dim + self.intent.n_extra

    def raw_logit(self, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([z.float(), intent_features(batch, self.intent.goal_event)], dim=1)).squeeze(-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        z = self.base(batch)
        logit = self.intent.a * self.raw_logit(z, batch) + self.intent.b
        s = (logit - self.intent.mean) / self.intent.std
        extra = [(self.intent.weight * s).to(z.dtype)[:, None]]
        if self.intent.recent_days is not None:
            flag = recent_goal(batch, self.intent).to(z.dtype) * 2 - 1
            extra.append((self.intent.recent_weight * flag)[:, None])
        return F.normalize(torch.cat([z, *extra], dim=-1), dim=-1)

    def num_parameters(self) -> int:
        return self.base.num_parameters() + sum(p.numel() for p in self.head.parameters())


def split_embedding(X: np.ndarray, intent: IntentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(behaviour part z (n, d) unit rows, calibrated propensity logit (n,)) of goal-aware embeddings."""
    X = np.asarray(X, dtype=np.float64)
    e = intent.n_extra
    r = np.linalg.norm(X[:, :-e], axis=1).clip(min=1e-12)
    s = X[:, -e] / r / intent.weight
    return X[:, :-e] / r[:, None], s * intent.std + intent.mean


def recent_of(X: np.ndarray, intent: IntentConfig) -> np.ndarray | None:
    """(n,) bool: reached the goal within the horizon before as_of, read off goal-aware embeddings;
    None for bundles without that coordinate."""
    if intent.recent_days is None:
        return None
    return np.asarray(X)[:, -1] > 0


def propensity_from_embedding(X: np.ndarray, intent: IntentConfig) -> np.ndarray:
    """Calibrated goal probability (n,) float64 read off goal-aware embeddings (n, d + 1)."""
    return sigmoid(split_embedding(X, intent)[1])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))
