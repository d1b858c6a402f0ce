"""Goal-aware training: the contrastive encoder plus a propensity head trained with BCE on goal labels.

Labels come from the log itself (`embeddings.evaluation.goals.make_labels`): for each cut-off c the encoder
sees the user's history up to c (featurised with as_of=c) and the label says whether the goal
happened in (c, c + horizon]. Cut-offs end at `as_of - horizon`, so no label peeks past as_of.

    loss = multiview InfoNCE(views)  +  bce_weight * BCE(head([encoder(history@c), aggregates]), label)

With `bce_weight` > 0 the BCE term also shapes the encoder. The default is 0: with the served
head fitted on standardised inputs, the BCE term no longer helped
(docs/decisions.md#no-bce-term-in-goal-aware-training). Either way the served head is chosen and fitted on the fixed
embedding (`training.head_fit`: inputs validated on the latest cut-off, logistic regression,
Platt scaling on held-out users). The bundle's encoder is then an `embeddings.model.intent.IntentEncoder`:
its embeddings carry the standardised propensity logit as one more coordinate, so the space
that cohorts, neighbours and serving use is organised by behaviour *and* intent.

Bundle layout: the usual encoder bundle (model.safetensors holds the behaviour encoder) plus
`propensity.safetensors` (head weights) and `propensity.json` (goal, head inputs, calibration,
the intent coordinate's scaling; also in manifest.json["propensity"]).
"""

from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from embeddings.config import Config, TrainerConfig
from embeddings.errors import ConfigError
from embeddings.evaluation.goals import Goal, events_before, latest_cutoff, make_labels
from embeddings.features.featurizer import (
    N_SPECIAL,
    OOV,
    Featurizer,
    SequenceData,
    data_fingerprint,
)
from embeddings.model.bundle import (
    HEAD_FILE,
    PROPENSITY_FORMAT,
    save_bundle,
)
from embeddings.model.encoder import EventEncoder
from embeddings.model.intent import (
    N_INTENT,
    IntentConfig,
    IntentEncoder,
    intent_features,
)
from training.core import Distributed, contrastive_args, fit, post_fit, start
from training.datamodule import SequenceDataModule, ViewCollator, worker_id
from training.head_fit import fit_head
from training.module import ContrastiveModule
from training.sampling import sample_users
from training.train import TrainResult, build_encoder, fit_featurizer

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- labelled data


@dataclass
class LabelledSequences:
    """Histories at each cut-off with their labels; row i of `data` is (user_ids[i], cutoffs[i])."""

    data: SequenceData
    y: np.ndarray  # (n,) float32 0/1
    user_ids: np.ndarray  # (n,) object
    cutoffs: np.ndarray  # (n,) datetime64


def _concat(parts: list[SequenceData]) -> SequenceData:
    offsets, fields, shift = [np.zeros(1, dtype=np.int64)], {k: [] for k in parts[0].fields}, 0
    for p in parts:
        offsets.append(p.offsets[1:] + shift)
        shift += int(p.offsets[-1])
        for k, v in p.fields.items():
            fields[k].append(v)
    return SequenceData(
        np.concatenate([p.user_ids for p in parts]), np.concatenate(offsets),
        {k: np.concatenate(v) for k, v in fields.items()},
    )


def label_cutoffs(events: pl.DataFrame, goal: Goal, as_of: datetime | None, n_cutoffs: int,
                  stride: timedelta | None = None) -> pl.DataFrame:
    """make_labels with the last cut-off at min(as_of, max ts) - horizon (no label peeks past as_of).

    Cut-offs step back by the horizon, so label windows do not overlap, unless the log is too short
    for `n_cutoffs` of them: then they step by span / n_cutoffs and the windows overlap (Complete
    Journey's 6 months at 90 days would otherwise give 2 cut-offs, too few to fit the head on;
    docs/decisions.md#overlapping-label-cut-offs-on-short-logs).
    """
    last = latest_cutoff(events, goal)
    if as_of is not None:
        last = min(last, as_of - goal.horizon)
    if stride is None and n_cutoffs > 1:
        span = last - events.get_column("ts").min()
        if timedelta(0) < span < n_cutoffs * goal.horizon:
            stride = span / n_cutoffs
    return make_labels(events, goal, n_cutoffs=n_cutoffs, stride=stride, last_cutoff=last)


def labelled_sequences(featurizer: Featurizer, events: pl.DataFrame, labels: pl.DataFrame) -> LabelledSequences:
    """Featurise each user's history at each label cut-off (as_of = the cut-off)."""
    parts, ys, cuts = [], [], []
    for (cutoff,), lab in labels.group_by(["cutoff"], maintain_order=True):
        data = featurizer.transform(events_before(events, cutoff), as_of=cutoff)
        y = pl.DataFrame({"user_id": data.user_ids.astype(str)}).join(
            lab.select("user_id", "label"), on="user_id", how="left", maintain_order="left"
        )["label"].fill_null(0).to_numpy()
        parts.append(data)
        ys.append(y.astype(np.float32))
        cuts.append(np.full(len(data), np.datetime64(cutoff, "us")))
    all_data = _concat(parts)
    return LabelledSequences(all_data, np.concatenate(ys), all_data.user_ids, np.concatenate(cuts))


def holdout_mask(user_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Stable per-user split (CRC32 of the id): True for users held out of encoder training (head fit)."""
    h = np.array([zlib.crc32(str(u).encode()) for u in user_ids], dtype=np.int64)
    return (h % 10_000) < int(fraction * 10_000)


# ----------------------------------------------------------------------------- model


class PropensityModule(ContrastiveModule):
    """ContrastiveModule + a Linear propensity head on [embedding, intent_features]; loss = InfoNCE + w * BCE."""

    def __init__(self, encoder: nn.Module, head: nn.Linear, *, goal_event: int | list[int] | None = None,
                 bce_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(encoder, **kwargs)  # type: ignore[arg-type]
        self.save_hyperparameters(ignore=["encoder", "head"])
        self.head = head

    def _step(self, batch: dict, stage: str) -> torch.Tensor:  # type: ignore[override]
        z = self(batch["views"]).float()
        nce = self.contrastive_loss(batch["views"], z, stage)
        if self.hparams.bce_weight <= 0:  # the head is fitted afterwards: no labelled batch to score
            self.log(f"{stage}/loss", nce, prog_bar=True, batch_size=z.shape[0] // self.hparams.views)
            return nce
        bs = batch["y"].shape[0]
        sup = batch["sup"]
        zs = self.encoder(sup).float()
        logits = self.head(torch.cat([zs, intent_features(sup, self.hparams.goal_event)], dim=1)).squeeze(-1)
        bce = F.binary_cross_entropy_with_logits(logits, batch["y"])
        loss = nce + self.hparams.bce_weight * bce
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs)
        self.log(f"{stage}/nce", nce, batch_size=bs)
        self.log(f"{stage}/bce", bce, prog_bar=True, batch_size=bs)
        return loss

    def configure_optimizers(self):  # type: ignore[override]
        conf = super().configure_optimizers()
        opt = conf["optimizer"]
        schedule = conf["lr_scheduler"]["scheduler"].lr_lambdas[0]
        opt.add_param_group({"params": list(self.head.parameters()), "weight_decay": 0.0,
                             "lr": self.hparams.lr})
        conf["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return conf


class _GoalCollator:
    """Contrastive views of the batch's users + a random batch of `n` labelled (user, cut-off) histories.

    With n = 0 (no BCE term) only the views: the labelled batch would be collated and thrown away.
    """

    def __init__(self, views: ViewCollator, labelled: LabelledSequences, rows: np.ndarray, n: int,
                 featurizer: Featurizer, max_len: int, seed: int) -> None:
        self.views, self.labelled, self.rows, self.n = views, labelled, rows, n
        self.featurizer, self.max_len = featurizer, max_len
        self.seed, self.worker = seed, -1
        self.rng = np.random.default_rng(seed + 7)

    def __call__(self, rows: list[int]) -> dict[str, Any]:
        if (wid := worker_id()) != self.worker:  # a DataLoader worker's own stream (see ViewCollator)
            self.worker, self.rng = wid, np.random.default_rng([self.seed + 7, 2, wid])
        if self.n == 0:
            return {"views": self.views(rows)}
        pick = self.rows[self.rng.integers(0, len(self.rows), size=self.n)]
        sup = self.featurizer.collate_users(self.labelled.data, pick, self.max_len)
        return {"views": self.views(rows), "sup": sup, "y": torch.from_numpy(self.labelled.y[pick])}


class GoalDataModule(SequenceDataModule):
    """Every user but those held out for the head (`holdout_mask` at `calib_fraction`) trains; none validates.

    No contrastive validation here: the held-out users' labels are the check that matters. The
    encoder never sees those users at all: contrastive views pull a user's early and late events
    together, so for a user it trained on, the history up to an old cut-off would already
    encode what followed it (docs/decisions.md#propensity-head-fitted-on-users-the-encoder-never-saw).
    The head is fitted and checked on these unseen users only.

    Each batch also holds `n_labelled` labelled histories (rows `labelled_rows` of `labelled`)
    when a BCE term trains the head alongside.
    """

    def __init__(self, data: SequenceData, featurizer: Featurizer, cfg: TrainerConfig, max_len: int, *,
                 calib_fraction: float, labelled: LabelledSequences, labelled_rows: np.ndarray,
                 bce: bool) -> None:
        super().__init__(data, featurizer, cfg, max_len)
        rows = np.sort(np.concatenate([self.train_rows, self.val_rows]))
        self.train_rows = rows[~holdout_mask(data.user_ids[rows], calib_fraction)]
        self.val_rows = np.zeros(0, dtype=np.int64)
        self.labelled, self.labelled_rows = labelled, labelled_rows
        self.n_labelled = self.batch_users if bce else 0

    @property
    def sequences_per_step(self) -> int:
        return self.batch_users * (self.cfg.views + 1)

    def collator(self) -> _GoalCollator:
        views = ViewCollator(self.data, self.featurizer, self.cfg, self.max_len, self.cfg.seed)
        return _GoalCollator(views, self.labelled, self.labelled_rows, self.n_labelled, self.featurizer,
                             self.max_len, self.cfg.seed)


@torch.inference_mode()
def embed_with_features(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, max_len: int,
                        goal_event: int | list[int] | None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, d), intent features (n, N_INTENT)) of every user row of `data`."""
    encoder.eval()
    Z = np.empty((len(data), encoder.dim), dtype=np.float32)
    Fx = np.empty((len(data), N_INTENT), dtype=np.float32)
    order = np.argsort(data.lengths, kind="stable")
    for s in range(0, len(data), batch_size):
        rows = order[s : s + batch_size]
        batch = featurizer.collate_users(data, rows, max_len)
        Z[rows] = encoder(batch).float().numpy()
        Fx[rows] = intent_features(batch, goal_event).numpy()
    return Z, Fx


def goal_event_id(featurizer: Featurizer, goal: Goal) -> int | list[int] | None:
    """The featurizer's id of the goal's event type; a list of ids when the goal has aliases (None
    for 'any event' goals). A type the featurizer never saw maps to OOV."""
    if goal.event_types is None:
        return None
    vocab = featurizer.vocabs_["event"] if featurizer.vocabs_ else []
    ids = [vocab.index(e) + N_SPECIAL if e in vocab else OOV for e in goal.event_types]
    return ids[0] if len(ids) == 1 else sorted(set(ids))


# ----------------------------------------------------------------------------- train


def train_goal_aware(
    cfg: Config,
    events: pl.DataFrame,
    goal: Goal,
    bundle_dir: str | Path,
    as_of: datetime | None = None,
    *,
    bce_weight: float = 0.0,
    intent_weight: float = 0.5,
    n_cutoffs: int = 4,
    stride: timedelta | None = None,
    calib_fraction: float = 0.3,
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train the encoder (+ BCE on goal labels if `bce_weight` > 0), fit the propensity head on
    held-out users, save a goal-aware bundle (embeddings carry intent)."""
    started = start(cfg)
    tc = cfg.trainer
    if intent_weight <= 0:
        raise ConfigError(f"intent_weight must be > 0 (how much intent shapes the embedding), got {intent_weight}.")
    # The propensity needs what RFM knows (how many events, how recent, how much spend): the
    # summary token gets aggregates of the events it sees (per view, so no contrastive shortcut).
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"context": True})})
    as_of = as_of or events.get_column("ts").max()  # the whole log's, not the sample's
    events = sample_users(events, tc.max_users, tc.seed)  # whole users: their labels stay intact
    labels = label_cutoffs(events, goal, as_of, n_cutoffs, stride)
    featurizer = fit_featurizer(cfg, events)
    gid = goal_event_id(featurizer, goal)
    data = featurizer.transform(events, as_of=as_of)
    lab = labelled_sequences(featurizer, events, labels)
    held = holdout_mask(lab.user_ids, calib_fraction)
    train_rows = np.flatnonzero(~held)
    if len(train_rows) == 0 or len(np.unique(lab.y[train_rows])) < 2:
        raise ConfigError(
            f"Goal {goal.describe()!r}: the {len(labels)} labelled (user, cut-off) pairs have only one "
            "class; pick a goal that sometimes happens (and sometimes not) within the horizon."
        )
    encoder = build_encoder(cfg, featurizer, data)
    head = nn.Linear(encoder.dim + N_INTENT, 1)
    rate = float(lab.y[train_rows].mean())
    nn.init.zeros_(head.weight)
    nn.init.constant_(head.bias, float(np.log(rate / (1 - rate))))  # start at the base rate
    log.info("goal-aware training: %s; %d labelled pairs over %d cut-offs (rate %.3f), %d held out",
             goal.describe(), len(lab.y), labels["cutoff"].n_unique(), lab.y.mean(), int(held.sum()))
    dm = GoalDataModule(data, featurizer, tc, cfg.model.max_len,
                        calib_fraction=calib_fraction, labelled=lab, labelled_rows=train_rows, bce=bce_weight > 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is an instance of `nn.Module`.*")
        module = PropensityModule(encoder, head, goal_event=gid, bce_weight=bce_weight, **contrastive_args(tc))
    fitted = fit(cfg, module, dm, started, distributed=distributed)
    metrics, seconds = fitted.metrics, fitted.seconds
    # the category weight stays as built (1 unless a number is set): the propensity head trains on
    # the whole embedding, habit profile included
    done = post_fit(fitted.encoder, featurizer, data, cfg, skip={"category weight"})
    encoder = done.encoder
    metrics.update(done.metrics)

    # The SGD head only shaped the encoder; the served head is chosen and fitted on the fixed embedding.
    hrows = np.flatnonzero(held)  # only the users the encoder never saw are needed
    Z, Fx = embed_with_features(encoder, featurizer, lab.data.subset(hrows), cfg.model.max_len, gid)
    head_fit = fit_head(Z, Fx, lab.y[hrows], lab.cutoffs[hrows], np.ones(len(hrows), dtype=bool), seed=tc.seed,
                   n_profile=encoder.cfg.n_profile, groups=lab.user_ids[hrows])
    final = nn.Linear(encoder.dim + N_INTENT, 1)
    with torch.no_grad():
        final.weight.copy_(torch.from_numpy(head_fit.weight.astype(np.float32))[None, :])
        final.bias.fill_(head_fit.bias)
    Zu, Fu = embed_with_features(encoder, featurizer, data, cfg.model.max_len, gid)
    logit = head_fit.a * (np.hstack([Zu, Fu]).astype(np.float64) @ head_fit.weight + head_fit.bias) + head_fit.b
    intent = IntentConfig(weight=intent_weight, a=head_fit.a, b=head_fit.b, mean=float(logit.mean()),
                          std=max(float(logit.std()), 1e-6), goal_event=gid,
                          recent_days=goal.horizon / timedelta(days=1) if goal.kind == "event" else None,
                          goal_name=goal.event)
    metrics.update({f"calib_{k}": float(v) for k, v in head_fit.calibration.items() if k in ("auc", "brier")})
    meta = {
        "format": PROPENSITY_FORMAT,
        "goal": {"event": goal.event, "aliases": list(goal.aliases), "kind": goal.kind,
                 "horizon_days": goal.horizon / timedelta(days=1), "text": goal.describe()},
        "head": {"type": "linear", "inputs": head_fit.inputs, "in_dim": encoder.dim + N_INTENT, "file": HEAD_FILE,
                 "validation_auc_latest_cutoff": head_fit.validation_auc},
        "calibration": head_fit.calibration,
        "embedding": intent.to_dict(),
        "bce_weight": bce_weight,
        "cutoffs": sorted(str(c) for c in labels["cutoff"].unique().to_list()),
        "n_labels": int(len(lab.y)),
        "label_rate": float(lab.y.mean()),
        "metrics": {k: metrics[k] for k in ("calib_auc", "calib_brier") if k in metrics},
    }
    bundle = save_bundle(
        bundle_dir, IntentEncoder(encoder, final, intent), featurizer, data_fingerprint=data_fingerprint(events),
        metrics=metrics, extra={"n_users": len(data), "trainer": tc.model_dump(), **done.extra}, propensity=meta,
    )
    log.info("goal-aware bundle %s saved to %s (%.1fs; head %s, calibration AUC %s)", bundle.version,
             bundle_dir, seconds, head_fit.inputs, metrics.get("calib_auc"))
    return TrainResult(bundle, Path(bundle_dir), metrics, seconds, fitted.sequences_per_s)
