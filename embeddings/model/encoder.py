"""EventEncoder: a small pre-LN transformer over a user's recent events -> one unit vector.

Inputs are PaddedBatch dicts from `Featurizer.collate`: per-field tensors (B, T), left-aligned
(oldest kept event first), padded on the right, plus `lengths` (B,). Positions are counted from
the most recent event, so "the last event" always has position 0 whatever the history length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embeddings.features.featurizer import (
    CONTEXT_DAYS,
    CONTEXT_SPEND,
    LOG_RECENCY_SCALE,
    whole_history_context,
)
from embeddings.features.habits import habit_raw, habit_width


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture; saved in the bundle as `config.json` so the model rebuilds itself.

    Frozen: a config describes exactly the module built from it. A choice made after training
    (the learned rank, the category weight) builds a new config with `dataclasses.replace` and a
    new module from it (`EventEncoder.rebuilt`). Its mappings are read-only copies.
    """

    cardinalities: Mapping[str, int] = field(default_factory=dict)  # categorical field -> table size
    numeric_fields: tuple[str, ...] = ()  # float fields fed through a linear layer
    d_model: int = 64  # width of the transformer
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128  # hidden width of each MLP
    dropout: float = 0.1
    learned_dim: int = 64  # outputs of the learned projection (model.dim); `dim` adds the fixed ones
    max_len: int = 128  # events per user kept (the most recent)
    n_context: int = 0  # whole-history aggregate features added to the summary token
    # state coordinates after the learned outputs (weight 0 = absent), each standardised with the
    # mean and std over the training users: recency * (r - mean) / std, r the last event's
    # log_recency (recency_shape "log") or the square root of its days before as_of ("sqrt"), the
    # standardised value clipped to +-recency_clip (0 = not clipped), then
    # frequency * (log1p(events) - mean) / std, the events counted over the whole history (batch["n_events"])
    recency: float = 0.0
    recency_mean: float = 0.0
    recency_std: float = 1.0
    recency_shape: str = "log"
    recency_clip: float = 0.0
    frequency: float = 0.0
    frequency_mean: float = 0.0
    frequency_std: float = 1.0
    # then monetary * (log1p(whole-history spend) / 8 - mean) / std, read off batch["history_context"]
    monetary: float = 0.0
    monetary_mean: float = 0.0
    monetary_std: float = 1.0
    # then visits * (log1p(whole-history active days) / 5 - mean) / std
    visits: float = 0.0
    visits_mean: float = 0.0
    visits_std: float = 1.0
    # habit profile after the state coordinates (embeddings/features/habits.py): `profile_dim` principal
    # directions of the square-root value shares of `profile_fields` (field -> weight), as a unit
    # vector; `profile` in [0, 1) is its length in the unit-norm row (0 = absent)
    profile: float = 0.0
    profile_dim: int = 0
    profile_fields: Mapping[str, float] = field(default_factory=dict)
    # the learned part projected onto `learned_rank` of its principal directions (buffers
    # learned_mean, learned_basis; training/denoise.py picks the directions a user's odd and even
    # events agree on) and renormalised; 0 = as trained
    learned_rank: int = 0

    def __post_init__(self) -> None:
        # copies, so neither the caller's dicts nor this config can change the other afterwards
        object.__setattr__(self, "cardinalities", MappingProxyType(dict(self.cardinalities)))
        object.__setattr__(self, "numeric_fields", tuple(self.numeric_fields))
        object.__setattr__(self, "profile_fields", MappingProxyType(dict(self.profile_fields)))

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and deepcopy: read-only mappings do not pickle
        return (_config_from_fields, (self.to_dict(),))

    @property
    def n_state(self) -> int:
        """How many outputs after the learned ones are state coordinates."""
        return int(self.recency > 0) + int(self.frequency > 0) + int(self.monetary > 0) + int(self.visits > 0)

    @property
    def n_profile(self) -> int:
        """How many outputs are habit-profile coordinates (the last ones)."""
        return self.profile_dim if self.profile > 0 and self.profile_fields else 0

    @property
    def n_fixed(self) -> int:
        """Outputs that are not learned: state coordinates, then the habit profile."""
        return self.n_state + self.n_profile

    @property
    def dim(self) -> int:
        """Width of the embedding: learned outputs, state coordinates, habit profile."""
        return self.learned_dim + self.n_fixed

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (mappings as dicts, sequences as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncoderConfig:
        """The config of `to_dict`'s output; every field must be there and nothing else (ValueError)."""
        names = {f.name for f in fields(cls)}
        missing, unexpected = sorted(names - set(d)), sorted(set(d) - names)
        if missing or unexpected:
            raise ValueError(f"fields missing {missing}, unexpected {unexpected}")
        return cls(**d)


def _config_from_fields(d: dict[str, Any]) -> EncoderConfig:
    return EncoderConfig(**d)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model)
        )
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(C, dim=2)
        # (B, n_heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # key_mask: (B, 1, 1, T) True where the key is a real event; every row has the summary token
        # no attention-probability dropout: on CPU it materialises a (B, H, T, T) mask and
        # dominated step time; residual dropout below regularises enough
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, d_model)
        x = x + F.dropout(self.proj(y), self.dropout, self.training)
        x = x + F.dropout(self.mlp(self.ln2(x)), self.dropout, self.training)
        return x


def recency_value(log_recency: torch.Tensor, shape: str) -> torch.Tensor:
    """What the recency coordinate standardises, from the featurizer's log_recency:
    itself ("log") or the square root of the days before as_of ("sqrt", which a linear read-out
    predicts the next purchase better from; docs/decisions.md#recency-read-as-square-root-of-days)."""
    if shape == "log":
        return log_recency
    if shape == "sqrt":
        return torch.expm1(log_recency * LOG_RECENCY_SCALE).clamp(min=0).sqrt()
    raise ValueError(f"recency_shape={shape!r}: use 'log' or 'sqrt'.")


def join_profile(behaviour: torch.Tensor, q: torch.Tensor, p: float) -> torch.Tensor:
    """Unit rows [sqrt(1 - p^2) * behaviour ; p * direction of q]; a zero profile adds nothing.

    behaviour: (B, D) unit rows (learned part and state coordinates); q: (B, K) habit-profile
    coordinates (EventEncoder.habits).
    """
    n = q.norm(dim=-1, keepdim=True)
    q = torch.where(n > 1e-6, q / n.clamp(min=1e-6), 0.0)
    return F.normalize(torch.cat([math.sqrt(1.0 - p**2) * behaviour, p * q], dim=-1), dim=-1)


class EventEncoder(nn.Module):
    """Field embeddings -> transformer -> [summary token ; masked mean] -> projection -> L2 norm.

    After the `cfg.learned_dim` learned outputs come `cfg.n_state` state coordinates: the history's
    recency (how long before as_of its most recent event was), frequency (how many events it has,
    beyond the `max_len` the transformer reads), monetary value (total spend over the whole
    history) and visits (days with events), each standardised and weighted. Contrastive
    views of one user differ in exactly these (they end at different times and hold different
    numbers of events and purchases), so training teaches the learned part to ignore them; the
    user's current state stays readable next to the behaviour. Then come
    `cfg.n_profile` habit-profile coordinates (embeddings/features/habits.py): habits a whole group shares,
    which contrastive training lets fade. The behaviour part ([learned ; state], normalised) and the
    profile direction (unit) are joined with lengths sqrt(1 - p^2) and p, p = `cfg.profile`, so
    every row has the same split: a per-user profile magnitude would rescale the learned
    coordinates user by user (noise for any linear read-out; docs/decisions.md#habit-profile-joined-as-a-unit-direction).
    A row whose profile is the training mean (or a log whose habits do not vary) gets none.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeds = nn.ModuleDict(
            {name: nn.Embedding(n, cfg.d_model, padding_idx=0) for name, n in cfg.cardinalities.items()}
        )
        self.numeric = nn.Linear(len(cfg.numeric_fields), cfg.d_model) if cfg.numeric_fields else None
        self.pos = nn.Embedding(cfg.max_len + 1, cfg.d_model)  # position from the most recent event
        self.summary = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.context = nn.Linear(cfg.n_context, cfg.d_model) if cfg.n_context else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        if cfg.learned_dim < 2:
            raise ValueError(f"learned_dim={cfg.learned_dim}: need at least 2 learned outputs.")
        if not 0.0 <= cfg.profile < 1.0:
            raise ValueError(f"profile={cfg.profile} must be in [0, 1): the habit profile's length in a unit row.")
        if cfg.n_profile:
            n_raw = habit_width(cfg.profile_fields, cfg.cardinalities)
            self.register_buffer("profile_mean", torch.zeros(n_raw))
            self.register_buffer("profile_basis", torch.zeros(n_raw, cfg.n_profile))
        self.head = nn.Sequential(
            nn.Linear(2 * cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.learned_dim)
        )
        if cfg.learned_rank:
            self.register_buffer("learned_mean", torch.zeros(cfg.learned_dim))
            self.register_buffer("learned_basis", torch.zeros(cfg.learned_dim, cfg.learned_rank))
        self.apply(self._init)
        nn.init.normal_(self.summary, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def dim(self) -> int:
        """Width of the embeddings `forward` returns."""
        return self.cfg.dim

    def rebuilt(self, cfg: EncoderConfig, **buffers: torch.Tensor) -> EventEncoder:
        """A new encoder built from `cfg` holding this one's weights and buffers, `buffers` added or
        replacing some (`cfg` must keep every other shape). This one is left as it is."""
        with torch.device("meta"):  # no initial weights drawn: every tensor comes from the state below
            new = EventEncoder(cfg)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        state.update({k: v.detach().float().clone() for k, v in buffers.items()})
        new.load_state_dict(state, strict=True, assign=True)
        return new.train(self.training)

    def with_learned_basis(self, mean: torch.Tensor, basis: torch.Tensor) -> EventEncoder:
        """This encoder with its learned part projected onto `basis` (learned_dim, k >= 1) around `mean`."""
        if basis.ndim != 2 or basis.shape[1] < 1:
            raise ValueError(f"learned basis of shape {tuple(basis.shape)}: need (learned_dim, k >= 1)")
        return self.rebuilt(replace(self.cfg, learned_rank=int(basis.shape[1])), learned_mean=mean,
                            learned_basis=basis)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, dim) L2-normalised embeddings: the learned part, state coordinates, habit profile."""
        return self.from_learned(self.learned(batch), batch)

    def from_learned(self, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, dim) embeddings from `learned(batch)` (B, learned_dim): denoised, then the state
        coordinates and habit profile joined (embeddings/model/fused.py computes `z` its own way)."""
        z = self.denoise(z)
        c, lengths = self.cfg, batch["lengths"]
        state = []
        if c.recency > 0:
            last = recency_value(batch["log_recency"].float().gather(1, (lengths - 1).clamp(min=0)[:, None]),
                                 c.recency_shape)  # (B, 1)
            r = (last - c.recency_mean) / c.recency_std
            state.append(c.recency * (r.clamp(-c.recency_clip, c.recency_clip) if c.recency_clip > 0 else r))
        if c.frequency > 0:  # a plain `collate` batch (training views) has no n_events: its own events
            n = batch.get("n_events", lengths)
            events = torch.log1p(n.float())[:, None]  # (B, 1)
            state.append(c.frequency * (events - c.frequency_mean) / c.frequency_std)
        if c.monetary > 0:  # a plain `collate` batch (training views) holds its own events only
            spend = whole_history_context(batch)[:, CONTEXT_SPEND : CONTEXT_SPEND + 1].float()  # (B, 1)
            state.append(c.monetary * (spend - c.monetary_mean) / c.monetary_std)
        if c.visits > 0:
            days = whole_history_context(batch)[:, CONTEXT_DAYS : CONTEXT_DAYS + 1].float()  # (B, 1)
            state.append(c.visits * (days - c.visits_mean) / c.visits_std)
        if state:
            z = F.normalize(torch.cat([z, *(v.to(z.dtype) for v in state)], dim=-1), dim=-1)
        if c.n_profile:
            z = join_profile(z, self.habits(batch).to(z.dtype), c.profile)
        return z

    def habits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, n_profile) habit-profile coordinates (unweighted): centred raw profile on the PCA basis.

        Unseen blocks (no pairs in a one-event history) take the mean, i.e. contribute nothing; a
        "next" row seen a few times is pulled toward it (habits.habit_raw's weights).
        """
        raw, weight = habit_raw(batch, self.cfg.profile_fields, self.cfg.cardinalities)
        return (weight * (raw - self.profile_mean)) @ self.profile_basis

    def denoise(self, z: torch.Tensor) -> torch.Tensor:
        """(B, learned_dim) unit rows kept to the `learned_rank` directions: mean + (z - mean) V V^T,
        renormalised. Directions a user's own events disagree on carry per-event noise, which a
        linear read-out fits (docs/decisions.md#denoising-the-learned-part); nothing else changes."""
        if not self.cfg.learned_rank:
            return z
        mean, basis = self.learned_mean.to(z.dtype), self.learned_basis.to(z.dtype)
        return F.normalize(mean + ((z - mean) @ basis) @ basis.T, dim=-1)

    def learned(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, learned_dim) unit rows: what contrastive training shapes (before `denoise`)."""
        lengths = batch["lengths"]
        ref = next(iter(batch[name] for name in self.cfg.cardinalities))
        B, T = ref.shape
        valid = torch.arange(T, device=ref.device)[None, :] < lengths[:, None]  # (B, T)
        x = torch.zeros(B, T, self.cfg.d_model, device=ref.device)
        for name, emb in self.embeds.items():
            x = x + emb(batch[name])  # (B, T, d_model)
        if self.numeric is not None:
            num = torch.stack([batch[n].float() for n in self.cfg.numeric_fields], dim=-1)  # (B, T, F)
            x = x + self.numeric(num)
        pos = (lengths[:, None] - 1 - torch.arange(T, device=ref.device)[None, :]).clamp(
            0, self.cfg.max_len - 1
        )
        x = x + self.pos(pos + 1)  # position 0 of the table is the summary token's
        x = x * valid[..., None]
        s = self.summary.expand(B, 1, -1) + self.pos.weight[0]  # (B, 1, d_model)
        if self.context is not None:
            s = s + self.context(batch["context"].float())[:, None, :]
        x = torch.cat([s, x], dim=1)  # (B, 1 + T, d_model)
        key_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=ref.device), valid], dim=1)
        key_mask = key_mask[:, None, None, :]  # (B, 1, 1, 1 + T)
        for block in self.blocks:
            x = block(x, key_mask)
        x = self.ln_f(x)
        w = valid.float()[..., None]  # (B, T, 1)
        mean = (x[:, 1:] * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, d_model)
        return F.normalize(self.head(torch.cat([x[:, 0], mean], dim=-1)), dim=-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
